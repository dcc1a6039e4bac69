"""The snapshot archive: one uncompressed tar, written and read in one pass.

    schema.json          the tables, engine-neutral (see format.py)
    tables/0001.jsonl    each table's canonical rows, in primary-key order
    files/<path>         the instance's files
    manifest.json        format and version, instance, source engine, time, each
                         table's rows and checksum, each file's size and SHA-256

The manifest comes last because its checksums are known only once everything is
written; a table's rows go straight into the archive, their member's header being
rewritten once their size is known. Reading is the reverse and trusts nothing:
every entry is checked (a regular file with a plain relative name in one of the
places above; no links, no `..`, no absolute path) and hashed, files are copied
to a fresh staging directory, tables' rows are counted and summed where they are
(and read from the archive again to be loaded); only when the manifest's version,
every row count and every checksum match does `apply_staged` change the instance:
it parses the rows (or the server does) as it loads them, and its read-back proves
the loaded tables equal to the manifest before anything is committed. Without compression,
the staged copy is never larger than the archive itself.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, cast

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dfe.provisioning.drivers.base import describe
from dfe.snapshots import FORMAT_VERSION
from dfe.snapshots.dump import (
    TableSum,
    begin_ddl,
    create_indexes,
    describe_database,
    discard,
    dump_table,
    engine_kind,
    load_table,
    prepare_schema,
    read_back,
    swap_in,
)
from dfe.snapshots.errors import SnapshotError
from dfe.snapshots.format import check_schema

FORMAT_NAME = "dfe-snapshot"
MANIFEST = "manifest.json"
SCHEMA = "schema.json"
SUFFIX = ".dfe.tar"
CHUNK = 1 << 20
MAX_DOCUMENT = 64 << 20  # manifest.json and schema.json are read whole: bounded
_TABLE_MEMBER = re.compile(r"tables/[0-9]{4,6}\.jsonl")
FILE_MODE = 0o640
DIR_MODE = 0o750

Progress = Callable[[str, int], None]
_T = TypeVar("_T")


def _no_progress(_step: str, _percent: int) -> None:
    return None


class _HashingReader:
    """A read-only stream that hashes what is read from it."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


@dataclass
class WrittenSnapshot:
    path: Path
    size: int
    sha256: str
    manifest: dict[str, Any]


def _info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = FILE_MODE
    info.mtime = int(mtime)
    info.type = tarfile.REGTYPE
    return info


def _whole_lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """Blocks of bytes again, cut after their last newline (what follows goes with the next
    block); a last piece without its newline comes as it is (the loader refuses it)."""
    pending: list[bytes] = []
    for block in blocks:
        end = block.rfind(b"\n") + 1
        if end:
            yield b"".join([*pending, block[:end]])
            pending = [block[end:]]
        else:
            pending.append(block)  # a row longer than a block
    if any(pending):
        yield b"".join(pending)


