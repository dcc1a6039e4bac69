"""`dfe mount|server|cluster ...`: the infrastructure instances are placed on."""

from __future__ import annotations

from typing import Annotated

import typer

from dfe.cli.backend import backend
from dfe.cli.common import (
    DfeGroup,
    JsonOption,
    YesOption,
    confirm,
    parse_json_option,
    print_record,
    print_table,
    stdout,
)
from dfe.models import ServerType
from dfe.schemas import (
    ClusterCreate,
    ClusterUpdate,
    MountCreate,
    MountUpdate,
    ServerCreate,
    ServerUpdate,
)

mounts = typer.Typer(cls=DfeGroup, help="Storage mounts.", no_args_is_help=True)
servers = typer.Typer(cls=DfeGroup, help="Database, web and app servers.", no_args_is_help=True)
clusters = typer.Typer(cls=DfeGroup, help="Clusters and their servers.", no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", help="JSON object, or @file.json.")
CapacityOption = typer.Option(None, "--capacity", help="Most instances it may hold.")

# Mounts

MOUNT_COLUMNS = ("name", "mount_type", "root_path", "created_at")


@mounts.command("create")
def mount_create(
    name: str,
    root: Annotated[str, typer.Option("--root", help="Absolute root path.")],
    config: str | None = ConfigOption,
) -> None:
    """Create a local storage mount."""
    data = MountCreate(
        name=name, root_path=root, config=parse_json_option(config, "--config") or {}
    )
    mount = backend().create_mount(data)
    stdout.print(f"created mount [bold]{mount.name}[/] at {mount.root_path}")


@mounts.command("list")
def mount_list(as_json: bool = JsonOption) -> None:
    """List mounts."""
    print_table(backend().list_mounts(), MOUNT_COLUMNS, as_json=as_json, title="Mounts")


@mounts.command("show")
def mount_show(name: str, as_json: bool = JsonOption) -> None:
    """Show one mount."""
    print_record(backend().get_mount(name), as_json=as_json)


@mounts.command("update")
def mount_update(
    name: str,
    root: Annotated[str | None, typer.Option("--root")] = None,
    config: str | None = ConfigOption,
) -> None:
    """Change a mount's root path or config."""
    data = MountUpdate(root_path=root, config=parse_json_option(config, "--config"))
    mount = backend().update_mount(name, data)
    stdout.print(f"updated mount [bold]{mount.name}[/]")


@mounts.command("delete")
def mount_delete(name: str, yes: bool = YesOption) -> None:
    """Delete a mount no server uses."""
    confirm(f"Delete mount {name}?", yes)
    backend().delete_mount(name)
    stdout.print(f"deleted mount [bold]{name}[/]")


# Servers

SERVER_COLUMNS = ("name", "server_type", "host", "mount", "max_instances", "is_enabled")


@servers.command("create")
def server_create(
    name: str,
    server_type: Annotated[ServerType, typer.Option("--type", help="db, web or app.")],
    host: Annotated[str, typer.Option("--host")],
    mount: Annotated[str | None, typer.Option("--mount", help="Mount (web servers).")] = None,
    config: str | None = ConfigOption,
    capacity: int | None = CapacityOption,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
) -> None:
    """Create a server. A db server's --config names its driver and admin credentials."""
    data = ServerCreate(
        name=name,
        server_type=server_type,
        host=host,
        mount=mount,
        config=parse_json_option(config, "--config") or {},
        max_instances=capacity,
        is_enabled=not disabled,
    )
    server = backend().create_server(data)
    stdout.print(f"created {server.server_type.value} server [bold]{server.name}[/]")


@servers.command("list")
def server_list(
    server_type: Annotated[ServerType | None, typer.Option("--type")] = None,
    as_json: bool = JsonOption,
) -> None:
    """List servers (secrets in their config are masked)."""
    print_table(
        backend().list_servers(server_type), SERVER_COLUMNS, as_json=as_json, title="Servers"
    )


@servers.command("show")
def server_show(name: str, as_json: bool = JsonOption) -> None:
    """Show one server (secrets masked)."""
    print_record(backend().get_server(name), as_json=as_json)


@servers.command("update")
def server_update(
    name: str,
    host: Annotated[str | None, typer.Option("--host")] = None,
    mount: Annotated[str | None, typer.Option("--mount")] = None,
    config: str | None = ConfigOption,
    capacity: int | None = CapacityOption,
    enabled: Annotated[bool | None, typer.Option("--enable/--disable")] = None,
) -> None:
    """Change a server."""
    changes = {
        "host": host,
        "mount": mount,
        "config": parse_json_option(config, "--config"),
        "max_instances": capacity,
        "is_enabled": enabled,
    }
    data = ServerUpdate(**{key: value for key, value in changes.items() if value is not None})
    server = backend().update_server(name, data)
    stdout.print(f"updated server [bold]{server.name}[/]")


@servers.command("delete")
def server_delete(name: str, yes: bool = YesOption) -> None:
    """Archive a server that hosts no instance (restore with `dfe restore server`)."""
    confirm(f"Archive server {name}?", yes)
    backend().delete_server(name)
    stdout.print(f"archived server [bold]{name}[/]")


# Clusters

CLUSTER_COLUMNS = ("name", "subdomain", "max_instances", "servers", "created_at")


@clusters.command("create")
def cluster_create(
    name: str,
    subdomain: Annotated[str, typer.Option("--subdomain", help="DNS zone of instance hosts.")],
    capacity: int | None = CapacityOption,
) -> None:
    """Create a cluster."""
    data = ClusterCreate(name=name, subdomain=subdomain, max_instances=capacity)
    cluster = backend().create_cluster(data)
    stdout.print(f"created cluster [bold]{cluster.name}[/] (*.{cluster.subdomain})")


@clusters.command("list")
def cluster_list(as_json: bool = JsonOption) -> None:
    """List clusters with their servers."""
    print_table(backend().list_clusters(), CLUSTER_COLUMNS, as_json=as_json, title="Clusters")


@clusters.command("show")
def cluster_show(name: str, as_json: bool = JsonOption) -> None:
    """Show one cluster."""
    print_record(backend().get_cluster(name), as_json=as_json)


@clusters.command("update")
def cluster_update(
    name: str,
    subdomain: Annotated[str | None, typer.Option("--subdomain")] = None,
    capacity: int | None = CapacityOption,
) -> None:
    """Change a cluster."""
    changes = {"subdomain": subdomain, "max_instances": capacity}
    data = ClusterUpdate(**{key: value for key, value in changes.items() if value is not None})
    cluster = backend().update_cluster(name, data)
    stdout.print(f"updated cluster [bold]{cluster.name}[/]")


@clusters.command("delete")
def cluster_delete(name: str, yes: bool = YesOption) -> None:
    """Archive a cluster that has no instances (restore with `dfe restore cluster`)."""
    confirm(f"Archive cluster {name}?", yes)
    backend().delete_cluster(name)
    stdout.print(f"archived cluster [bold]{name}[/]")


@clusters.command("assign")
def cluster_assign(cluster: str, server: str) -> None:
    """Put a server in a cluster."""
    backend().assign_server(cluster, server)
    stdout.print(f"server [bold]{server}[/] is now in cluster [bold]{cluster}[/]")


@clusters.command("unassign")
def cluster_unassign(cluster: str, server: str) -> None:
    """Take a server out of a cluster (the membership is archived)."""
    backend().unassign_server(cluster, server)
    stdout.print(f"server [bold]{server}[/] left cluster [bold]{cluster}[/]")
