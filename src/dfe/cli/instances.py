"""`dfe instance ...`, `dfe job ...`, `dfe reconcile` and `dfe worker`: instances and their jobs."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn

from dfe.cli.backend import backend
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
    settings,
    stdout,
)
from dfe.enums import JobKind, JobStatus
from dfe.jobs.daily import DailyScheduler
from dfe.jobs.queue import run_worker
from dfe.provisioning import engine
from dfe.schemas import InstanceCreate

instance_app = typer.Typer(cls=DfeGroup, help="Instances.", no_args_is_help=True)
job_app = typer.Typer(cls=DfeGroup, help="Jobs: provisioning and the like.", no_args_is_help=True)

INSTANCE_COLUMNS = ("name", "owner", "cluster", "provision_state", "host", "created_at")
JOB_COLUMNS = ("id", "kind", "instance_name", "status", "step", "progress", "message")
WaitOption = typer.Option(False, "--wait", help="Show progress until the job ends.")
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED)


def _follow(job_id: int, timeout: float = 600) -> None:
    """Show a job's progress until it ends; exit 1 if it failed."""
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[step]}"),
        console=stdout,
    ) as progress:
        task = progress.add_task(f"job {job_id}", total=100, step="queued")
        while True:
            job = backend().get_job(job_id)
            progress.update(task, completed=job.progress, step=job.step or "")
            if job.status in TERMINAL:
                break
            if time.monotonic() > deadline:
                fail(
                    f"job {job_id} is still {job.status.value} after {timeout:.0f} s: "
                    "is a worker running (`dfe worker`)?",
                    code=1,
                )
            time.sleep(0.5)
    if job.status is JobStatus.FAILED:
        fail(f"job {job_id} failed: {job.message}", code=1)
    stdout.print(f"job {job_id} {job.status.value}")


@instance_app.command("provision")
def instance_provision(
    name: str,
    owner: Annotated[str, typer.Option("--owner", help="The owning user's email.")],
    cluster: Annotated[str | None, typer.Option("--cluster")] = None,
    wait: bool = WaitOption,
) -> None:
    """Launch an instance: place it, then provision its database and storage in a job."""
    launched = backend().provision(InstanceCreate(name=name, owner=owner, cluster=cluster))
    job_id = launched.job.id
    stdout.print(f"instance [bold]{name}[/] ({launched.instance.host}) queued as job {job_id}")
    if wait:
        _follow(job_id)


@instance_app.command("deprovision")
def instance_deprovision(name: str, yes: bool = YesOption, wait: bool = WaitOption) -> None:
    """Delete an instance: drop its database and files, archive its records."""
    confirm(f"Delete instance {name} and its data?", yes)
    job_id = backend().deprovision(name).id
    stdout.print(f"deprovisioning [bold]{name}[/] as job {job_id}")
    if wait:
        _follow(job_id)


@instance_app.command("list")
def instance_list(
    owner: Annotated[str | None, typer.Option("--owner")] = None, as_json: bool = JsonOption
) -> None:
    """List live instances."""
    print_table(
        backend().list_instances(owner), INSTANCE_COLUMNS, as_json=as_json, title="Instances"
    )


@instance_app.command("show")
def instance_show(name: str, as_json: bool = JsonOption) -> None:
    """Show an instance's status (archived ones too)."""
    print_record(backend().get_instance(name), as_json=as_json)


@job_app.command("list")
def job_list(
    status: Annotated[JobStatus | None, typer.Option("--status")] = None,
    kind: Annotated[JobKind | None, typer.Option("--kind")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    as_json: bool = JsonOption,
) -> None:
    """List jobs, newest first; --status and --kind keep those in that state, of that kind."""
    listed = backend().list_jobs(status=status, kind=kind, limit=limit)
    print_table(listed, JOB_COLUMNS, as_json=as_json, title="Jobs")


@instance_app.command("api-key")
def instance_api_key(
    name: str,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print the key alone (for scripts).")
    ] = False,
    as_json: bool = JsonOption,
) -> None:
    """Print the key of an instance's runtime API (made now if it has none)."""
    found = backend().instance_api_key(name)
    if quiet:
        typer.echo(found.api_key)
        return
    if as_json:
        print_json({"name": found.name, "api_key": found.api_key})
        return
    stdout.print(f"api_key: [bold]{found.api_key}[/]")
    stdout.print(f"use it as: Authorization: Bearer <api_key>, at the instance {found.name}")


@job_app.command("show")
def job_show(job_id: int, wait: bool = WaitOption, as_json: bool = JsonOption) -> None:
    """Show a job (and, with --wait, follow it to its end)."""
    if wait:
        _follow(job_id)
    print_record(backend().get_job(job_id), as_json=as_json)


def reconcile(
    fix: Annotated[bool, typer.Option("--fix", help="Remove the orphans found.")] = False,
    as_json: bool = JsonOption,
) -> None:
    """Take over jobs whose worker died, and find what belongs to no live instance."""
    config = settings()
    db = database()
    try:
        report = engine.reconcile(db, config, fix=fix)
    finally:
        db.dispose()
    if as_json:
        print_json(
            {
                "resumed_jobs": report.resumed_jobs,
                "requeued_jobs": report.requeued_jobs,
                "orphans": [vars(o) for o in report.orphans],
                "removed": [vars(o) for o in report.removed],
                "purged_keys": report.purged_keys,
            }
        )
        return
    for job_id in report.resumed_jobs:
        stdout.print(f"resumed job {job_id} (its worker had stopped)")
    for job_id in report.requeued_jobs:
        stdout.print(f"queued job {job_id} again (no worker had taken it)")
    for client_id in report.purged_keys:
        stdout.print(f"destroyed expired key {client_id}")
    for orphan in report.orphans:
        verb = "removed" if orphan in report.removed else "found"
        stdout.print(f"{verb} orphan {orphan.kind} {orphan.name} on {orphan.server}")
    if not (report.resumed_jobs or report.requeued_jobs or report.orphans or report.purged_keys):
        stdout.print("nothing to do: every job is alive and nothing is orphaned")
    elif report.orphans and not fix:
        stdout.print("run again with --fix to remove the orphans")


def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1)] = 2,
) -> None:
    """Run a worker: takes jobs from the queue (after reconciling what a dead one left),
    and runs the daily tasks (usage metrics, ...) once a day."""
    config = settings()
    db = database()
    try:
        engine.reconcile(db, config, fix=False)
    finally:
        db.dispose()
    daily_db = database()
    scheduler = DailyScheduler(daily_db, config)
    scheduler.start()
    try:
        run_worker(config, concurrency)
    finally:
        scheduler.stop()
        daily_db.dispose()
