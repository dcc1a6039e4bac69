"""Paged, sorted, searched lists: one way for every collection the API and UI show."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import QueryableAttribute, Session

from dfe.services.errors import InvalidInput

T = TypeVar("T")
MAX_LIMIT = 500
# A column to sort or search by: a mapped attribute or any column expression.
Field = ColumnElement[Any] | QueryableAttribute[Any]


@dataclass
class Page(Generic[T]):
    items: list[T]
    total: int
    next_cursor: str | None


@dataclass(frozen=True)
class ListQuery:
    """What a caller asked for: `sort` is a field name, '-' first for descending."""

    q: str | None = None
    sort: str | None = None
    limit: int = 50
    cursor: str | None = None


def offset_of(cursor: str | None) -> int:
    """Cursors are offsets into the sorted list, as decimal digits."""
    if not cursor:
        return 0
    if not cursor.isdigit():
        raise InvalidInput("cursor: not a cursor this API returned")
    return int(cursor)


def cursor_for(offset: int) -> str:
    return str(offset)


def next_cursor(offset: int, returned: int, total: int) -> str | None:
    following = offset + returned
    return cursor_for(following) if following < total else None


def paginate(
    session: Session,
    query: Select[Any],
    request: ListQuery,
    *,
    sortable: Mapping[str, Field],
    searchable: Sequence[Field],
    default_sort: str,
    tie_breaker: Field | None,
) -> Page[Any]:
    """Run `query` (selecting one entity) with search, sort and paging applied."""
    if not 1 <= request.limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: must be between 1 and {MAX_LIMIT}")
    if request.q:
        escaped = request.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        query = query.where(
            or_(*(func.lower(column).like(pattern, escape="\\") for column in searchable))
        )
    sort = request.sort or default_sort
    field = sort.removeprefix("-")
    if field not in sortable:
        raise InvalidInput(f"sort: must be one of {', '.join(sorted(sortable))}")
    column = sortable[field]
    ordering: list[Any] = [column.desc() if sort.startswith("-") else column.asc()]
    if tie_breaker is not None:
        ordering.append(tie_breaker)
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    offset = offset_of(request.cursor)
    rows = list(
        session.scalars(query.order_by(*ordering).offset(offset).limit(request.limit)).unique()
    )
    return Page(items=rows, total=total, next_cursor=next_cursor(offset, len(rows), total))
