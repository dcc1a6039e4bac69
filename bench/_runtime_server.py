"""The instance runtime on its own, for the benchmarks: `python bench/_runtime_server.py
PORT CONFIG_JSON` serves the one instance whose `InstanceConfig` is in the file,
without the web tier (no Host lookup, no Console, no cache)."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from dfe.host.runtime import InstanceContext, bind, create_runtime_app
from dfe.schemas import InstanceConfig


def main() -> None:
    port, config_file = int(sys.argv[1]), Path(sys.argv[2])
    config = InstanceConfig.model_validate_json(config_file.read_text())
    context = InstanceContext.from_config(config, max_upload_bytes=32 * 1024 * 1024)
    app = bind(create_runtime_app(), context)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
