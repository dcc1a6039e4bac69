"""Instance names: DNS labels that become `<name>.<cluster subdomain>`."""

from __future__ import annotations

import re

MIN_LENGTH, MAX_LENGTH = 3, 63
RESERVED_NAMES = frozenset(
    {
        "admin", "api", "app", "assets", "auth", "cdn", "changes", "console", "dashboard",
        "dfe", "dns", "docs", "download", "downloads", "ftp", "help", "imap", "localhost",
        "login", "mail", "mx", "ns", "ns1", "ns2", "pop", "portal", "root", "smtp", "static",
        "status", "support", "webmail", "www",
    }
)  # fmt: skip
_LABEL = re.compile(r"^[a-z][a-z0-9-]*$")


def instance_name_problem(name: str, reserved: frozenset[str] = RESERVED_NAMES) -> str | None:
    """Why `name` cannot name an instance, or None when it can."""
    if not MIN_LENGTH <= len(name) <= MAX_LENGTH:
        return f"must be {MIN_LENGTH} to {MAX_LENGTH} characters long"
    if name != name.lower():
        return "must be lower case"
    if not ("a" <= name[0] <= "z"):
        return "must start with a letter (a-z)"
    if not _LABEL.fullmatch(name):
        return "may contain only letters a-z, digits and hyphens"
    if name.endswith("-"):
        return "must not end with a hyphen"
    if "--" in name:
        return "must not contain two hyphens in a row"
    if name in reserved:
        return f"'{name}' is reserved"
    return None
