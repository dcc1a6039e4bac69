"""Authentication: passwords, app keys, request signatures, permissions."""
