"""The `dfe` command: one Typer app assembled from the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dfe import __version__
from dfe.cli import archive, estate, instances, keys, limits, metrics, people, snapshots, system
from dfe.cli.backend import close_backend
from dfe.cli.common import DfeGroup, RemoteTarget, fail, set_remote

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
app.add_typer(limits.app, name="limit")
app.add_typer(metrics.app, name="metrics")
app.add_typer(snapshots.snapshot_app, name="snapshot")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dfe {__version__}")
        raise typer.Exit


# What works on this machine's database, files and processes only: never through a Console.
LOCAL_ONLY = frozenset({"setup", "up", "worker", "reconcile", "db", "config", "serve"})


@app.callback()
def main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    remote: Annotated[
        str | None,
        typer.Option(
            "--remote",
            metavar="URL",
            envvar="DFE_REMOTE_URL",
            help="Administer the DFE behind this Console URL through its API, "
            "instead of this machine's database.",
        ),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            metavar="FILE",
            envvar="DFE_REMOTE_KEY_FILE",
            help="With --remote: the key file to sign with (default: console.key "
            "in the data directory, as `dfe setup` wrote it).",
        ),
    ] = None,
) -> None:
    """DFE control plane."""
    del version  # its eager callback acted on it
    set_remote(None)
    close_backend()
    ctx.call_on_close(close_backend)
    if not remote:
        source = ctx.get_parameter_source("key_file")
        if key_file is not None and source is not None and source.name == "COMMANDLINE":
            fail("--key-file is for remote mode: add --remote URL")
        return
    if not remote.startswith(("http://", "https://")):
        fail(f"--remote: must be an http:// or https:// URL, not {remote!r}")
    if ctx.invoked_subcommand in LOCAL_ONLY:
        fail(
            f"`dfe {ctx.invoked_subcommand}` works on this machine only, "
            "not through a Console: drop --remote (and DFE_REMOTE_URL)"
        )
    set_remote(RemoteTarget(url=remote, key_file=key_file))


def run() -> None:
    app()
