"""The Console's JSON API under /api/v1: thin routers over the services."""
