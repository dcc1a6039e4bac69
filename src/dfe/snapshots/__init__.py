"""Snapshots: a portable dump of an instance (its database and files) in one archive.

format.py   the engine-neutral schema description and canonical row values
dump.py     reading an instance database into that form and loading it back
archive.py  writing the archive (tar) and verifying one before anything is applied
"""

from dfe.snapshots.errors import SnapshotError

FORMAT_VERSION = 1

__all__ = ["FORMAT_VERSION", "SnapshotError"]
