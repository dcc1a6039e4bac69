"""Clusters (their servers, instances and capacity), servers (by type and load; enable,
disable, assign to clusters) and mounts."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select
from starlette.responses import Response

from dfe.auth.permissions import Action
from dfe.console.ui.pages.instances import INSTANCE_SORTS, nested_columns
from dfe.console.ui.web import (
    PREFIX,
    Column,
    DbDep,
    attempt,
    choice_param,
    confirm_page,
    confirmed,
    flash,
    form_of,
    redirect,
    render,
    requires,
    sentence,
    table,
)
from dfe.enums import ServerType
from dfe.models import Cluster, ClusterServer, Instance, Mount, Server
from dfe.schemas import ClusterCreate, MountCreate, ServerCreate, ServerUpdate
from dfe.services import infrastructure as estate
from dfe.services import instances
from dfe.services.errors import DfeError

router = APIRouter()


def _int_or_none(text: str) -> int | str | None:
    text = text.strip()
    return None if not text else (int(text) if text.isdigit() else text)


# Clusters

CLUSTER_COLUMNS = [
    Column("name", "Name", True),
    Column("subdomain", "Subdomain", True),
    Column("servers", "Servers"),
    Column("instance_count", "Instances", True),
    Column("capacity", "Capacity used"),
    Column("created_at", "Created", True),
]
CLUSTER_SORTS = {
    "name": Cluster.name,
    "subdomain": Cluster.subdomain,
    "instance_count": Cluster.instance_count,
    "created_at": Cluster.created_at,
}
CLUSTER_FIELDS = ("name", "subdomain", "max_instances")


def _clusters(
    request: Request, db: DbDep, form: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    listing, page = table(
        request,
        db,
        select(Cluster),
        CLUSTER_COLUMNS,
        sortable=CLUSTER_SORTS,
        searchable=[Cluster.name, Cluster.subdomain],
        default_sort="name",
        tie_breaker=Cluster.id,
    )
    servers = {public.id: public.servers for public in estate.cluster_publics(db, page.items)}
    return render(
        request,
        "clusters.html",
        {"t": listing, "servers": servers, "form": form, "errors": errors},
        status=status,
    )


@router.get("/clusters")
def cluster_list(request: Request, db: DbDep, _: Any = requires(Action.ESTATE_READ)) -> Response:
    return _clusters(request, db, dict.fromkeys(CLUSTER_FIELDS, ""), {})


@router.post("/clusters")
async def cluster_create(
    request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    posted = await form_of(request)
    form = {key: posted.get(key, "").strip() for key in CLUSTER_FIELDS}
    values = {**form, "max_instances": _int_or_none(form["max_instances"])}
    cluster, errors, status = attempt(db, ClusterCreate, values, estate.create_cluster)
    if cluster is None:
        return _clusters(request, db, form, errors, status)
    flash(request, f"Cluster {cluster.name} created.", "success")
    return redirect(request, f"{PREFIX}/clusters/{cluster.name}")


@router.get("/clusters/{name}")
def cluster_page(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_READ)
) -> Response:
    cluster = estate.get_cluster(db, name)
    members = estate.cluster_servers(db, cluster)
    member_ids = {server.id for server in members}
    others = [
        server
        for server in db.scalars(select(Server).order_by(Server.name))
        if server.id not in member_ids
    ]
    listing, page = table(
        request,
        db,
        select(Instance).where(Instance.cluster_id == cluster.id),
        nested_columns("Owner"),
        sortable=INSTANCE_SORTS,
        searchable=[Instance.name],
        default_sort="name",
        tie_breaker=Instance.id,
    )
    return render(
        request,
        "cluster.html",
        {
            "cluster": cluster,
            "members": members,
            "others": others,
            "t": listing,
            "rows": instances.instance_publics(db, page.items),
        },
    )


@router.post("/clusters/{name}/servers")
async def cluster_assign(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    server = (await form_of(request)).get("server", "").strip()
    try:
        estate.assign_server(db, name, server)
        db.commit()
        flash(request, f"Server {server} is in cluster {name} now.", "success")
    except DfeError as error:
        db.rollback()
        flash(request, sentence(error.message), "danger")
    return redirect(request, f"{PREFIX}/clusters/{name}")


@router.post("/clusters/{name}/servers/{server}/remove")
def cluster_unassign(
    name: str, server: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    try:
        estate.unassign_server(db, name, server)
        db.commit()
        flash(request, f"Server {server} is out of cluster {name}.", "success")
    except DfeError as error:
        db.rollback()
        flash(request, sentence(error.message), "danger")
    return redirect(request, f"{PREFIX}/clusters/{name}")


def _delete_page(
    request: Request, kind: str, name: str, path: str, error: str | None = None, status: int = 200
) -> Response:
    return confirm_page(
        request,
        title=f"Delete {kind} {name}",
        text=f"The {kind} goes to the archive, where an administrator can restore it.",
        typed=name,
        action=f"{PREFIX}/{path}/{name}/delete",
        back=f"{PREFIX}/{path}/{name}",
        error=error,
        status=status,
    )


async def _delete(
    request: Request, db: DbDep, kind: str, path: str, name: str, remove: Any
) -> Response:
    if not await confirmed(request, name):
        return _delete_page(request, kind, name, path, "The name you typed does not match.", 422)
    try:
        remove(db, name)
        db.commit()
    except DfeError as error:
        db.rollback()
        return _delete_page(request, kind, name, path, sentence(error.message), error.status)
    flash(request, f"{kind.capitalize()} {name} deleted.", "success")
    return redirect(request, f"{PREFIX}/{path}")


@router.get("/clusters/{name}/delete")
def cluster_delete_page(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    return _delete_page(request, "cluster", estate.get_cluster(db, name).name, "clusters")


@router.post("/clusters/{name}/delete")
async def cluster_delete(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    return await _delete(request, db, "cluster", "clusters", name, estate.delete_cluster)


# Servers

SERVER_COLUMNS = [
    Column("name", "Name", True),
    Column("server_type", "Type", True),
    Column("host", "Host", True),
    Column("mount", "Mount"),
    Column("instance_count", "Load", True),
    Column("is_enabled", "Enabled"),
]
SERVER_SORTS = {
    "name": Server.name,
    "server_type": Server.server_type,
    "host": Server.host,
    "instance_count": Server.instance_count,
}
SERVER_FIELDS = ("name", "server_type", "host", "mount", "max_instances", "config")


def _servers(
    request: Request, db: DbDep, form: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    kind = choice_param(request, "type", ServerType)
    query = select(Server)
    if kind:
        query = query.where(Server.server_type == ServerType(kind))
    listing, _page = table(
        request,
        db,
        query,
        SERVER_COLUMNS,
        sortable=SERVER_SORTS,
        searchable=[Server.name, Server.host],
        default_sort="name",
        tie_breaker=Server.id,
        filters={"type": kind},
    )
    mounts = list(db.scalars(select(Mount.name).order_by(Mount.name)))
    counts = dict(
        db.execute(select(Server.server_type, func.count()).group_by(Server.server_type)).all()
    )
    return render(
        request,
        "servers.html",
        {
            "t": listing,
            "kind": kind,
            "types": [value.value for value in ServerType],
            "counts": {str(key): value for key, value in counts.items()},
            "mounts": mounts,
            "form": form,
            "errors": errors,
        },
        status=status,
    )


@router.get("/servers")
def server_list(request: Request, db: DbDep, _: Any = requires(Action.ESTATE_READ)) -> Response:
    form = {**dict.fromkeys(SERVER_FIELDS, ""), "server_type": "db", "config": "{}"}
    return _servers(request, db, form, {})


@router.post("/servers")
async def server_create(
    request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    posted = await form_of(request)
    form = {key: posted.get(key, "").strip() for key in SERVER_FIELDS}
    try:
        config = json.loads(form["config"] or "{}")
    except ValueError:
        config = None
    if not isinstance(config, dict):
        return _servers(request, db, form, {"config": "Enter a JSON object, e.g. {}."}, 422)
    values = {
        **form,
        "mount": form["mount"] or None,
        "max_instances": _int_or_none(form["max_instances"]),
        "config": config,
    }
    server, errors, status = attempt(db, ServerCreate, values, estate.create_server)
    if server is None:
        return _servers(request, db, form, errors, status)
    flash(request, f"Server {server.name} created.", "success")
    return redirect(request, f"{PREFIX}/servers/{server.name}")


@router.get("/servers/{name}")
def server_page(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_READ)
) -> Response:
    server = estate.get_server(db, name)
    clusters = list(
        db.scalars(
            select(Cluster)
            .join(ClusterServer, ClusterServer.cluster_id == Cluster.id)
            .where(ClusterServer.server_id == server.id)
            .order_by(Cluster.name)
        )
    )
    member = {cluster.id for cluster in clusters}
    others = [c for c in db.scalars(select(Cluster).order_by(Cluster.name)) if c.id not in member]
    return render(
        request,
        "server.html",
        {
            "server": server,
            "public": estate.server_public(server),
            "config": json.dumps(estate.server_public(server).config, indent=2, default=str),
            "clusters": clusters,
            "others": others,
        },
    )


@router.post("/servers/{name}/enable")
def server_enable(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    return _set_enabled(request, db, name, True)


@router.post("/servers/{name}/disable")
def server_disable(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    return _set_enabled(request, db, name, False)


def _set_enabled(request: Request, db: DbDep, name: str, enabled: bool) -> Response:
    estate.update_server(db, name, ServerUpdate(is_enabled=enabled))
    db.commit()
    state = "enabled: new instances may be placed on it" if enabled else "disabled"
    flash(request, f"Server {name} is {state}.", "success")
    return redirect(request, f"{PREFIX}/servers/{name}")


@router.post("/servers/{name}/clusters")
async def server_assign(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    cluster = (await form_of(request)).get("cluster", "").strip()
    try:
        estate.assign_server(db, cluster, name)
        db.commit()
        flash(request, f"Server {name} is in cluster {cluster} now.", "success")
    except DfeError as error:
        db.rollback()
        flash(request, sentence(error.message), "danger")
    return redirect(request, f"{PREFIX}/servers/{name}")


@router.get("/servers/{name}/delete")
def server_delete_page(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    return _delete_page(request, "server", estate.get_server(db, name).name, "servers")


@router.post("/servers/{name}/delete")
async def server_delete(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    return await _delete(request, db, "server", "servers", name, estate.delete_server)


# Mounts

MOUNT_COLUMNS = [
    Column("name", "Name", True),
    Column("mount_type", "Type"),
    Column("root_path", "Root path", True),
    Column("created_at", "Created", True),
    Column("actions", ""),
]
MOUNT_SORTS = {"name": Mount.name, "root_path": Mount.root_path, "created_at": Mount.created_at}
MOUNT_FIELDS = ("name", "root_path")


def _mounts(
    request: Request, db: DbDep, form: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    listing, _page = table(
        request,
        db,
        select(Mount),
        MOUNT_COLUMNS,
        sortable=MOUNT_SORTS,
        searchable=[Mount.name, Mount.root_path],
        default_sort="name",
        tie_breaker=Mount.id,
    )
    return render(
        request, "mounts.html", {"t": listing, "form": form, "errors": errors}, status=status
    )


@router.get("/mounts")
def mount_list(request: Request, db: DbDep, _: Any = requires(Action.ESTATE_READ)) -> Response:
    return _mounts(request, db, dict.fromkeys(MOUNT_FIELDS, ""), {})


@router.post("/mounts")
async def mount_create(
    request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    posted = await form_of(request)
    form = {key: posted.get(key, "").strip() for key in MOUNT_FIELDS}
    mount, errors, status = attempt(db, MountCreate, dict(form), estate.create_mount)
    if mount is None:
        return _mounts(request, db, form, errors, status)
    flash(request, f"Mount {mount.name} created.", "success")
    return redirect(request, f"{PREFIX}/mounts")


@router.get("/mounts/{name}")
def mount_page(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_READ)
) -> Response:
    mount = estate.get_mount(db, name)
    servers = list(
        db.scalars(select(Server).where(Server.mount_id == mount.id).order_by(Server.name))
    )
    return render(request, "mount.html", {"mount": mount, "servers": servers})


@router.get("/mounts/{name}/delete")
def mount_delete_page(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    mount = estate.get_mount(db, name)
    return confirm_page(
        request,
        title=f"Delete mount {mount.name}",
        text="The mount's record is deleted (its files are not touched).",
        typed=mount.name,
        action=f"{PREFIX}/mounts/{mount.name}/delete",
        back=f"{PREFIX}/mounts/{mount.name}",
    )


@router.post("/mounts/{name}/delete")
async def mount_delete(
    name: str, request: Request, db: DbDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    return await _delete(request, db, "mount", "mounts", name, estate.delete_mount)
