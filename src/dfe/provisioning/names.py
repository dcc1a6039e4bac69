"""Database and user names of an instance, and the passwords of its users.

The names are derived from the instance, never taken raw from input, and carry
the instance id: a name reused after its instance was archived never meets a
leftover database of the old one, and the orphan scan can tell from a name
which instance it belongs to.
"""

from __future__ import annotations

import re
import secrets

DEFAULT_PREFIX = "dfe_i_"
"""What every instance database and user name starts with.

Distinct from the Console's own databases (`dfe`, `dfe_local`, the test suite's
`dfe_t_...`) so that the orphan scan never mistakes one of those for a leftover.
"""

MAX_DATABASE_NAME = 63  # PostgreSQL's identifier limit (MySQL allows 64)
MAX_USER_NAME = 32  # MySQL's user name limit (MariaDB allows 80)

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")
_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,11}")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def validate_identifier(name: str, what: str = "name") -> str:
    """Return `name` if it is a safe database or user name, else raise ValueError."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid {what} {name!r}: must match [a-z][a-z0-9_]{{0,62}} (at most 63 characters)"
        )
    return name


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
        if number == 0:
            return digits


def instance_database_names(
    instance_name: str, instance_id: int, *, prefix: str = DEFAULT_PREFIX
) -> tuple[str, str]:
    """The (database name, user name) of an instance: `<prefix><name>_<id in base 36>`.

    The name part is shortened as needed: database names stay within 63 characters,
    user names within 32. The id suffix keeps them unique even when shortened.
    """
    if isinstance(instance_id, bool) or not isinstance(instance_id, int) or instance_id < 1:
        raise ValueError(f"invalid instance id {instance_id!r}: must be a positive integer")
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"invalid name prefix {prefix!r}: must match [a-z][a-z0-9_]{{0,11}}")
    stem = re.sub(r"[^a-z0-9]+", "_", instance_name.lower()).strip("_")
    suffix = _base36(instance_id)

    def build(limit: int) -> str:
        room = limit - len(prefix) - 1 - len(suffix)
        return validate_identifier(f"{prefix}{stem[:room].rstrip('_')}_{suffix}")

    return build(MAX_DATABASE_NAME), build(MAX_USER_NAME)


def instance_id_from_name(name: str, *, prefix: str = DEFAULT_PREFIX) -> int | None:
    """The instance id a database or user name was made for, or None if it is not one of ours."""
    if not name.startswith(prefix) or not _IDENTIFIER.fullmatch(name):
        return None
    _, _, suffix = name[len(prefix) :].rpartition("_")
    if not suffix or not suffix.isalnum() or suffix.startswith("0"):
        return None
    return int(suffix, 36)


def generate_password() -> str:
    """A fresh password for an instance's database user: 160 random bits as 40 hex digits.

    Hex needs no quoting in URLs, DSNs or environment variables.
    """
    return secrets.token_hex(20)
