"""The `local` mount driver: each instance's directory tree under a web server's mount.

The layout is the original's (dfe-storage), with H = sha256(owner's storage key):

    <root>/<zone>/<H[0:2]>/<H>/                  owner root
    <root>/<zone>/<H[0:2]>/<H>/.private/snapshots owner-private area
    <owner root>/<instance>/                      instance root
    <owner root>/<instance>/.private/{.cache,config,scripts,logs,packages}

Nothing here may leave the mount root: names must be DNS labels, and the tree
is walked one directory at a time with O_NOFOLLOW from an open descriptor of the
root, so a symbolic link planted anywhere in it is refused, never followed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dfe.provisioning.errors import StorageError

DEFAULT_ZONE = "local"
_Tree = dict[str, "_Tree"]
DIR_MODE = 0o750
PRIVATE = ".private"
INSTANCE_PRIVATE_DIRS = (".cache", "config", "scripts", "logs", "packages")
OWNER_PRIVATE_DIRS = ("snapshots",)

_LABEL = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SHARD = re.compile(r"[0-9a-f]{2}")
_HASH = re.compile(r"[0-9a-f]{64}")
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def validate_label(name: str, what: str = "instance name") -> str:
    """Return `name` if it is a lower-case DNS label starting with a letter; else ValueError."""
    if not isinstance(name, str) or not _LABEL.fullmatch(name):
        raise ValueError(
            f"invalid {what} {name!r}: must be a DNS label (a-z, 0-9, '-'; starts with a letter)"
        )
    return name


def owner_hash(owner_storage_key: str) -> str:
    """H: the owner's directory name, so that no owner key appears on disk."""
    if not isinstance(owner_storage_key, str) or not owner_storage_key:
        raise ValueError("an owner storage key must be a non-empty string")
    return hashlib.sha256(owner_storage_key.encode()).hexdigest()


@dataclass(frozen=True)
class InstancePaths:
    """Where an instance's files live (absolute paths; computing them touches nothing)."""

    owner_root: Path
    owner_private: Path
    snapshots: Path
    instance_root: Path
    private: Path
    cache: Path
    config: Path
    scripts: Path
    logs: Path
    packages: Path


