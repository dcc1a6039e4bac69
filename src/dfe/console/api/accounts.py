"""A user's own password: reset by mail (through the Dashboard's key) and change."""

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks

from dfe.auth.permissions import Action
from dfe.auth.principals import Principal
from dfe.console.api.deps import SessionDep, SettingsDep, requires
from dfe.console.api.people import LoginResponse
from dfe.schemas import (
    PasswordChange,
    PasswordResetAccepted,
    PasswordResetConfirm,
    PasswordResetRequest,
    UserPublic,
)
from dfe.services import accounts
from dfe.services.errors import NotFound

router = APIRouter(tags=["users"])


@router.post(
    "/password-resets",
    response_model=PasswordResetAccepted,
    status_code=202,
    summary="Mail a password reset link (the same answer whether or not the account exists)",
)
def request_password_reset(
    data: PasswordResetRequest,
    session: SessionDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    _principal: Annotated[Principal, requires(Action.RESET_PASSWORD)],
) -> Any:
    mail = accounts.request_reset(session, settings, data.email, data.address)
    session.commit()
    if mail is not None:
        # After the answer: known and unknown emails take the same time to answer.
        background.add_task(accounts.send_reset_mail, settings, mail)
    return PasswordResetAccepted(detail=accounts.RESET_ACCEPTED)


@router.post(
    "/password-resets/confirm",
    response_model=UserPublic,
    summary="Set a new password with a reset link's token (once; every session ends)",
)
def confirm_password_reset(
    data: PasswordResetConfirm,
    session: SessionDep,
    _principal: Annotated[Principal, requires(Action.RESET_PASSWORD)],
) -> Any:
    user = accounts.confirm_reset(
        session, data.token.get_secret_value(), data.password.get_secret_value()
    )
    session.commit()
    return UserPublic.model_validate(user)


@router.post(
    "/account/password",
    response_model=LoginResponse,
    summary="Change the acting user's password; a new token (every other session ends)",
)
def change_password(
    data: PasswordChange,
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, requires(Action.OWN_ACCOUNT)],
) -> Any:
    if principal.user_id is None:
        raise NotFound("this key acts for no user, so it has no password")
    login = accounts.change_password(
        session,
        settings,
        principal.user_id,
        data.current_password.get_secret_value(),
        data.password.get_secret_value(),
        data.address,
        principal.client_id,
    )
    session.commit()
    return LoginResponse(
        user=UserPublic.model_validate(login.user), token=login.token, expires_at=login.expires_at
    )
