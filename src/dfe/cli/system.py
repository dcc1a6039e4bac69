"""Set-up and running: `dfe setup`, `dfe db ...`, `dfe config show`, `dfe up`, `dfe serve`."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import SecretStr
from sqlalchemy import select

from dfe.cli.backend import backend
from dfe.cli.common import (
    DfeGroup,
    JsonOption,
    actor,
    database,
    fail,
    print_json,
    print_table,
    read_password,
    settings,
    stdout,
)
from dfe.dashboard.branding import BrandingError, branding_of
from dfe.db import migrate
from dfe.models import Cluster
from dfe.schemas import ServiceUserCreate
from dfe.services import setup as setup_service
from dfe.services.reencrypt import reencrypt_secrets

db_app = typer.Typer(cls=DfeGroup, help="The Console's database.", no_args_is_help=True)
config_app = typer.Typer(cls=DfeGroup, help="Settings.", no_args_is_help=True)
serve_app = typer.Typer(cls=DfeGroup, help="Run one component.", no_args_is_help=True)

DEFAULT_ADMIN_EMAIL = "admin@example.com"


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema, and (re)install the archive triggers."""
    db = database()
    try:
        migrate.upgrade(db)
        stdout.print(f"database at revision {migrate.current_revision(db)}")
    finally:
        db.dispose()


@db_app.command("check")
def db_check(as_json: bool = JsonOption) -> None:
    """Verify the schema matches the code and the archive and key guarantees are in place."""
    db = database()
    try:
        report = migrate.check(db)
    finally:
        db.dispose()
    if as_json:
        print_json({"ok": report.ok, "checked": report.checked, "problems": report.problems})
    else:
        for line in report.checked:
            stdout.print(f"[green]ok[/]      {line}")
        for line in report.problems:
            stdout.print(f"[red]problem[/] {line}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@db_app.command("reencrypt")
def db_reencrypt() -> None:
    """Rewrite every stored secret under the newest encryption key (after a key rotation)."""
    db = database()
    try:
        counts = reencrypt_secrets(db, actor())
    finally:
        db.dispose()
    for table, count in counts.items():
        stdout.print(f"{table}: {count} secret(s) re-encrypted")
    stdout.print("every secret is now encrypted with the first key; older keys can be removed")


@config_app.command("show")
def config_show(as_json: bool = JsonOption) -> None:
    """The effective settings, secrets masked."""
    shown = settings().masked()
    if as_json:
        print_json(shown)
    else:
        for key, value in shown.items():
            stdout.print(f"DFE_{key.upper()}={value}", highlight=False)


def _setup(email: str, password: str, *, force: bool, local_cluster: bool) -> None:
    config = settings()
    admin = ServiceUserCreate(email=email, password=SecretStr(password))
    db = database()
    host_key = None
    try:
        migrate.upgrade(db)
        with db.transaction(actor=actor()) as session:
            result = setup_service.run_setup(session, admin, force=force)
            if (
                local_cluster
                and session.scalar(
                    select(Cluster.id).where(Cluster.name == setup_service.LOCAL_CLUSTER)
                )
                is None
            ):
                host_key = setup_service.create_local_cluster(session, config.data_dir)
    finally:
        db.dispose()
    files = setup_service.write_key_files(result, config.data_dir, config.effective_console_url)
    if host_key is not None:
        path = config.effective_host_key_file
        files.append(setup_service.write_key_file(path, host_key, config.effective_console_url))
    stdout.print(f"administrator [bold]{result.admin.email}[/] ready")
    stdout.print(f"the administrator logs in to the admin UI at {config.effective_console_url}/ui/")
    for path in files:
        stdout.print(f"wrote {path} (mode 0600)")


def setup(
    email: Annotated[str, typer.Option("--email", help="The first administrator's email.")],
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="File with the password (- = stdin).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the system keys of a set-up system.")
    ] = False,
    local_cluster: Annotated[
        bool,
        typer.Option("--local-cluster", help="Also create the one-machine 'local' cluster."),
    ] = False,
) -> None:
    """Create the schema, the first administrator and the Console's and Dashboard's keys."""
    _setup(email, read_password(password_file), force=force, local_cluster=local_cluster)


