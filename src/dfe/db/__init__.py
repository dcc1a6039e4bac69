"""Database access: engine and sessions, portable types, migrations, archive triggers."""

from dfe.config import Settings
from dfe.crypto import install_keyring, keyring_from_settings
from dfe.db.session import Database


def open_database(settings: Settings) -> Database:
    """The database named by the settings, with the settings' keyring installed."""
    install_keyring(keyring_from_settings(settings))
    return Database(settings.effective_database_url)


__all__ = ["Database", "open_database"]