class LocalStorage:
    def __init__(self, root_path: str | os.PathLike[str], zone: str = DEFAULT_ZONE) -> None:
        # The root itself may be a link (a mount point elsewhere): resolve it once, here.
        self.root = Path(os.path.realpath(root_path))
        self.zone = validate_label(zone, "zone")

    # -- layout --------------------------------------------------------------------------------

    def _owner_parts(self, digest: str) -> tuple[str, ...]:
        if not _HASH.fullmatch(digest):
            raise StorageError("not an owner hash")
        return (self.zone, digest[:2], digest)

    def paths(self, owner_storage_key: str, instance_name: str) -> InstancePaths:
        validate_label(instance_name)
        owner_root = self.root.joinpath(*self._owner_parts(owner_hash(owner_storage_key)))
        instance_root = owner_root / instance_name
        private = instance_root / PRIVATE
        paths = InstancePaths(
            owner_root=owner_root,
            owner_private=owner_root / PRIVATE,
            snapshots=owner_root / PRIVATE / "snapshots",
            instance_root=instance_root,
            private=private,
            cache=private / ".cache",
            config=private / "config",
            scripts=private / "scripts",
            logs=private / "logs",
            packages=private / "packages",
        )
        self._assert_inside(paths.instance_root)
        return paths

    @staticmethod
    def _tree_under_owner(instance_name: str) -> _Tree:
        """The directories made under the owner root, as nested names."""
        return {
            PRIVATE: {name: {} for name in OWNER_PRIVATE_DIRS},
            instance_name: {PRIVATE: {name: {} for name in INSTANCE_PRIVATE_DIRS}},
        }

    def _assert_inside(self, path: Path) -> None:
        """The lexical check (the descriptor walk below is what stops links)."""
        resolved = os.path.normpath(path)
        if os.path.commonpath([resolved, self.root]) != str(self.root) or resolved == str(
            self.root
        ):
            raise StorageError(f"storage path {path} is outside the mount root {self.root}")

    # -- walking the tree without following links ----------------------------------------------

    def _open_root(self) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise StorageError(f"mount root {self.root}: {exc.strerror}") from None

    def _open_child(self, parent_fd: int, name: str, where: Path, *, create: bool) -> int | None:
        """Open directory `name` under `parent_fd`, never through a link; None if it is missing."""
        created = False
        if create:
            try:
                os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
                created = True
            except FileExistsError:
                pass
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=parent_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise StorageError(
                    f"refusing {where / name}: it is a symbolic link or not a directory"
                ) from None
            raise StorageError(f"cannot open {where / name}: {exc.strerror}") from None
        if created:
            os.fchmod(fd, DIR_MODE)  # mkdir's mode is cut by the umask
        return fd

    def _make_tree(self, parent_fd: int, where: Path, tree: _Tree) -> None:
        """Make `tree` under `parent_fd`, each directory opened once (as `_walk` would)."""
        for name, children in tree.items():
            fd = self._open_child(parent_fd, name, where, create=True)
            assert fd is not None  # made if missing
            try:
                self._make_tree(fd, where / name, children)
            finally:
                os.close(fd)

    @contextmanager
    def _walk(self, parts: tuple[str, ...], *, create: bool) -> Iterator[int | None]:
        """A descriptor of root/parts, opened one component at a time; None if one is missing."""
        fds: list[int] = []
        try:
            fds.append(self._open_root())
            where = self.root
            for name in parts:
                child = self._open_child(fds[-1], name, where, create=create)
                if child is None:
                    yield None
                    return
                fds.append(child)
                where = where / name
            yield fds[-1]
        finally:
            for fd in fds:
                os.close(fd)

    # -- operations ----------------------------------------------------------------------------

    def create_instance_tree(self, owner_storage_key: str, instance_name: str) -> InstancePaths:
        """Create the owner's and the instance's directories (mode 0750); what exists is kept."""
        paths = self.paths(owner_storage_key, instance_name)
        try:
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the mount root {self.root}: {exc.strerror}"
            ) from None
        owner = self._owner_parts(owner_hash(owner_storage_key))
        with self._walk(owner, create=True) as owner_fd:
            assert owner_fd is not None  # made if missing
            self._make_tree(owner_fd, paths.owner_root, self._tree_under_owner(instance_name))
        return paths

    def snapshot_dir(self, owner_storage_key: str) -> Path:
        """The owner's snapshot directory (<owner root>/.private/snapshots), made if missing."""
        parts = (*self._owner_parts(owner_hash(owner_storage_key)), PRIVATE, *OWNER_PRIVATE_DIRS)
        try:
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the mount root {self.root}: {exc.strerror}"
            ) from None
        with self._walk(parts, create=True):
            pass
        return self.root.joinpath(*parts)

    def resolve(self, relative: str) -> Path:
        """An absolute path for `relative` (as recorded in snapshot_t), refused if it would
        leave the mount or pass through a link."""
        parts = tuple(relative.split("/"))
        if not relative or any(p in ("", ".", "..") for p in parts) or relative.startswith("/"):
            raise StorageError(f"refusing storage path {relative[:120]!r}")
        path = self.root.joinpath(*parts)
        self._assert_inside(path)
        if os.path.realpath(path) != str(path):
            raise StorageError(f"refusing {path}: its path goes through a link")
        return path

    def exists(self, owner_storage_key: str, instance_name: str) -> bool:
        """Whether the instance's root directory exists (a link in its place: StorageError)."""
        self.paths(owner_storage_key, instance_name)
        parts = (*self._owner_parts(owner_hash(owner_storage_key)), instance_name)
        if not self.root.is_dir():
            return False
        with self._walk(parts, create=False) as fd:
            return fd is not None

    def remove_instance_tree(self, owner_storage_key: str, instance_name: str) -> bool:
        """Remove the instance's tree; the owner's root and private area (snapshots) stay.
        See `remove_tree`."""
        return self.remove_tree(owner_hash(owner_storage_key), instance_name)

    def remove_tree(self, digest: str, instance_name: str) -> bool:
        """Remove the tree of `instance_name` under the owner whose hash is `digest`.

        Returns whether there was something to remove. Links inside the tree are
        removed, never followed; a link in place of the instance root is removed
        as a link. A link above it (zone, shard, owner root) is refused.
        """
        validate_label(instance_name)
        owner_root = self.root.joinpath(*self._owner_parts(digest))
        instance_root = owner_root / instance_name
        self._assert_inside(instance_root)
        if not self.root.is_dir():
            return False
        owner_real = os.path.realpath(owner_root)
        if os.path.exists(owner_real) and owner_real != str(owner_root):
            raise StorageError(f"refusing {owner_root}: its path goes through a link")
        with self._walk(self._owner_parts(digest), create=False) as owner_fd:
            if owner_fd is None:
                return False
            try:
                mode = os.stat(instance_name, dir_fd=owner_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                return False
            try:
                if stat.S_ISDIR(mode):
                    # fd-based on Linux (rmtree.avoids_symlink_attacks): links are unlinked.
                    shutil.rmtree(instance_name, dir_fd=owner_fd)
                else:
                    os.unlink(instance_name, dir_fd=owner_fd)
            except OSError as exc:
                raise StorageError(
                    f"cannot remove {instance_root}: {exc.strerror or exc}"
                ) from None
        return True

    def list_instance_trees(self) -> set[tuple[str, str]]:
        """Every (owner hash, instance name) with a tree in this zone (for the orphan scan)."""
        found: set[tuple[str, str]] = set()
        zone = self.root / self.zone
        for shard in _subdirs(zone):
            if not _SHARD.fullmatch(shard):
                continue
            for digest in _subdirs(zone / shard):
                if not (_HASH.fullmatch(digest) and digest.startswith(shard)):
                    continue
                with os.scandir(zone / shard / digest) as entries:
                    for entry in entries:
                        if _LABEL.fullmatch(entry.name) and (
                            entry.is_symlink() or entry.is_dir(follow_symlinks=False)
                        ):
                            found.add((digest, entry.name))
        return found


def _subdirs(path: Path) -> list[str]:
    """Names of the real directories (not links) in `path`; none if it is missing or a link."""
    if path.is_symlink() or not path.is_dir():
        return []
    with os.scandir(path) as entries:
        return [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
