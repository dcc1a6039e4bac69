"""Database access: engine and sessions (`session`), portable types (`base`),
migrations (`migrate`) and the archive triggers (`archive_triggers`)."""
