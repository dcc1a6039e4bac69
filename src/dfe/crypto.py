"""Encryption of secrets at rest: a MultiFernet keyring, newest key first.

The keyring comes from `DFE_ENCRYPTION_KEYS` or, when that is unset, from a key
file in the data directory that is generated (mode 0600) on first use.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dfe.config import Settings

KEY_FILE_NAME = "encryption.keys"


class KeyringError(RuntimeError):
    """The configured encryption keys are missing, malformed or do not match the data."""


class Keyring:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise KeyringError("no encryption key configured")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
            self._primary = base64.urlsafe_b64decode(keys[0])
        except ValueError as exc:
            raise KeyringError(f"malformed encryption key: {exc}") from None
        self.key_count = len(keys)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise KeyringError(
                "a stored secret cannot be decrypted with the configured keys "
                "(was DFE_ENCRYPTION_KEYS changed without keeping the old key?)"
            ) from None

    def derive_key(self, purpose: str) -> bytes:
        """A 256-bit key for one purpose (say, signing user tokens), derived from the
        newest encryption key, so no further secret needs managing."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
            self._primary
        )

    def rotate(self, token: str) -> str:
        """Re-encrypt a token under the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise KeyringError(
                "a stored secret cannot be decrypted with the configured keys "
                "(keep the old key after the new one until `dfe db reencrypt` has run)"
            ) from None


def _read_or_create_key_file(data_dir: Path) -> list[str]:
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode() + "\n")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def keyring_from_settings(settings: Settings) -> Keyring:
    if settings.encryption_keys is not None:
        keys = [k.strip() for k in settings.encryption_keys.get_secret_value().split(",")]
        return Keyring([k for k in keys if k])
    return Keyring(_read_or_create_key_file(settings.data_dir))


_active: Keyring | None = None


def install_keyring(keyring: Keyring) -> None:
    """Make `keyring` the one used by encrypted columns in this process."""
    global _active
    _active = keyring


def active_keyring() -> Keyring:
    if _active is None:
        raise KeyringError("no keyring installed: call dfe.db.open_database() first")
    return _active
