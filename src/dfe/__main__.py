"""`python -m dfe ...` is the `dfe` command."""

from dfe.cli.main import run

run()
