"""Re-encrypt every stored secret under the newest encryption key.

After a new key is put first in the keyring, old rows still read only with the
old key. This rewrites each encrypted column of every table (the archive's
copies included) under the newest key, in one transaction, so that the old key
can then be dropped from the keyring.
"""

from __future__ import annotations

from sqlalchemy import Column, Table, Text, and_, bindparam, select, type_coerce, update

from dfe.crypto import active_keyring
from dfe.db.base import Base, EncryptedJSON, EncryptedString
from dfe.db.session import Database
from dfe.services import audit

BATCH = 500


def encrypted_columns(table: Table) -> list[Column[object]]:
    return [c for c in table.columns if isinstance(c.type, EncryptedString | EncryptedJSON)]


def reencrypt_secrets(database: Database, actor: str) -> dict[str, int]:
    """Rewrite every encrypted value under the newest key; the count of values per table.

    The values are read and written as the stored text (never decrypted into
    Python objects), and `updated_at` is left as it was: nothing changed but
    the key, so the web tier's change feed must not see a change.
    """
    keyring = active_keyring()
    counts: dict[str, int] = {}
    with database.transaction(actor) as session:
        for table in Base.metadata.sorted_tables:
            columns = encrypted_columns(table)
            if not columns:
                continue
            keys = list(table.primary_key.columns)
            raw = [type_coerce(c, Text).label(c.name) for c in columns]
            statement = update(table).where(
                and_(*(key == bindparam(f"k_{key.name}") for key in keys))
            )
            values: dict[str, object] = {
                c.name: bindparam(f"v_{c.name}", type_=Text) for c in columns
            }
            if "updated_at" in table.c:
                values["updated_at"] = table.c.updated_at
            statement = statement.values(values)
            batch: list[dict[str, object]] = []
            rewritten = 0
            for row in session.execute(select(*keys, *raw)).mappings().all():
                params: dict[str, object] = {f"k_{key.name}": row[key.name] for key in keys}
                for column in columns:
                    value = row[column.name]
                    params[f"v_{column.name}"] = None if value is None else keyring.rotate(value)
                    rewritten += value is not None
                batch.append(params)
                if len(batch) == BATCH:
                    session.execute(statement, batch)
                    batch = []
            if batch:
                session.execute(statement, batch)
            counts[table.name] = rewritten
        audit.record(session, "secrets.reencrypt", "database", None, None, after=counts)
    return counts
