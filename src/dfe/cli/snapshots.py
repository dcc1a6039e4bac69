"""`dfe instance export|import|move` and `dfe snapshot list|show|delete|download|purge`.

Locally these call the services and dispatch the job (as a launch does); with
`--remote` they go through the Console API with the ops client.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select

from dfe.cli.backend import RemoteBackend, backend
from dfe.cli.common import (
    DfeGroup,
    JsonOption,
    YesOption,
    confirm,
    database,
    fail,
    print_json,
    print_record,
    print_table,
    reading,
    remote_target,
    settings,
    stdout,
    transaction,
)
from dfe.cli.instances import WaitOption, _follow, instance_app
from dfe.client import ConsoleClient
from dfe.jobs.queue import dispatcher_for
from dfe.models import Instance, Snapshot
from dfe.schemas import ImportRequest, MoveRequest, SnapshotPublic
from dfe.services import identity, instances, snapshots

snapshot_app = typer.Typer(
    cls=DfeGroup, help="Snapshots: exported instances.", no_args_is_help=True
)
COLUMNS = ("id", "instance_name", "origin", "size", "source_engine", "created_at", "expires_at")


def _client() -> ConsoleClient | None:
    """The ops client in remote mode (the invocation's backend's), else None."""
    current = backend()
    return current.client if isinstance(current, RemoteBackend) else None


def _dispatch(*job_ids: int) -> None:
    db = database()
    try:
        dispatcher = dispatcher_for(db, settings())
        for job_id in job_ids:
            dispatcher.dispatch(job_id)
    finally:
        db.dispose()


def _started(what: str, job_id: int, wait: bool) -> None:
    stdout.print(f"{what} as job {job_id}")
    if wait:
        _follow(job_id)


@instance_app.command("export")
def instance_export(name: str, wait: bool = WaitOption) -> None:
    """Export an instance (database and files) to a snapshot in its owner's private area."""
    client = _client()
    if client is not None:
        job_id = client.export_instance(name).job.id
    else:
        with transaction() as session:
            job_id = snapshots.request_export(session, instances.get_instance(session, name)).id
        _dispatch(job_id)
    _started(f"exporting [bold]{name}[/]", job_id, wait)


@instance_app.command("import")
def instance_import(
    name: str,
    snapshot: Annotated[int | None, typer.Option("--snapshot", help="A snapshot id.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="A snapshot archive (.dfe.tar) to upload.")
    ] = None,
    owner: Annotated[
        str | None, typer.Option("--owner", help="With --file: who owns a new instance.")
    ] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help="For a new instance.")] = None,
    wait: bool = WaitOption,
) -> None:
    """Import a snapshot into an instance; a missing instance is launched first. The
    archive is verified completely before anything changes."""
    if (snapshot is None) == (file is None):
        fail("name exactly one of --snapshot ID and --file ARCHIVE")
    client = _client()
    if file is not None and not file.is_file():
        fail(f"{file}: no such file")
    if client is not None:
        if file is not None:
            job_id = client.upload_snapshot(name, file.read_bytes(), cluster, owner).job.id
        else:
            assert snapshot is not None
            job_id = client.import_snapshot(
                name, ImportRequest(snapshot_id=snapshot, cluster=cluster)
            ).job.id
        _started(f"importing into [bold]{name}[/]", job_id, wait)
        return
    config = settings()
    with transaction() as session:
        if file is not None:
            existing = session.scalar(select(Instance).where(Instance.name == name.lower()))
            if existing is not None:
                user_id = existing.user_id
            elif owner is not None:
                user_id = identity.get_user(session, owner).id
            else:
                fail(f"instance {name} does not exist: name its --owner to launch it")
            with file.open("rb") as source:
                job_ids = snapshots.import_upload(
                    session,
                    user_id,
                    name,
                    iter(lambda: source.read(1 << 20), b""),
                    cluster=cluster or config.default_cluster,
                    max_bytes=config.snapshot_max_upload_bytes,
                    ttl_days=config.snapshot_ttl_days,
                )
        else:
            assert snapshot is not None
            job_ids = snapshots.request_import_named(
                session,
                name,
                snapshots.get_snapshot(session, snapshot),
                cluster or config.default_cluster,
            )
    _dispatch(*job_ids)
    _started(f"importing into [bold]{name}[/]", job_ids[-1], wait)


