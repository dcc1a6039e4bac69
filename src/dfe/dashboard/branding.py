"""Branding: the product name, a logo and an extra stylesheet.

`DFE_DASHBOARD_LOGO` and `DFE_DASHBOARD_STYLESHEET` are each an http(s) URL (its
origin is then allowed by the content security policy) or a file the Dashboard
serves itself, at /branding/logo and /branding/style.css.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response

from dfe.config import Settings

router = APIRouter()

LOGO_PATH = "/branding/logo"
STYLESHEET_PATH = "/branding/style.css"


class BrandingError(ValueError):
    """A logo or stylesheet setting that names neither a URL nor a readable file."""


@dataclass(frozen=True)
class Asset:
    """One branding asset: the URL pages use, and the file behind it when served here."""

    url: str
    file: Path | None = None

    @property
    def origin(self) -> str | None:
        """The origin the security policy must allow (None: this Dashboard's own)."""
        if self.file is not None:
            return None
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class Branding:
    product_name: str
    logo: Asset | None = None
    stylesheet: Asset | None = None

    @staticmethod
    def origins(asset: Asset | None) -> tuple[str, ...]:
        """What the security policy must allow for `asset`, besides this Dashboard."""
        origin = asset.origin if asset is not None else None
        return (origin,) if origin else ()


def _asset(setting: str, value: str | None, served_at: str) -> Asset | None:
    if not value or not value.strip():
        return None
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme in ("http", "https"):
        if not parts.netloc:
            raise BrandingError(f"{setting}: {value!r} is a URL without a host")
        return Asset(value)
    path = Path(value).expanduser()
    if not path.is_file():
        raise BrandingError(f"{setting}: {value} is neither an http(s) URL nor a file")
    return Asset(served_at, path.resolve())


def branding_of(settings: Settings) -> Branding:
    return Branding(
        product_name=settings.dashboard_product_name,
        logo=_asset("DFE_DASHBOARD_LOGO", settings.dashboard_logo, LOGO_PATH),
        stylesheet=_asset(
            "DFE_DASHBOARD_STYLESHEET", settings.dashboard_stylesheet, STYLESHEET_PATH
        ),
    )


def _served(asset: Asset | None) -> Path:
    if asset is None or asset.file is None:
        raise HTTPException(404)
    return asset.file


@router.get(LOGO_PATH)
async def logo(request: Request) -> Response:
    path = _served(request.app.state.branding.logo)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type)


@router.get(STYLESHEET_PATH)
async def stylesheet(request: Request) -> Response:
    return FileResponse(_served(request.app.state.branding.stylesheet), media_type="text/css")
