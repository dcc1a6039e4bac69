"""The `dfe` command: one Typer app assembled from the command modules."""

from __future__ import annotations

import typer

from dfe import __version__
from dfe.cli import archive, estate, instances, keys, people, system
from dfe.cli.common import DfeGroup

app = typer.Typer(
    cls=DfeGroup,
    help="DFE: host many isolated application instances on clusters of servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("setup")(system.setup)
app.command("up")(system.up)
app.command("restore")(archive.restore)
app.command("audit")(system.audit)
app.command("reconcile")(instances.reconcile)
app.command("worker")(instances.worker)
app.add_typer(instances.instance_app, name="instance")
app.add_typer(instances.job_app, name="job")
app.add_typer(system.db_app, name="db")
app.add_typer(system.config_app, name="config")
app.add_typer(system.serve_app, name="serve")
app.add_typer(estate.mounts, name="mount")
app.add_typer(estate.servers, name="server")
app.add_typer(estate.clusters, name="cluster")
app.add_typer(people.users, name="user")
app.add_typer(people.service_users, name="service-user")
app.add_typer(keys.app, name="key")
app.add_typer(archive.app, name="archive")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dfe {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """DFE control plane."""


def run() -> None:
    app()
