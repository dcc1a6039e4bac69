"""Clusters, servers and mounts, and which servers are in which cluster."""

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select

from dfe.auth.permissions import Action
from dfe.console.api.crud import ListResponse, Resource, crud_router
from dfe.console.api.deps import SessionDep, requires
from dfe.models import Cluster, Mount, Server
from dfe.schemas import (
    ClusterCreate,
    ClusterPublic,
    ClusterUpdate,
    MountCreate,
    MountPublic,
    MountUpdate,
    ServerCreate,
    ServerPublic,
    ServerUpdate,
)
from dfe.services import infrastructure as estate

mounts = Resource(
    path="mounts",
    noun="mount",
    public=MountPublic,
    create_schema=MountCreate,
    update_schema=MountUpdate,
    query=lambda: select(Mount),
    to_public=lambda _session, rows: [estate.mount_public(row) for row in rows],
    get=estate.get_mount,
    create=estate.create_mount,
    update=estate.update_mount,
    delete=estate.delete_mount,
    read=Action.ESTATE_READ,
    write=Action.ESTATE_WRITE,
    sortable={"name": Mount.name, "created_at": Mount.created_at},
    searchable=[Mount.name, Mount.root_path],
    default_sort="name",
    tie_breaker=Mount.id,
)

servers = Resource(
    path="servers",
    noun="server",
    public=ServerPublic,
    create_schema=ServerCreate,
    update_schema=ServerUpdate,
    query=lambda: select(Server),
    to_public=lambda _session, rows: [estate.server_public(row) for row in rows],
    get=estate.get_server,
    create=estate.create_server,
    update=estate.update_server,
    delete=estate.delete_server,
    read=Action.ESTATE_READ,
    write=Action.ESTATE_WRITE,
    sortable={
        "name": Server.name,
        "server_type": Server.server_type,
        "host": Server.host,
        "created_at": Server.created_at,
    },
    searchable=[Server.name, Server.host],
    default_sort="name",
    tie_breaker=Server.id,
)

clusters = Resource(
    path="clusters",
    noun="cluster",
    public=ClusterPublic,
    create_schema=ClusterCreate,
    update_schema=ClusterUpdate,
    query=lambda: select(Cluster),
    to_public=estate.cluster_publics,
    get=estate.get_cluster,
    create=estate.create_cluster,
    update=estate.update_cluster,
    delete=estate.delete_cluster,
    read=Action.ESTATE_READ,
    write=Action.ESTATE_WRITE,
    sortable={
        "name": Cluster.name,
        "subdomain": Cluster.subdomain,
        "created_at": Cluster.created_at,
    },
    searchable=[Cluster.name, Cluster.subdomain],
    default_sort="name",
    tie_breaker=Cluster.id,
)

membership = APIRouter(prefix="/clusters", tags=["clusters"])


@membership.get(
    "/{cluster}/servers", response_model=ListResponse[ServerPublic], summary="A cluster's servers"
)
def cluster_servers(
    cluster: str, session: SessionDep, _: Any = requires(Action.ESTATE_READ)
) -> Any:
    rows = estate.cluster_servers(session, estate.get_cluster(session, cluster))
    return ListResponse[ServerPublic](
        items=[estate.server_public(row) for row in rows], total=len(rows), next_cursor=None
    )


@membership.put("/{cluster}/servers/{server}", status_code=204, summary="Put a server in a cluster")
def assign(
    cluster: str, server: str, session: SessionDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    estate.assign_server(session, cluster, server, exist_ok=True)
    session.commit()
    return Response(status_code=204)


@membership.delete(
    "/{cluster}/servers/{server}", status_code=204, summary="Take a server out of a cluster"
)
def unassign(
    cluster: str, server: str, session: SessionDep, _: Any = requires(Action.ESTATE_WRITE)
) -> Response:
    estate.unassign_server(session, cluster, server)
    session.commit()
    return Response(status_code=204)


routers = [crud_router(mounts), crud_router(servers), crud_router(clusters), membership]
