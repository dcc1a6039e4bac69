"""The `local` mount driver: the original's layout, idempotence, and no way out of the root."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dfe.provisioning import LocalStorage, StorageError, owner_hash

OWNER = "0123456789abcdef0123456789abcdef"
H = hashlib.sha256(OWNER.encode()).hexdigest()
PRIVATE_DIRS = (".cache", "config", "scripts", "logs", "packages")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "storage"
    path.mkdir()
    return path


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage(root)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the mount root, with a file that must survive everything."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "sentinel").write_text("keep me")
    return path


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_tree_has_the_original_layout(root: Path, storage: LocalStorage) -> None:
    paths = storage.create_instance_tree(OWNER, "my-shop")

    owner_root = root / "local" / H[:2] / H
    assert paths.owner_root == owner_root
    assert paths.owner_private == owner_root / ".private"
    assert paths.snapshots == owner_root / ".private" / "snapshots"
    assert paths.instance_root == owner_root / "my-shop"
    assert paths.private == owner_root / "my-shop" / ".private"
    assert (paths.cache, paths.config, paths.scripts, paths.logs, paths.packages) == tuple(
        owner_root / "my-shop" / ".private" / name for name in PRIVATE_DIRS
    )
    assert sorted(p.name for p in paths.private.iterdir()) == sorted(PRIVATE_DIRS)
    assert [p.name for p in paths.owner_private.iterdir()] == ["snapshots"]
    assert sorted(p.name for p in owner_root.iterdir()) == [".private", "my-shop"]
    assert owner_hash(OWNER) == H
    assert storage.paths(OWNER, "my-shop") == paths


def test_directories_are_made_0750_whatever_the_umask(
    root: Path, storage: LocalStorage, strict_umask: None
) -> None:
    paths = storage.create_instance_tree(OWNER, "my-shop")
    made = list(root.rglob("*"))
    assert paths.logs in made and paths.snapshots in made
    assert {mode(p) for p in made} == {0o750}


def test_a_missing_mount_root_is_created(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "not" / "yet")
    paths = storage.create_instance_tree(OWNER, "shop")
    assert paths.config.is_dir()


def test_creating_again_keeps_what_is_there(storage: LocalStorage) -> None:
    paths = storage.create_instance_tree(OWNER, "my-shop")
    (paths.config / "app.json").write_text("{}")
    (paths.snapshots / "old.zip").write_text("zip")

    again = storage.create_instance_tree(OWNER, "my-shop")

    assert again == paths
    assert (paths.config / "app.json").read_text() == "{}"
    assert (paths.snapshots / "old.zip").read_text() == "zip"


def test_a_half_made_tree_is_completed(storage: LocalStorage) -> None:
    paths = storage.paths(OWNER, "my-shop")
    paths.config.mkdir(parents=True)  # a worker died here
    storage.create_instance_tree(OWNER, "my-shop")
    assert all(p.is_dir() for p in (paths.cache, paths.logs, paths.packages, paths.snapshots))


def test_remove_takes_the_instance_and_keeps_the_owner_area(storage: LocalStorage) -> None:
    paths = storage.create_instance_tree(OWNER, "my-shop")
    sibling = storage.create_instance_tree(OWNER, "other-shop")
    (paths.logs / "today.log").write_text("x")
    (paths.snapshots / "kept.zip").write_text("zip")

    assert storage.exists(OWNER, "my-shop")
    assert storage.remove_instance_tree(OWNER, "my-shop") is True

    assert not paths.instance_root.exists()
    assert not storage.exists(OWNER, "my-shop")
    assert (paths.snapshots / "kept.zip").exists()  # the original keeps the owner's snapshots
    assert sibling.config.is_dir()
    assert storage.remove_instance_tree(OWNER, "my-shop") is False  # gone already: fine


def test_remove_and_exists_on_nothing(tmp_path: Path, storage: LocalStorage) -> None:
    assert storage.remove_instance_tree(OWNER, "never-made") is False
    assert not storage.exists(OWNER, "never-made")
    missing_root = LocalStorage(tmp_path / "no-such-root")
    assert missing_root.remove_instance_tree(OWNER, "shop") is False
    assert not missing_root.exists(OWNER, "shop")
    assert missing_root.list_instance_trees() == set()


def test_list_instance_trees_finds_every_tree_and_nothing_else(
    root: Path, storage: LocalStorage
) -> None:
    storage.create_instance_tree(OWNER, "one")
    storage.create_instance_tree(OWNER, "two")
    storage.create_instance_tree("another-owner", "three")
    other = owner_hash("another-owner")
    # Things that are no instance tree.
    (root / "local" / "zz").mkdir()
    (root / "local" / H[:2] / "not-a-hash").mkdir()
    (root / "local" / H[:2] / H / "a-file").write_text("x")
    (root / "local" / H[:2] / H / "Not_A_Label").mkdir()
    (root / "elsewhere").mkdir()

    assert storage.list_instance_trees() == {(H, "one"), (H, "two"), (other, "three")}
    storage.remove_instance_tree(OWNER, "two")
    assert storage.list_instance_trees() == {(H, "one"), (other, "three")}


def test_zones_are_kept_apart(root: Path) -> None:
    LocalStorage(root, zone="east").create_instance_tree(OWNER, "shop")
    assert (root / "east" / H[:2] / H / "shop").is_dir()
    assert LocalStorage(root).list_instance_trees() == set()
    assert LocalStorage(root, zone="east").list_instance_trees() == {(H, "shop")}


BAD_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "../../etc",
    "a/b",
    "a\\b",
    "/abs",
    "/etc/passwd",
    "x.y",
    ".private",
    "-a",
    "a-",
    "1abc",
    "Shop",
    "a" * 64,
    "shop\n",
    "shop\x00",
    "ünïcode",
    "\uff53\uff48\uff4f\uff50",  # full-width "shop"
    "shop\u0301",
    "\u0131",  # dotless i
    " shop",
    "~",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_not_dns_labels_are_refused(
    root: Path, storage: LocalStorage, name: str
) -> None:
    for call in (
        storage.paths,
        storage.create_instance_tree,
        storage.exists,
        storage.remove_instance_tree,
    ):
        with pytest.raises(ValueError, match="must be a DNS label"):
            call(OWNER, name)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("zone", ["", "..", "a/b", "Local", "x.y"])
def test_a_bad_zone_is_refused(root: Path, zone: str) -> None:
    with pytest.raises(ValueError, match="zone"):
        LocalStorage(root, zone=zone)


def test_an_owner_key_is_hashed_so_any_key_stays_inside(root: Path, storage: LocalStorage) -> None:
    paths = storage.create_instance_tree("../../../etc", "shop")
    assert paths.instance_root.is_relative_to(root)
    with pytest.raises(ValueError, match="owner storage key"):
        storage.paths("", "shop")


def test_a_link_planted_in_the_tree_is_removed_not_followed(
    storage: LocalStorage, outside: Path
) -> None:
    paths = storage.create_instance_tree(OWNER, "my-shop")
    (paths.config / "escape").symlink_to(outside, target_is_directory=True)
    (paths.instance_root / "escape-file").symlink_to(outside / "sentinel")
    (paths.logs / "deep").mkdir()
    (paths.logs / "deep" / "escape").symlink_to(outside)

    assert storage.remove_instance_tree(OWNER, "my-shop")

    assert not paths.instance_root.exists()
    assert (outside / "sentinel").read_text() == "keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["sentinel"]


def test_a_link_in_place_of_the_instance_root_is_removed_as_a_link(
    storage: LocalStorage, outside: Path
) -> None:
    paths = storage.create_instance_tree(OWNER, "my-shop")
    storage.remove_instance_tree(OWNER, "my-shop")
    paths.instance_root.symlink_to(outside, target_is_directory=True)

    with pytest.raises(StorageError, match="symbolic link"):
        storage.exists(OWNER, "my-shop")
    with pytest.raises(StorageError, match="symbolic link"):
        storage.create_instance_tree(OWNER, "my-shop")
    assert (H, "my-shop") in storage.list_instance_trees()
    assert storage.remove_instance_tree(OWNER, "my-shop")

    assert not paths.instance_root.is_symlink()
    assert (outside / "sentinel").read_text() == "keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["sentinel"]


@pytest.mark.parametrize("level", ["zone", "shard", "owner root"])
def test_a_link_above_the_instance_is_refused(
    root: Path, storage: LocalStorage, outside: Path, level: str
) -> None:
    owner_root = root / "local" / H[:2] / H
    link = {"zone": root / "local", "shard": owner_root.parent, "owner root": owner_root}[level]
    # What the link points at looks just like a tree, so following it would delete there.
    target = outside / "lookalike"
    lookalike = target / owner_root.relative_to(link) / "my-shop"
    (lookalike / ".private").mkdir(parents=True)
    (lookalike / "data").write_text("keep me too")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    before = sorted(str(p) for p in outside.rglob("*"))

    with pytest.raises(StorageError):
        storage.remove_instance_tree(OWNER, "my-shop")
    with pytest.raises(StorageError):
        storage.create_instance_tree(OWNER, "my-shop")
    with pytest.raises(StorageError):
        storage.exists(OWNER, "my-shop")

    assert sorted(str(p) for p in outside.rglob("*")) == before
    assert (outside / "sentinel").read_text() == "keep me"


def test_a_file_in_place_of_a_directory_is_refused(storage: LocalStorage) -> None:
    paths = storage.paths(OWNER, "my-shop")
    paths.private.mkdir(parents=True)
    paths.logs.write_text("not a directory")
    with pytest.raises(StorageError, match="not a directory"):
        storage.create_instance_tree(OWNER, "my-shop")


def test_the_mount_root_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real-storage"
    real.mkdir()
    (tmp_path / "mnt").symlink_to(real, target_is_directory=True)
    storage = LocalStorage(tmp_path / "mnt")
    assert storage.root == real
    paths = storage.create_instance_tree(OWNER, "shop")
    assert paths.instance_root.is_relative_to(real)
    assert storage.remove_instance_tree(OWNER, "shop")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(name=st.text(max_size=70), owner_key=st.text(max_size=40))
@example(name="../escape", owner_key=OWNER)
@example(name="a", owner_key="../../..")
@example(name="shop", owner_key="/")
def test_any_name_is_refused_or_stays_inside_the_root(
    root: Path, storage: LocalStorage, name: str, owner_key: str
) -> None:
    try:
        paths = storage.create_instance_tree(owner_key, name)
    except ValueError:
        return
    real_root = os.path.realpath(root)
    for path in (paths.instance_root, paths.config, paths.snapshots):
        real = os.path.realpath(path)
        assert os.path.commonpath([real, real_root]) == real_root
        assert real != real_root
        assert os.path.isdir(real)
    assert paths.instance_root.parent == root / "local" / owner_hash(owner_key)[:2] / (
        owner_hash(owner_key)
    )
    assert storage.remove_instance_tree(owner_key, name)
