"""A Console process for the benchmarks: `python bench/_console_server.py PORT [--bypass]`.

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
    app = create_app(get_settings())
    if "--bypass" in sys.argv:
        app.dependency_overrides[authenticate] = lambda: Principal(
            client_id="bypass", key_owner=OwnerType.CONSOLE
        )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
