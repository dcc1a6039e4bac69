"""Rate limits: for each instance of a cluster, for one instance, or for one instance key.

The Console stores them; the web tier enforces them (`dfe.host.limiter`), from the
instance configs it fetches. Every change here touches the instances a limit
applies to, so the change feed names them and the web tier refetches their
configs within a poll. A reset raises the limit's `reset_generation`, which is
part of every counter's key: in-memory and Redis counters alike start from zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from dfe.db.base import utcnow
from dfe.enums import LimitScope, OwnerType
from dfe.models import AppKey, Cluster, Instance, Limit
from dfe.schemas import InstanceLimit, LimitCreate, LimitPublic, LimitUpdate
from dfe.services import audit
from dfe.services.base import flush_or_conflict, get_by_ref, snapshot
from dfe.services.errors import InvalidInput
from dfe.services.infrastructure import get_cluster
from dfe.services.instances import get_instance

log = structlog.get_logger("dfe.limits")


def counter_prefix(namespace: str) -> str:
    """What every rate-limit counter's Redis key starts with:
    `<namespace>:rl:<limit id>:<generation>:<subject>:<window>`."""
    return f"{namespace}:rl:"


def get_limit(session: Session, ref: str | int) -> Limit:
    return get_by_ref(session, Limit, ref, "limit", key="label")


def list_limits(session: Session) -> list[Limit]:
    return list(session.scalars(select(Limit).order_by(Limit.id)))


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
    touch_instances(session, limit)
    return limit


def update_limit(session: Session, ref: str | int, data: LimitUpdate) -> Limit:
    limit = get_limit(session, ref)
    before = snapshot(limit)
    for field, value in data.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(limit, field, value)
    session.flush()
    audit.record(session, "limit.update", "limit", limit.id, limit.label, before, snapshot(limit))
    touch_instances(session, limit)
    return limit


def delete_limit(session: Session, ref: str | int) -> None:
    limit = get_limit(session, ref)
    audit.record(session, "limit.delete", "limit", limit.id, limit.label, before=snapshot(limit))
    touch_instances(session, limit)
    session.delete(limit)
    session.flush()


def reset_limits(
    session: Session,
    refs: Sequence[str | int],
    redis_url: str | None = None,
    namespace: str = "dfe",
) -> list[Limit]:
    """Start the counters of these limits from zero, in every web-tier process.

    Raising the generation is what works everywhere (memory counters of remote
    processes included, once the feed has carried the new config); with Redis the
    old counters are deleted too, so they do not wait for their expiry.
    """
    found = [get_limit(session, ref) for ref in refs]
    for limit in found:
        limit.reset_generation += 1
        session.flush()
        audit.record(session, "limit.reset", "limit", limit.id, limit.label)
        touch_instances(session, limit)
    if redis_url:
        delete_redis_counters(redis_url, namespace, [limit.id for limit in found])
    return found


def delete_redis_counters(redis_url: str, namespace: str, limit_ids: Sequence[int]) -> None:
    """Delete the Redis counters of these limits (best effort: the generation already
    made them unused)."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            for limit_id in limit_ids:
                pattern = f"{counter_prefix(namespace)}{limit_id}:*"
                batch = list(client.scan_iter(match=pattern, count=1000))
                for start in range(0, len(batch), 1000):
                    client.delete(*batch[start : start + 1000])
        finally:
            client.close()
    except redis.RedisError as error:
        log.warning("rate-limit counters not deleted", error=type(error).__name__)


def touch_instances(session: Session, limit: Limit) -> None:
    """Mark the instances a limit applies to as changed, so the change feed names them."""
    if limit.scope is LimitScope.CLUSTER:
        where = Instance.cluster_id == limit.cluster_id
    else:
        where = Instance.id == limit.instance_id
    session.execute(
        update(Instance).where(where).values(updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )


def limits_for_instance(session: Session, instance: Instance) -> list[InstanceLimit]:
    """The active limits that apply to an instance, as its config carries them."""
    rows = session.scalars(
        select(Limit)
        .where(
            Limit.is_active.is_(True),
            or_(
                (Limit.scope == LimitScope.CLUSTER) & (Limit.cluster_id == instance.cluster_id),
                (Limit.scope != LimitScope.CLUSTER) & (Limit.instance_id == instance.id),
            ),
        )
        .order_by(Limit.id)
    )
    return [
        InstanceLimit(
            id=limit.id,
            label=limit.label,
            scope=limit.scope,
            period=limit.period,
            max_requests=limit.max_requests,
            client_id=limit.client_id,
            generation=limit.reset_generation,
        )
        for limit in rows
    ]


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
