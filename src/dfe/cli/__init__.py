"""The `dfe` command line: setup, database, every admin verb, and running the system."""