@serve_app.command("console")
def serve_console(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 1,
) -> None:
    """Serve the Console API."""
    config = settings()
    uvicorn.run(
        "dfe.console.app:create_app",
        factory=True,
        host=host or config.console_host,
        port=port or config.console_port,
        workers=workers,
        proxy_headers=False,
    )


@serve_app.command("dashboard")
def serve_dashboard(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 1,
) -> None:
    """Serve the Dashboard, the users' portal (it needs the dashboard.key `dfe setup` wrote)."""
    config = settings()
    if not (config.data_dir / "dashboard.key").is_file():
        fail(f"no Dashboard key in {config.data_dir}: run `dfe setup` first")
    try:
        branding_of(config)
    except BrandingError as error:
        fail(str(error))
    uvicorn.run(
        "dfe.dashboard.app:create_app",
        factory=True,
        host=host or config.dashboard_host,
        port=port or config.dashboard_port,
        workers=workers,
        proxy_headers=False,
    )


@serve_app.command("host")
def serve_host(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 1,
) -> None:
    """Serve the web tier: every instance at http://<name>.<DFE_HOST_SUBDOMAIN>:<port>/."""
    config = settings()
    if not config.effective_host_key_file.is_file():
        fail(
            f"no web server key at {config.effective_host_key_file}: run "
            "`dfe setup --local-cluster`, or see docs/host.md"
        )
    uvicorn.run(
        "dfe.host.app:create_app",
        factory=True,
        host=host or config.host_host,
        port=port or config.host_port,
        workers=workers,
        proxy_headers=False,
    )


def up(
    email: Annotated[str, typer.Option("--email")] = DEFAULT_ADMIN_EMAIL,
) -> None:
    """Run the whole system on this machine: the Console, the Dashboard, the web tier and
    a worker (embedded default: SQLite database, local storage, a job queue in SQLite)."""
    config = settings()
    db = database()
    try:
        migrate.upgrade(db)
        with db.session() as session:
            first_run = not setup_service.is_set_up(session)
    finally:
        db.dispose()
    if first_run:
        password = secrets.token_urlsafe(12)
        _setup(email, password, force=False, local_cluster=True)
        stdout.print(
            f"first run: console administrator [bold]{email}[/] has password "
            f"[bold]{password}[/] (shown once; change it with `dfe service-user update`)"
        )
    elif not config.data_dir.exists():
        fail(f"data directory {config.data_dir} is missing")
    stdout.print(f"Console API: {config.effective_console_url}/api/v1/health")
    stdout.print(f"Console admin UI: {config.effective_console_url}/ui/")
    worker = subprocess.Popen([sys.executable, "-m", "dfe", "worker"])
    stdout.print(f"worker: process {worker.pid}")
    dashboard = subprocess.Popen([sys.executable, "-m", "dfe", "serve", "dashboard"])
    stdout.print(f"Dashboard: http://{config.dashboard_host}:{config.dashboard_port}/")
    web_tier = subprocess.Popen([sys.executable, "-m", "dfe", "serve", "host"])
    stdout.print(f"Instances: http://<name>.{config.host_subdomains[0]}:{config.host_port}/api")
    if not config.smtp_url:
        stdout.print(f"Mail: written as .eml files into {config.effective_outbox_dir}")
    try:
        serve_console(host=None, port=None, workers=1)
    finally:
        for process in (web_tier, dashboard, worker):
            process.terminate()
            process.wait(timeout=30)


def audit(
    actor: Annotated[str | None, typer.Option("--actor", help="Actors containing this.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Target name.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="e.g. cluster.delete")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    as_json: bool = JsonOption,
) -> None:
    """Read the audit log, newest first."""
    print_table(
        backend().audit(actor=actor, target=target, action=action, limit=limit),
        ("at", "actor", "action", "target_type", "target_name"),
        as_json=as_json,
        title="Audit log",
    )
