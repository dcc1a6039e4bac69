"""Users (registration, logins, their own account) and service users."""

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy import select

from dfe.auth.permissions import Action
from dfe.auth.principals import Principal
from dfe.console.api.crud import Resource, crud_router
from dfe.console.api.deps import SessionDep, SettingsDep, requires
from dfe.models import ServiceUser, User
from dfe.schemas import (
    ServiceUserCreate,
    ServiceUserPublic,
    ServiceUserUpdate,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from dfe.services import identity, logins
from dfe.services.errors import Forbidden, NotFound

users = Resource(
    path="users",
    noun="user",
    public=UserPublic,
    create_schema=UserCreate,
    update_schema=UserUpdate,
    query=lambda: select(User),
    to_public=lambda _session, rows: [UserPublic.model_validate(row) for row in rows],
    get=identity.get_user,
    create=None,  # registration is its own route: the Dashboard may register users too
    update=identity.update_user,
    delete=identity.delete_user,
    read=Action.PEOPLE_READ,
    write=Action.PEOPLE_WRITE,
    sortable={"email": User.email, "created_at": User.created_at, "last_name": User.last_name},
    searchable=[User.email, User.first_name, User.last_name],
    default_sort="email",
    tie_breaker=User.id,
)

service_users = Resource(
    path="service-users",
    noun="service user",
    public=ServiceUserPublic,
    create_schema=ServiceUserCreate,
    update_schema=ServiceUserUpdate,
    query=lambda: select(ServiceUser),
    to_public=lambda _session, rows: [ServiceUserPublic.model_validate(row) for row in rows],
    get=identity.get_service_user,
    create=identity.create_service_user,
    update=identity.update_service_user,
    delete=identity.delete_service_user,
    read=Action.PEOPLE_READ,
    write=Action.PEOPLE_WRITE,
    sortable={"email": ServiceUser.email, "created_at": ServiceUser.created_at},
    searchable=[ServiceUser.email, ServiceUser.first_name, ServiceUser.last_name],
    default_sort="email",
    tie_breaker=ServiceUser.id,
)


class LoginRequest(BaseModel):
    email: str = Field(min_length=3, max_length=192)
    password: SecretStr = Field(min_length=1, max_length=1024)
    address: str | None = Field(
        default=None, max_length=64, description="The end user's IP address, for throttling."
    )


class LoginResponse(BaseModel):
    user: UserPublic
    token: str = Field(description="Send as DFE-User-Token, under the same key's signature.")
    expires_at: int


accounts = APIRouter(tags=["users"])


@accounts.post("/logins", response_model=LoginResponse, summary="Check a user's password")
def check_login(
    data: LoginRequest,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, requires(Action.CHECK_LOGIN)],
) -> Any:
    login = logins.check_login(
        session,
        settings,
        data.email,
        data.password.get_secret_value(),
        data.address,
        principal.client_id,
    )
    session.commit()
    return LoginResponse(
        user=UserPublic.model_validate(login.user), token=login.token, expires_at=login.expires_at
    )


@accounts.get("/account", response_model=UserPublic, summary="The acting user's own account")
def own_account(
    session: SessionDep, principal: Annotated[Principal, requires(Action.OWN_ACCOUNT)]
) -> Any:
    if principal.user_id is None:
        raise NotFound("this key acts for no user, so it has no account")
    return UserPublic.model_validate(identity.get_user(session, principal.user_id))


@accounts.post("/users", response_model=UserPublic, status_code=201, summary="Register a user")
def register_user(
    data: UserCreate,
    session: SessionDep,
    principal: Annotated[Principal, requires(Action.REGISTER_USER)],
) -> Any:
    if not principal.is_administrator and (data.is_admin or not data.is_active):
        raise Forbidden("only administrators may register administrators or inactive users")
    user = identity.create_user(session, data)
    session.commit()
    return UserPublic.model_validate(user)


routers = [accounts, crud_router(users), crud_router(service_users)]