def _open_new(path: Path, *, read_too: bool = False) -> IO[bytes]:
    access = os.O_RDWR if read_too else os.O_WRONLY
    fd = os.open(path, access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    return os.fdopen(fd, "w+b" if read_too else "wb")


def instance_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(archive path below files/, absolute path) of every regular file under `root`;
    links are skipped, never followed."""
    if not root.is_dir():
        return
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file():
                continue
            yield path.relative_to(root).as_posix(), path


def write_snapshot(
    destination: Path,
    *,
    instance_name: str,
    engine: Engine,
    files_root: Path | None,
    progress: Progress = _no_progress,
) -> WrittenSnapshot:
    """Write the archive of an instance to `destination` (a new file; a partial one is
    removed on failure).

    The archive's SHA-256 is taken by a thread behind the writer: the tables' part as
    soon as it is final (their headers rewritten), while the files are written; the
    rest while the file is synced to disk."""
    partial = destination.with_name(destination.name + ".part")
    now = time.time()
    try:
        with (
            _open_new(partial, read_too=True) as raw,
            ThreadPoolExecutor(1) as sum_pool,
            ThreadPoolExecutor(1) as sync_pool,
        ):
            archive_sum = _TrailingSum(raw.fileno(), sum_pool)
            with tarfile.TarFile(
                fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK
            ) as tar:

                def tables_written() -> None:
                    raw.flush()  # the tables' part is final: hashed while the files are written
                    archive_sum.upto(tar.offset)

                manifest = _write_members(
                    tar, instance_name, engine, files_root, now, progress, tables_written
                )
                document = json.dumps(manifest, indent=1, sort_keys=True).encode()
                tar.addfile(_info(MANIFEST, len(document), now), _BytesReader(document))
            raw.flush()
            size = raw.tell()
            # The disk write (I/O wait) and the rest of the hash (CPU) at the same time.
            synced = sync_pool.submit(os.fsync, raw.fileno())
            archive_sum.upto(size)
            digest = archive_sum.hexdigest()
            synced.result()
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return WrittenSnapshot(destination, size, digest, manifest)


class _TrailingSum:
    """The SHA-256 of a file being written, taken in a thread (`pool`, of one worker) behind
    the writer: `upto(end)` hands it the bytes before `end`, final by then."""

    def __init__(self, fd: int, pool: ThreadPoolExecutor) -> None:
        self.fd, self.pool = fd, pool
        self.digest = hashlib.sha256()
        self.done = 0
        self.pending: list[Future[None]] = []

    def upto(self, end: int) -> None:
        self.pending.append(self.pool.submit(self._sum, self.done, end))
        self.done = end

    def _sum(self, start: int, end: int) -> None:
        while start < end:
            block = os.pread(self.fd, min(CHUNK, end - start), start)
            if not block:
                raise SnapshotError("the archive is shorter than written")
            self.digest.update(block)
            start += len(block)

    def hexdigest(self) -> str:
        for summed in self.pending:
            summed.result()
        return self.digest.hexdigest()


def _add_written(
    tar: tarfile.TarFile, name: str, mtime: float, write: Callable[[IO[bytes]], _T]
) -> _T:
    """A member whose data `write` writes straight into the archive (a seekable file): its
    size is known only then, so its header is written first with size 0 and rewritten after.
    The size also goes in a PAX record of fixed width, so the header keeps its length
    (and members over 8 GiB, beyond the plain header's field, are carried)."""
    info = _info(name, 0, mtime)
    info.pax_headers = {"size": f"{0:020d}"}
    start = tar.offset
    header = info.tobuf(tar.format, tar.encoding, tar.errors)
    out = cast("IO[bytes]", tar.fileobj)
    out.write(header)
    result = write(out)
    size = out.tell() - start - len(header)
    info.size = size
    info.pax_headers = {"size": f"{size:020d}"}
    patched = info.tobuf(tar.format, tar.encoding, tar.errors)
    if len(patched) != len(header):
        raise SnapshotError(f"{name}: too large for the archive")
    out.seek(start)
    out.write(patched)
    out.seek(0, os.SEEK_END)
    padding = -size % tarfile.BLOCKSIZE
    out.write(tarfile.NUL * padding)
    tar.offset = start + len(header) + size + padding
    return result


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.offset + size
        chunk = bytes(self.data[self.offset : end])
        self.offset += len(chunk)
        return chunk


def _write_members(
    tar: tarfile.TarFile,
    instance_name: str,
    engine: Engine,
    files_root: Path | None,
    now: float,
    progress: Progress,
    tables_written: Callable[[], None],
) -> dict[str, Any]:
    tables_manifest: list[dict[str, Any]] = []
    try:
        with engine.connect() as connection:
            if engine_kind(engine) in ("postgresql", "mysql"):
                # One consistent picture of every table, whatever is written meanwhile.
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            tables = describe_database(connection)
            schema = json.dumps(tables, sort_keys=True).encode()
            tar.addfile(_info(SCHEMA, len(schema), now), _BytesReader(schema))
            for index, description in enumerate(tables, start=1):
                progress(f"table {description['name']}", 10 + 60 * index // (len(tables) + 1))
                member = f"tables/{index:04d}.jsonl"
                dump = functools.partial(dump_table, connection, description)
                try:
                    summed = _add_written(tar, member, now, dump)
                except (ValueError, TypeError) as error:  # a stored value its type cannot read
                    raise SnapshotError(
                        f"cannot export table {description['name']!r}: a value in it does"
                        f" not read as its column's type ({type(error).__name__})"
                    ) from None
                tables_manifest.append(
                    {
                        "name": description["name"],
                        "member": member,
                        "rows": summed.rows,
                        "sha256": summed.sha256,
                    }
                )
    except SQLAlchemyError as error:
        raise SnapshotError(f"cannot read the instance database: {describe(error)}") from None
    tables_written()
    progress("files", 75)
    files_manifest = []
    for relative, path in instance_files(files_root) if files_root else ():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # removed (or replaced by a link) since the walk
        with os.fdopen(fd, "rb") as source:
            status = os.fstat(source.fileno())
            reader = _HashingReader(source)
            tar.addfile(_info(f"files/{relative}", status.st_size, status.st_mtime), reader)
        files_manifest.append(
            {"path": relative, "size": status.st_size, "sha256": reader.digest.hexdigest()}
        )
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "instance": instance_name,
        "source_engine": engine_kind(engine),
        "created_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
        "schema_sha256": hashlib.sha256(schema).hexdigest(),
        "tables": tables_manifest,
        "files": files_manifest,
    }


# Reading


@dataclass
class StagedSnapshot:
    """An archive verified (and its files copied to `directory`); nothing applied yet.

    A table's rows are read again from the archive file itself when they are loaded
    (`archive`, an open file of its own, and where each table's rows start and end), so
    they are not copied; the load's read-back proves what was loaded equal to the
    manifest all the same. From a stream that is not a file, they are copied too."""

    directory: Path
    manifest: dict[str, Any]
    tables: list[dict[str, Any]]
    archive: IO[bytes] | None = None
    members: dict[str, tuple[int, int]] = field(default_factory=dict)

    def table_chunks(self, member: str) -> Iterator[bytes]:
        """The member's lines, about CHUNK bytes of whole lines at a time."""
        if self.archive is None or member not in self.members:
            with open(self.directory / member, "rb") as source:
                yield from _whole_lines(iter(lambda: source.read(CHUNK), b""))
            return
        # From the archive: each read starts where the last whole line ended.
        offset, size = self.members[member]
        end = offset + size
        want = CHUNK
        while offset < end:
            block = os.pread(self.archive.fileno(), min(want, end - offset), offset)
            if not block:
                raise SnapshotError(f"{member}: the archive changed since it was verified")
            cut = len(block) if offset + len(block) == end else block.rfind(b"\n") + 1
            if not cut:
                want *= 2  # a row longer than the block: read more at once
                continue
            want = CHUNK
            yield block if cut == len(block) else block[:cut]
            offset += cut

    @property
    def files_directory(self) -> Path:
        return self.directory / "files"

    def remove(self) -> None:
        if self.archive is not None:
            self.archive.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _member_name(member: tarfile.TarInfo) -> str | None:
    """The entry's name if it is one a snapshot may hold; None for a directory entry;
    SnapshotError for anything else."""
    name = member.name
    shown = name[:120]
    if member.issym() or member.islnk():
        raise SnapshotError(f"the archive holds a link ({shown!r}): refused")
    if not (member.isreg() or member.isdir()):
        raise SnapshotError(f"the archive holds a special file ({shown!r}): refused")
    if name.startswith("/") or "\\" in name or "\0" in name or re.match(r"^[A-Za-z]:", name):
        raise SnapshotError(f"the archive holds an absolute path ({shown!r}): refused")
    parts = name.rstrip("/").split("/") if member.isdir() else name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise SnapshotError(f"the archive holds a path that leaves its folder ({shown!r}): refused")
    if member.isdir():
        if parts[0] not in ("tables", "files"):
            raise SnapshotError(f"the archive holds an unexpected entry ({shown!r}): refused")
        return None
    if name in (MANIFEST, SCHEMA) or _TABLE_MEMBER.fullmatch(name):
        return name
    if parts[0] == "files" and len(parts) > 1:
        return name
    raise SnapshotError(f"the archive holds an unexpected entry ({shown!r}): refused")


def stage_snapshot(source: IO[bytes], staging: Path) -> StagedSnapshot:
    """Read an archive into `staging` (a directory that must not exist) and verify it
    against its manifest. Raises SnapshotError, and leaves nothing behind, unless every
    check passes."""
    staging.mkdir(mode=DIR_MODE)
    try:
        return _stage(source, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _regular_file(source: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def _stage(source: IO[bytes], staging: Path) -> StagedSnapshot:
    seen: dict[str, dict[str, Any]] = {}
    documents: dict[str, bytes] = {}
    schema: list[dict[str, Any]] | None = None
    # From a file, tarfile reads the headers only and each member is read where it is
    # (os.pread); tables are not copied, where they are is noted (see StagedSnapshot).
    # Any other stream is read through, every member copied.
    in_file = _regular_file(source)
    members: dict[str, tuple[int, int]] = {}
    # From a file, each table is summed in a thread of its own while the files are copied
    # (hashing and file I/O release the GIL: the two run on two cores).
    summing: dict[str, Future[dict[str, Any]]] = {}
    try:
        with (
            ThreadPoolExecutor(1) as pool,
            tarfile.open(fileobj=source, mode="r:" if in_file else "r|") as tar,
        ):
            for member in tar:
                name = _member_name(member)
                if name is None:
                    continue
                if name in seen or name in summing or name in documents:
                    raise SnapshotError(f"the archive holds {name[:120]!r} twice: refused")
                if member.size > (MAX_DOCUMENT if name in (MANIFEST, SCHEMA) else 1 << 62):
                    raise SnapshotError(f"{name} is too large")
                data = (
                    _MemberReader(source.fileno(), member.offset_data, member.size)
                    if in_file
                    else tar.extractfile(member)
                )
                if data is None:
                    raise SnapshotError(f"cannot read {name[:120]!r} from the archive")
                if name in (MANIFEST, SCHEMA):
                    documents[name] = data.read()
                    if name == SCHEMA:
                        schema = check_schema(_json(documents[name], SCHEMA))
                    continue
                if name.startswith("tables/"):
                    if schema is None:
                        raise SnapshotError("the archive's tables come before its schema: refused")
                    _table_index(name, schema)
                    members[name] = (member.offset_data, member.size)
                    if in_file:
                        summing[name] = pool.submit(_stage_table, data, None, name)
                    else:
                        seen[name] = _stage_table(data, staging / name, name)
                else:
                    seen[name] = _stage_file(data, staging / name)
            seen.update((name, summed.result()) for name, summed in summing.items())
    except tarfile.TarError as error:
        raise SnapshotError(
            f"not a readable snapshot archive (truncated or corrupt: {error})"
        ) from None
    except EOFError:
        raise SnapshotError("the archive is truncated") from None
    staged = _verify(staging, documents, schema, seen)
    if in_file:
        staged.archive = os.fdopen(os.dup(source.fileno()), "rb")
        staged.members = members
    return staged


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _MemberReader:
    """A member's data, read from the archive file where it is."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.fd, self.offset, self.end = fd, offset, offset + size

    def read(self, size: int = -1) -> bytes:
        wanted = self.end - self.offset if size < 0 else min(size, self.end - self.offset)
        parts = []
        while wanted > 0:
            data = os.pread(self.fd, wanted, self.offset)
            if not data:
                raise EOFError  # the file ends before the member does
            parts.append(data)
            self.offset += len(data)
            wanted -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise SnapshotError(f"{name} is not valid JSON") from None


def _write_staged(path: Path) -> IO[bytes]:
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return _open_new(path)


def _table_index(name: str, schema: list[dict[str, Any]]) -> int:
    index = int(name.removeprefix("tables/").removesuffix(".jsonl"))
    if not 1 <= index <= len(schema):
        raise SnapshotError(f"{name}: no such table in the schema")
    return index


def _stage_table(data: _Readable, path: Path | None, name: str) -> dict[str, Any]:
    """Count and sum a table's rows; copy them to `path` if given.

    The rows are not parsed here: their checksum is the manifest's, and the load parses
    each row (or hands it to the server), in a transaction (on MySQL, into tables beside
    the instance's) whose read-back must give these very lines again before anything of
    the instance changes. A row that is not what it should be fails the load there."""
    digest = hashlib.sha256()
    rows = 0
    last = b"\n"
    with _write_staged(path) if path else contextlib.nullcontext() as out:
        while block := data.read(CHUNK):
            digest.update(block)
            rows += block.count(b"\n")
            last = block[-1:]
            if out is not None:
                out.write(block)
    if last != b"\n":
        raise SnapshotError(f"{name}: the last row is cut short")
    return {"rows": rows, "sha256": digest.hexdigest()}


def _stage_file(data: _Readable, path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with _write_staged(path) as out:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def _verify(
    staging: Path,
    documents: dict[str, bytes],
    schema: list[dict[str, Any]] | None,
    seen: dict[str, dict[str, Any]],
) -> StagedSnapshot:
    if MANIFEST not in documents:
        raise SnapshotError("the archive has no manifest.json: not a snapshot, or cut short")
    manifest = _json(documents[MANIFEST], MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise SnapshotError("manifest.json does not describe a DFE snapshot")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"snapshot format version {str(version)[:20]!r} is not supported"
            f" (this version reads {FORMAT_VERSION})"
        )
    if schema is None or SCHEMA not in documents:
        raise SnapshotError("the archive has no schema.json")
    if hashlib.sha256(documents[SCHEMA]).hexdigest() != manifest.get("schema_sha256"):
        raise SnapshotError("schema.json does not match the manifest's checksum")
    tables = manifest.get("tables")
    files = manifest.get("files")
    if not isinstance(tables, list) or not isinstance(files, list):
        raise SnapshotError("manifest.json lists no tables or files")
    if [t.get("name") if isinstance(t, dict) else None for t in tables] != [
        t["name"] for t in schema
    ]:
        raise SnapshotError("the manifest's tables are not the schema's")
    expected: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(tables, start=1):
        member = f"tables/{index:04d}.jsonl"
        if entry.get("member") != member:
            raise SnapshotError(f"the manifest names an unexpected member for {entry['name']!r}")
        expected[member] = {"rows": entry.get("rows"), "sha256": entry.get("sha256")}
    for entry in files:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str):
            raise SnapshotError("the manifest lists a file without a path")
        expected[f"files/{path}"] = {"size": entry.get("size"), "sha256": entry.get("sha256")}
    for member in sorted(set(expected) | set(seen)):
        if member not in seen:
            raise SnapshotError(f"{member[:120]} is missing from the archive")
        if member not in expected:
            raise SnapshotError(f"{member[:120]} is in the archive but not in its manifest")
        if seen[member] != expected[member]:
            what = "row count or checksum" if member.startswith("tables/") else "size or checksum"
            raise SnapshotError(f"{member[:120]}: its {what} does not match the manifest")
    return StagedSnapshot(staging, manifest, schema)


# Applying


def apply_staged(
    staged: StagedSnapshot,
    engine: Engine,
    files_root: Path | None,
    progress: Progress = _no_progress,
) -> None:
    """Replace the instance's tables and files with the staged snapshot's, then check the
    loaded tables against the manifest."""
    tables = staged.tables
    try:
        with engine.begin() as connection:
            begin_ddl(connection)
            progress("schema", 30)
            loading = prepare_schema(connection, tables)
            try:
                for index, (description, entry) in enumerate(
                    zip(tables, staged.manifest["tables"], strict=True), start=1
                ):
                    progress(f"table {description['name']}", 30 + 50 * index // (len(tables) + 1))
                    load_table(
                        connection,
                        loading.tables[description["name"]],
                        description,
                        staged.table_chunks(entry["member"]),
                    )
                create_indexes(connection, loading.tables)
                progress("verify", 85)
                # Read back before the commit (or, on MySQL, the swap): a difference
                # leaves the instance's tables as they were.
                _compare_sums(read_back(connection, loading, tables), staged.manifest["tables"])
                swap_in(connection, loading)
            except BaseException:
                discard(connection, loading)
                raise
    except SQLAlchemyError as error:
        raise SnapshotError(f"cannot load the snapshot's rows: {describe(error)}") from None
    if files_root is not None:
        progress("files", 90)
        replace_files(files_root, staged.files_directory)


def _compare_sums(sums: dict[str, TableSum], expected: list[dict[str, Any]]) -> None:
    """The tables as read back must hold the manifest's counts and checksums."""
    for entry in expected:
        found = sums.get(entry["name"])
        if found is None or (found.rows, found.sha256) != (entry["rows"], entry["sha256"]):
            raise SnapshotError(
                f"table {entry['name']!r} does not read back as the snapshot holds it"
                f" ({found.rows if found else 0} rows, expected {entry['rows']})"
            )


def replace_files(root: Path, staged_files: Path) -> None:
    """Empty the instance's directory (links are removed, never followed), then move the
    staged files in."""
    root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    if not staged_files.is_dir():
        return
    with os.scandir(staged_files) as entries:
        for entry in entries:
            shutil.move(entry.path, root / entry.name)


def manifest_sums(manifest: dict[str, Any]) -> dict[str, TableSum]:
    return {t["name"]: TableSum(t["rows"], t["sha256"]) for t in manifest["tables"]}
