"""An instance's files: list, upload, download and delete under its storage root, and
nowhere else.

A path is a list of names checked one by one (no `..`, no `.`, no empty name, no
dotfile, so the private `.private` area is out of reach too), and the tree is
walked from an open descriptor of the root, one directory at a time with
O_NOFOLLOW: a symbolic link anywhere on the way is refused, never followed.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import secrets
import stat
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from dfe.host.problems import Problem

DIR_MODE = 0o750
FILE_MODE = 0o640
MAX_NAME_BYTES = 255
MAX_PATH_CHARS = 1024
CHUNK = 64 * 1024
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def split_path(path: str) -> list[str]:
    """The names of a relative path; Problem(400) for anything that could leave the root."""
    if len(path) > MAX_PATH_CHARS:
        raise Problem(400, "invalid_path", f"a path has at most {MAX_PATH_CHARS} characters")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise Problem(400, "invalid_path", "paths are relative, with '/' between names")
    names = path.split("/") if path else []
    if names and names[-1] == "":
        names.pop()  # a trailing slash names the same directory
    for name in names:
        if name in ("", ".", ".."):
            raise Problem(400, "invalid_path", "a path may not contain '.', '..' or '//'")
        if name.startswith("."):
            raise Problem(400, "invalid_path", "names starting with '.' are not served")
        if len(name.encode()) > MAX_NAME_BYTES or any(ord(c) < 32 for c in name):
            raise Problem(400, "invalid_path", "a name is too long or holds control characters")
    return names


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "file" or "directory"
    size: int
    modified_at: datetime

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "size": self.size,
            "modified_at": self.modified_at.isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class Download:
    # A file object, not a bare descriptor: if the download is abandoned before it
    # starts (the client went away), collecting the object still closes the file.
    file: BinaryIO
    size: int
    media_type: str

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes; the file is closed at the end."""
        with self.file:
            while chunk := self.file.read(CHUNK):
                yield chunk


class InstanceFiles:
    def __init__(self, root: str, max_upload_bytes: int) -> None:
        self.root = root
        self.max_upload_bytes = max_upload_bytes

    # -- walking --------------------------------------------------------------------------------

    def _open_root(self) -> int:
        try:
            return os.open(self.root, _OPEN_DIR)
        except FileNotFoundError:
            raise Problem(
                503, "storage_unavailable", "the instance's storage is not available here"
            ) from None
        except OSError as error:
            raise _refusal(error, "the storage root") from None

    @contextmanager
    def _directory(self, names: list[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of root/names, opened without following any link."""
        fds = [self._open_root()]
        try:
            for name in names:
                if create:
                    try:
                        os.mkdir(name, DIR_MODE, dir_fd=fds[-1])
                    except FileExistsError:
                        pass
                    except OSError as error:
                        raise _refusal(error, name) from None
                try:
                    fds.append(os.open(name, _OPEN_DIR, dir_fd=fds[-1]))
                except OSError as error:
                    # O_DIRECTORY answers ENOTDIR for a link: say what it is.
                    is_link = _kind(fds[-1], name) == "link"
                    cause = OSError(errno.ELOOP, "a symbolic link") if is_link else error
                    raise _refusal(cause, name) from None
            yield fds[-1]
        finally:
            for fd in fds:
                os.close(fd)

    # -- operations -----------------------------------------------------------------------------

    def read(self, path: str) -> list[Entry] | Download:
        """A directory's entries, or a file to download."""
        names = split_path(path)
        if not names:
            with self._directory([]) as fd:
                return _entries(fd)
        with self._directory(names[:-1]) as parent:
            try:
                fd = os.open(names[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
            except OSError as error:
                raise _refusal(error, names[-1]) from None
        handed_over = False
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                return _entries(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Problem(403, "forbidden_path", f"{names[-1]!r} is not a regular file")
            os.set_blocking(fd, True)
            handed_over = True  # the Download closes it
        finally:
            if not handed_over:
                os.close(fd)
        media_type = mimetypes.guess_type(names[-1])[0] or "application/octet-stream"
        return Download(os.fdopen(fd, "rb", buffering=0), info.st_size, media_type)

    async def write(self, path: str, body: AsyncIterator[bytes]) -> bool:
        """Store the body at `path` (directories made as needed), atomically; whether the
        file is new. Problem(413) past the upload limit, and nothing is left behind."""
        names = split_path(path)
        if not names:
            raise Problem(400, "invalid_path", "name the file to write")
        with self._directory(names[:-1], create=True) as parent:
            existed = _kind(parent, names[-1])
            if existed == "directory":
                raise Problem(409, "conflict", f"{names[-1]!r} is a directory")
            temporary = f".upload-{secrets.token_hex(8)}"
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                FILE_MODE,
                dir_fd=parent,
            )
            written = 0
            try:
                try:
                    async for chunk in body:
                        written += len(chunk)
                        if written > self.max_upload_bytes:
                            raise Problem(
                                413,
                                "body_too_large",
                                f"a file may have at most {self.max_upload_bytes} bytes",
                            )
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temporary, names[-1], src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=parent)
                raise
        return existed is None

    def delete(self, path: str) -> None:
        """Remove a file (or an empty directory)."""
        names = split_path(path)
        if not names:
            raise Problem(400, "invalid_path", "the storage root cannot be deleted")
        with self._directory(names[:-1]) as parent:
            kind = _kind(parent, names[-1])
            if kind is None:
                raise Problem(404, "not_found", f"no file {names[-1]!r}")
            try:
                if kind == "directory":
                    os.rmdir(names[-1], dir_fd=parent)
                else:
                    os.unlink(names[-1], dir_fd=parent)  # a link is removed, not followed
            except OSError as error:
                if error.errno == errno.ENOTEMPTY:
                    raise Problem(
                        409, "conflict", f"directory {names[-1]!r} is not empty"
                    ) from None
                raise _refusal(error, names[-1]) from None


def _kind(parent: int, name: str) -> str | None:
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(mode):
        return "directory"
    return "link" if stat.S_ISLNK(mode) else "file"


def _entries(fd: int) -> list[Entry]:
    """What a directory holds: files and directories, not dotfiles, not links."""
    entries = []
    with os.scandir(fd) as listing:
        for item in listing:
            if item.name.startswith(".") or item.is_symlink():
                continue
            info = item.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                kind, size = "directory", 0
            elif stat.S_ISREG(info.st_mode):
                kind, size = "file", info.st_size
            else:
                continue
            modified = datetime.fromtimestamp(info.st_mtime, UTC)
            entries.append(Entry(item.name, kind, size, modified))
    return sorted(entries, key=lambda entry: entry.name)


def _refusal(error: OSError, name: str) -> Problem:
    if isinstance(error, FileNotFoundError):
        return Problem(404, "not_found", f"no file or directory {name!r}")
    if error.errno in (errno.ELOOP, errno.EMLINK):
        return Problem(403, "forbidden_path", f"{name!r} is a symbolic link: not followed")
    if error.errno == errno.ENOTDIR:
        return Problem(409, "conflict", f"{name!r} is not a directory")
    if error.errno == errno.EEXIST:
        return Problem(409, "conflict", f"{name!r} exists and is not a directory")
    return Problem(500, "storage_error", f"{name!r}: {error.strerror or 'cannot be used'}")
