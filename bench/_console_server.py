"""A Console for the benchmarks: `python bench/_console_server.py PORT [--bypass] [--workers=N]`.

With --bypass the signature check is replaced by a fixed administrator, so the
same endpoint can be measured with and without request authentication.
"""

from __future__ import annotations

import sys

import uvicorn

from dfe.auth.principals import Principal
from dfe.config import get_settings
from dfe.console.api.deps import authenticate
from dfe.console.app import create_app
from dfe.enums import OwnerType


def main() -> None:
    port = int(sys.argv[1])
    workers = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--workers=")), 1)
    if workers > 1:  # as `dfe serve console --workers N` runs it
        uvicorn.run(
            "dfe.console.app:create_app",
            factory=True,
            host="127.0.0.1",
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
        )
        return
    app = create_app(get_settings())
    if "--bypass" in sys.argv:
        app.dependency_overrides[authenticate] = lambda: Principal(
            client_id="bypass", key_owner=OwnerType.CONSOLE
        )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
