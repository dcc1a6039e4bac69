"""One router factory for the plain resources: list, create, show, change, delete.

A resource is mostly declarations (NetBox style): its schemas, its service
functions, the actions that guard reads and writes, and which fields sort and
search. (No `from __future__ import annotations` here: FastAPI must see the
schema classes bound in the closures.)
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import Session

from dfe.auth.permissions import Action
from dfe.console.api.deps import SessionDep, list_query, requires
from dfe.services.listing import Field, ListQuery, paginate

T = TypeVar("T")


class ListResponse(BaseModel, Generic[T]):
    items: list[T]
    total: int
    next_cursor: str | None


@dataclass
class Resource:
    """How the API exposes one kind of thing."""

    path: str  # e.g. "clusters"
    noun: str  # e.g. "cluster", for the OpenAPI summaries
    public: type[BaseModel]
    create_schema: type[BaseModel]
    update_schema: type[BaseModel]
    query: Callable[[], Select[Any]]
    to_public: Callable[[Session, Sequence[Any]], list[Any]]
    get: Callable[[Session, str], Any]
    create: Callable[[Session, Any], Any] | None
    update: Callable[[Session, str, Any], Any]
    delete: Callable[[Session, str], None]
    read: Action
    write: Action
    sortable: Mapping[str, Field] = field(default_factory=dict)
    searchable: Sequence[Field] = ()
    default_sort: str = "name"
    tie_breaker: Field | None = None


def crud_router(resource: Resource) -> APIRouter:
    router = APIRouter(prefix=f"/{resource.path}", tags=[resource.path])
    public = resource.public
    create_schema, update_schema = resource.create_schema, resource.update_schema

    @router.get("", response_model=ListResponse[public], summary=f"List {resource.path}")  # type: ignore[valid-type]
    def list_all(
        session: SessionDep,
        query: ListQuery = list_query(resource.sortable),
        _: Any = requires(resource.read),
    ) -> Any:
        page = paginate(
            session,
            resource.query(),
            query,
            sortable=resource.sortable,
            searchable=resource.searchable,
            default_sort=resource.default_sort,
            tie_breaker=resource.tie_breaker,
        )
        return ListResponse[public](  # type: ignore[valid-type]
            items=resource.to_public(session, page.items),
            total=page.total,
            next_cursor=page.next_cursor,
        )

    def create(
        data: create_schema,  # type: ignore[valid-type]
        session: SessionDep,
        _: Any = requires(resource.write),
    ) -> Any:
        assert resource.create is not None
        row = resource.create(session, data)
        session.commit()
        return resource.to_public(session, [row])[0]

    if resource.create is not None:
        router.post(
            "", response_model=public, status_code=201, summary=f"Create a {resource.noun}"
        )(create)

    @router.get("/{ref}", response_model=public, summary=f"Show a {resource.noun}")
    def show(ref: str, session: SessionDep, _: Any = requires(resource.read)) -> Any:
        return resource.to_public(session, [resource.get(session, ref)])[0]

    @router.patch("/{ref}", response_model=public, summary=f"Change a {resource.noun}")
    def change(
        ref: str,
        data: update_schema,  # type: ignore[valid-type]
        session: SessionDep,
        _: Any = requires(resource.write),
    ) -> Any:
        row = resource.update(session, ref, data)
        session.commit()
        return resource.to_public(session, [row])[0]

    @router.delete("/{ref}", status_code=204, summary=f"Delete a {resource.noun}")
    def remove(ref: str, session: SessionDep, _: Any = requires(resource.write)) -> Response:
        resource.delete(session, ref)
        session.commit()
        return Response(status_code=204)

    return router
