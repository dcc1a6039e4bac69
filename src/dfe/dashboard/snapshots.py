"""Snapshots in the Dashboard: export an instance, import a snapshot or an uploaded
archive (size-limited), download through a signed link, and a job's progress.

Downloads go through the Console with the signed-in user's token: the link's
signature and expiry are checked there, and so is the owner, so a link shown to
someone else gets them nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from dfe.client import ConsoleError
from dfe.dashboard.web import SignedIn, SignedInDep, flash, form_of, redirect, render, sentence
from dfe.enums import JobStatus
from dfe.schemas import ImportRequest
from dfe.services.names import instance_name_problem

router = APIRouter()
POLL_SECONDS = 1
MAX_LISTED = 200
CHUNK = 1 << 20


def _limit(request: Request) -> int:
    limit: int = request.app.state.settings.snapshot_max_upload_bytes
    return limit


async def _page(
    request: Request, user: SignedIn, *, error: str | None = None, status: int = 200
) -> Response:
    snapshots = await user.console.list_snapshots(sort="-created_at", limit=MAX_LISTED)
    instances = await user.console.list_instances(sort="name", limit=MAX_LISTED)
    context: dict[str, Any] = {
        "snapshots": snapshots.items,
        "instances": [i for i in instances.items if not i.archived],
        "error": error,
        "max_upload_mb": _limit(request) // (1 << 20),
    }
    return render(request, "snapshots.html", context, status=status)


@router.get("/snapshots")
async def snapshots_page(request: Request, user: SignedInDep) -> Response:
    return await _page(request, user)


async def _started(request: Request, user: SignedIn, call: Any, *args: Any) -> Response:
    try:
        accepted = await call(*args)
    except ConsoleError as error:
        if error.status >= 500 or error.status == 401:
            raise
        return await _page(request, user, error=sentence(error.detail), status=error.status)
    return redirect(request, f"/jobs/{accepted.job.id}")


@router.post("/instances/{name}/export")
async def export(request: Request, name: str, user: SignedInDep) -> Response:
    return await _started(request, user, user.console.export_instance, name)


@router.post("/snapshots/export")
async def export_chosen(request: Request, user: SignedInDep) -> Response:
    name = _target(await form_of(request))
    if name is None:
        return await _page(request, user, error="Choose an instance to export.", status=422)
    return await _started(request, user, user.console.export_instance, name)


def _target(form: dict[str, str]) -> str | None:
    name = form.get("instance", "").strip().lower()
    return None if instance_name_problem(name) else name


@router.post("/snapshots/import")
async def import_snapshot(request: Request, user: SignedInDep) -> Response:
    form = await form_of(request)
    name = _target(form)
    snapshot = form.get("snapshot_id", "")
    if name is None or not snapshot.isdigit():
        error = "Choose a snapshot and name the instance to import it into."
        return await _page(request, user, error=error, status=422)
    data = ImportRequest(snapshot_id=int(snapshot))
    return await _started(request, user, user.console.import_snapshot, name, data)


@router.post("/snapshots/upload")
async def upload(request: Request, user: SignedInDep) -> Response:
    limit = _limit(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + CHUNK:
        error = f"The archive is too large: at most {limit // (1 << 20)} MB."
        return await _page(request, user, error=error, status=413)
    form = await request.form()
    archive = form.get("archive")
    name = _target({k: v for k, v in form.items() if isinstance(v, str)})
    if name is None or not isinstance(archive, UploadFile):
        error = "Choose an archive (.dfe.tar) and name the instance to import it into."
        return await _page(request, user, error=error, status=422)
    data = bytearray()
    while chunk := await archive.read(CHUNK):
        data += chunk
        if len(data) > limit:
            error = f"The archive is too large: at most {limit // (1 << 20)} MB."
            return await _page(request, user, error=error, status=413)
    if not data:
        return await _page(request, user, error="The archive is empty.", status=422)
    return await _started(request, user, user.console.upload_snapshot, name, bytes(data))


@router.post("/snapshots/{snapshot_id}/delete")
async def delete(request: Request, snapshot_id: int, user: SignedInDep) -> Response:
    await user.console.delete_snapshot(snapshot_id)
    flash(request, f"Snapshot {snapshot_id} deleted.")
    return redirect(request, "/snapshots")


@router.get("/snapshots/{snapshot_id}/link")
async def link(request: Request, snapshot_id: int, user: SignedInDep) -> Response:
    """The Download button: a fresh signed link, followed at once."""
    signed = await user.console.snapshot_link(snapshot_id)
    return redirect(request, signed.url)


@router.get("/snapshots/{snapshot_id}/download")
async def download(
    request: Request, snapshot_id: int, expires: int, sig: str, user: SignedInDep
) -> Response:
    try:
        snapshot = await user.console.get_snapshot(snapshot_id)
        archive = await user.console.download_snapshot(snapshot_id, expires, sig)
    except ConsoleError as error:
        if error.status not in (403, 410):  # 404s and the rest: the app's error pages
            raise
        context = {"title": "Download refused", "text": sentence(error.detail), "retry_url": None}
        return render(request, "message.html", context, status=error.status)
    filename = f"{snapshot.instance_name}-{snapshot.id}.dfe.tar"
    return Response(
        archive,
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _job_context(user: SignedIn, job_id: int) -> dict[str, Any]:
    job = await user.console.get_job(job_id)
    done = job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
    return {"job": job, "done": done, "poll_seconds": POLL_SECONDS}


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: int, user: SignedInDep) -> Response:
    return render(request, "job.html", await _job_context(user, job_id))


@router.get("/fragments/jobs/{job_id}")
async def job_fragment(request: Request, job_id: int, user: SignedInDep) -> Response:
    return render(request, "_job.html", await _job_context(user, job_id))
