"""Rate limits: for each instance of a cluster, for one instance, or for one instance key."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from dfe.enums import LimitScope, OwnerType
from dfe.models import AppKey, Cluster, Instance, Limit
from dfe.schemas import LimitCreate, LimitPublic, LimitUpdate
from dfe.services import audit
from dfe.services.base import flush_or_conflict, get_by_ref, snapshot
from dfe.services.errors import InvalidInput
from dfe.services.infrastructure import get_cluster
from dfe.services.instances import get_instance


def get_limit(session: Session, ref: str | int) -> Limit:
    return get_by_ref(session, Limit, ref, "limit", key="label")


def create_limit(session: Session, data: LimitCreate) -> Limit:
    targets = {
        LimitScope.CLUSTER: data.cluster,
        LimitScope.INSTANCE: data.instance,
        LimitScope.KEY: data.client_id,
    }
    if not targets[data.scope]:
        wanted = {"cluster": "cluster", "instance": "instance", "key": "client_id"}[data.scope]
        raise InvalidInput(f"a {data.scope.value} limit needs {wanted}")
    if any(value for scope, value in targets.items() if scope is not data.scope):
        raise InvalidInput(f"a {data.scope.value} limit names only its own target")
    limit = Limit(
        label=data.label,
        scope=data.scope,
        period=data.period,
        max_requests=data.max_requests,
        is_active=data.is_active,
    )
    if data.scope is LimitScope.CLUSTER:
        limit.cluster_id = get_cluster(session, data.cluster or "").id
    elif data.scope is LimitScope.INSTANCE:
        limit.instance_id = get_instance(session, data.instance or "").id
    else:
        key = session.scalar(select(AppKey).where(AppKey.client_id == data.client_id))
        if key is None or key.owner_type is not OwnerType.INSTANCE:
            raise InvalidInput(f"'{data.client_id}' is not an instance's key")
        limit.instance_id, limit.client_id = key.instance_id, key.client_id
    session.add(limit)
    flush_or_conflict(session, f"a limit labelled '{data.label}' already exists")
    audit.record(session, "limit.create", "limit", limit.id, limit.label, after=snapshot(limit))
    return limit


def update_limit(session: Session, ref: str | int, data: LimitUpdate) -> Limit:
    limit = get_limit(session, ref)
    before = snapshot(limit)
    for field, value in data.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(limit, field, value)
    session.flush()
    audit.record(session, "limit.update", "limit", limit.id, limit.label, before, snapshot(limit))
    return limit


def delete_limit(session: Session, ref: str | int) -> None:
    limit = get_limit(session, ref)
    audit.record(session, "limit.delete", "limit", limit.id, limit.label, before=snapshot(limit))
    session.delete(limit)
    session.flush()


def limit_publics(session: Session, limits: Sequence[Limit]) -> list[LimitPublic]:
    cluster_ids = {limit.cluster_id for limit in limits if limit.cluster_id}
    instance_ids = {limit.instance_id for limit in limits if limit.instance_id}
    clusters = dict(
        session.execute(select(Cluster.id, Cluster.name).where(Cluster.id.in_(cluster_ids))).all()
    )
    instances = dict(
        session.execute(
            select(Instance.id, Instance.name).where(Instance.id.in_(instance_ids))
        ).all()
    )
    return [
        LimitPublic(
            id=limit.id,
            label=limit.label,
            scope=limit.scope,
            cluster=clusters.get(limit.cluster_id) if limit.cluster_id else None,
            instance=instances.get(limit.instance_id) if limit.instance_id else None,
            client_id=limit.client_id,
            period=limit.period,
            max_requests=limit.max_requests,
            is_active=limit.is_active,
            created_at=limit.created_at,
            updated_at=limit.updated_at,
        )
        for limit in limits
    ]