@instance_app.command("move")
def instance_move(
    name: str,
    db_server: Annotated[str, typer.Option("--db-server", help="The target db server.")],
    wait: bool = WaitOption,
) -> None:
    """Move an instance's database to another db server (any engine). The instance is
    read-only meanwhile; on failure it stays where it was."""
    client = _client()
    if client is not None:
        job_id = client.move_instance(name, MoveRequest(db_server=db_server)).job.id
    else:
        with transaction() as session:
            instance = instances.get_instance(session, name)
            job_id = snapshots.request_move(session, instance, db_server).id
        _dispatch(job_id)
    _started(f"moving [bold]{name}[/] to {db_server}", job_id, wait)


def _all_snapshots() -> list[SnapshotPublic]:
    client = _client()
    if client is not None:
        return list(client.iterate(client.list_snapshots, limit=500))
    with reading() as session:
        rows = session.scalars(snapshots.snapshot_query().order_by(Snapshot.id))
        return [SnapshotPublic.model_validate(row) for row in rows]


@snapshot_app.command("list")
def snapshot_list(as_json: bool = JsonOption) -> None:
    """List snapshots, oldest first."""
    print_table(_all_snapshots(), COLUMNS, as_json=as_json, title="Snapshots")


@snapshot_app.command("show")
def snapshot_show(snapshot_id: int, as_json: bool = JsonOption) -> None:
    """Show a snapshot."""
    client = _client()
    if client is not None:
        print_record(client.get_snapshot(snapshot_id), as_json=as_json)
        return
    with reading() as session:
        found = SnapshotPublic.model_validate(snapshots.get_snapshot(session, snapshot_id))
    print_record(found, as_json=as_json)


@snapshot_app.command("delete")
def snapshot_delete(snapshot_id: int, yes: bool = YesOption) -> None:
    """Delete a snapshot and its file."""
    confirm(f"Delete snapshot {snapshot_id}?", yes)
    client = _client()
    if client is not None:
        client.delete_snapshot(snapshot_id)
    else:
        with transaction() as session:
            snapshots.delete_snapshot(session, snapshot_id)
    stdout.print(f"snapshot {snapshot_id} deleted")


@snapshot_app.command("download")
def snapshot_download(
    snapshot_id: int,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")],
) -> None:
    """Copy a snapshot's archive to a file."""
    if output.exists():
        fail(f"{output} exists already")
    client = _client()
    if client is not None:
        link = client.snapshot_link(snapshot_id)
        output.write_bytes(client.download_snapshot(snapshot_id, link.expires, link.signature))
    else:
        with reading() as session:
            path = snapshots.snapshot_path(session, snapshots.get_snapshot(session, snapshot_id))
        if not path.is_file():
            fail(f"snapshot {snapshot_id}'s file is gone")
        shutil.copyfile(path, output)
    stdout.print(f"snapshot {snapshot_id} written to {output}")


@snapshot_app.command("purge")
def snapshot_purge(as_json: bool = JsonOption) -> None:
    """Delete the snapshots past their expiry (files and records); each is audited."""
    if remote_target() is not None:
        fail("`dfe snapshot purge` works on this machine only: drop --remote")
    db = database()
    try:
        purged = snapshots.purge_expired(db)
    finally:
        db.dispose()
    if as_json:
        print_json({"purged": purged})
        return
    stdout.print(f"purged {len(purged)} expired snapshot(s)" + (f": {purged}" if purged else ""))
