"""The Console: the admin API under /api/v1 (and, later, the admin web UI)."""
