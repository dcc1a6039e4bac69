"""`dfe --remote URL ...`: the admin commands through a real Console, on each engine.

Each test serves the Console (uvicorn on a free loopback port, in a thread) on
the test database, runs `dfe setup` locally for its console.key, and drives the
same scenarios as test_cli.py through the API; what both modes print for the
same data must be the same.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from dfe.cli.main import app
from dfe.config import Settings
from dfe.console.app import create_app
from dfe.db.session import Database

PASSWORD = "a-long-enough-password"
ADMIN = "root@example.com"


class Console:
    """The Console served on the test database."""

    def __init__(self, db: Database, data_dir: Path) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(Settings(data_dir=data_dir), db),
            log_level="warning",
            ws="none",
            lifespan="on",
        )
        self._listener = listener
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert self._thread.is_alive(), "the Console did not start"
            assert time.monotonic() < deadline, "the Console did not start in time"
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
        self._listener.close()


@pytest.fixture
def console(db: Database, cli_env: dict[str, str]) -> Iterator[Console]:
    served = Console(db, Path(cli_env["DFE_DATA_DIR"]))
    try:
        yield served
    finally:
        served.stop()


Run = Callable[..., str]


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture
def invoke(cli_env: dict[str, str], password_file: Path) -> Callable[..., Result]:
    runner = CliRunner()

    def run(*args: str) -> Result:
        argv = [a.replace("@PASSWORD_FILE", str(password_file)) for a in args]
        return runner.invoke(app, argv, catch_exceptions=False)

    return run


@pytest.fixture
def local(invoke: Callable[..., Result]) -> Run:
    """`dfe ...` on this machine's database."""

    def run(*args: str, expect: int = 0) -> str:
        result = invoke(*args)
        assert result.exit_code == expect, result.output
        return result.output

    return run


@pytest.fixture
def dfe(
    console: Console, local: Run, invoke: Callable[..., Result], cli_env: dict[str, str]
) -> Run:
    """`dfe --remote URL ...` after a local `dfe setup` (its console.key signs)."""
    local("setup", "--email", ADMIN, "--password-file", "@PASSWORD_FILE", "--local-cluster")
    key = json.loads((Path(cli_env["DFE_DATA_DIR"]) / "console.key").read_text())

    def run(*args: str, expect: int = 0) -> str:
        result = invoke("--remote", console.url, *args)
        assert result.exit_code == expect, result.output
        assert key["client_secret"] not in result.output
        if expect == 2:
            assert result.stderr.startswith("error: "), result.stderr
            assert result.stderr.count("\n") == 1, result.stderr
            assert "Traceback" not in result.output
        return result.output

    return run


def _json(output: str):
    return json.loads(output)


def test_estate_verbs_and_json_listings(dfe, build_cli_estate):
    build_cli_estate(dfe)
    clusters = [c for c in _json(dfe("cluster", "list", "--json")) if c["name"] != "local"]
    assert [c["name"] for c in clusters] == ["east"]
    assert clusters[0]["servers"] == ["app1", "db1", "web1"]
    servers = {s["name"]: s for s in _json(dfe("server", "list", "--json"))}
    assert servers["db1"]["config"]["admin_password"] == "********"
    assert servers["db1"]["config"]["port"] == 5432
    assert servers["web1"]["mount"] == "disk1"
    web = [s["name"] for s in _json(dfe("server", "list", "--type", "web", "--json"))]
    assert web == ["local-web", "web1"]
    assert "s3cret-admin" not in dfe("server", "show", "db1")

    dfe("server", "update", "app1", "--disable", "--capacity", "9")
    app1 = _json(dfe("server", "show", "app1", "--json"))
    assert (app1["is_enabled"], app1["max_instances"]) == (False, 9)
    dfe("cluster", "update", "east", "--subdomain", "apps.example.org")
    assert _json(dfe("cluster", "show", "east", "--json"))["subdomain"] == "apps.example.org"

    dfe("cluster", "unassign", "east", "app1")
    assert _json(dfe("cluster", "show", "east", "--json"))["servers"] == ["db1", "web1"]
    dfe("mount", "update", "disk1", "--root", "/srv/disk2")
    assert _json(dfe("mount", "show", "disk1", "--json"))["root_path"] == "/srv/disk2"


def test_both_modes_print_the_same(dfe, local, build_cli_estate):
    build_cli_estate(dfe)
    dfe("user", "create", "ann@example.com", "--password-file", "@PASSWORD_FILE")
    dfe("cluster", "delete", "east", "--yes")
    dfe("cluster", "create", "east", "--subdomain", "again.example.com")
    for args in [
        ("cluster", "list"),
        ("cluster", "show", "local"),
        ("server", "list"),
        ("server", "list", "--type", "db"),
        ("server", "show", "db1"),
        ("mount", "list"),
        ("user", "list"),
        ("service-user", "show", ADMIN),
        ("key", "list", "--owner-type", "user", "--owner", "ann@example.com"),
        ("archive", "list", "cluster"),
        ("archive", "show", "cluster", "east"),
        ("audit", "--limit", "7"),
        ("audit", "--action", "cluster.assign", "--limit", "2"),
        ("job", "list"),
    ]:
        for as_json in ((), ("--json",)):
            # Remote first: its request may note the key's use, which the listing shows.
            remote = dfe(*args, *as_json)
            assert remote == local(*args, *as_json), args
    # Where the API lists by owner type only, the owner is resolved by name here.
    assert len(_json(dfe("key", "list", "--owner-type", "user", "--json"))) == 1
    assert "does not exist" in dfe(
        "key", "list", "--owner-type", "user", "--owner", "bob@example.com", expect=2
    )


def test_delete_archive_restore_round_trip(dfe, build_cli_estate):
    build_cli_estate(dfe)
    dfe("cluster", "delete", "east", "--yes")
    assert "east" not in [c["name"] for c in _json(dfe("cluster", "list", "--json"))]
    archived = _json(dfe("archive", "list", "cluster", "--json"))
    assert [a["name"] for a in archived] == ["east"]
    assert archived[0]["archived_by"].startswith("key:")  # the Console's key did it
    shown = dfe("archive", "show", "cluster", "east")
    assert "INSERT INTO cluster_t" in shown and "cluster_server_asgn_t" in shown

    dfe("cluster", "create", "east", "--subdomain", "again.example.com")
    error = dfe("restore", "cluster", "east", expect=2)
    assert "name is taken" in error
    dfe("cluster", "delete", "east", "--yes")
    assert "restored cluster east" in dfe("restore", "cluster", "east")
    restored = _json(dfe("cluster", "show", "east", "--json"))
    assert restored["subdomain"] == "again.example.com" and restored["servers"] == []
    dfe("archive", "restore", "cluster", "east", expect=2)
    actions = [e["action"] for e in _json(dfe("audit", "--target", "east", "--json"))]
    assert actions[:3] == ["cluster.restore", "cluster.delete", "cluster.create"]


def test_people_and_keys(dfe):
    dfe(
        "user",
        "create",
        "Ann@Example.com",
        "--password-file",
        "@PASSWORD_FILE",
        "--first-name",
        "Ann",
    )
    dfe(
        "service-user",
        "create",
        "ops@example.com",
        "--password-file",
        "@PASSWORD_FILE",
        "--role",
        "operator",
    )
    assert [u["email"] for u in _json(dfe("user", "list", "--json"))] == ["ann@example.com"]
    assert _json(dfe("service-user", "show", "ops@example.com", "--json"))["role"] == "operator"
    emails = [p["email"] for p in _json(dfe("service-user", "list", "--json"))]
    assert emails == ["ops@example.com", ADMIN]
    dfe("user", "update", "ann@example.com", "--deactivate", "--last-name", "Lee")
    ann = _json(dfe("user", "show", "ann@example.com", "--json"))
    assert (ann["is_active"], ann["last_name"]) == (False, "Lee")
    assert "password" not in json.dumps(ann)
    dfe("service-user", "update", "ops@example.com", "--role", "administrator")
    assert "administrator" in dfe("service-user", "show", "ops@example.com")

    user_keys = _json(dfe("key", "list", "--owner-type", "user", "--json"))
    assert len(user_keys) == 1 and "client_secret" not in user_keys[0]
    created = _json(
        dfe(
            "key",
            "create",
            "--owner-type",
            "user",
            "--owner",
            "ann@example.com",
            "--label",
            "laptop",
            "--expires-in-days",
            "30",
            "--json",
        )
    )
    assert len(created["client_secret"]) >= 43 and created["expires_at"] is not None
    listed = dfe("key", "list")
    assert created["client_id"] in listed and created["client_secret"] not in listed

    shown = dfe("key", "rotate", created["client_id"], "--grace-hours", "1")
    assert "client_secret:" in shown and "shown this once" in shown
    rotated = next(
        k
        for k in _json(dfe("key", "list", "--owner-type", "user", "--json"))
        if k["id"] > created["id"]
    )
    old = next(
        k for k in _json(dfe("key", "list", "--json")) if k["client_id"] == created["client_id"]
    )
    assert old["replaced_by_id"] == rotated["id"] and old["expires_at"] is not None
    assert "already been rotated" in dfe("key", "rotate", created["client_id"], expect=2)
    dfe("key", "revoke", rotated["client_id"], "--yes")
    assert rotated["client_id"] not in dfe("key", "list")

    dfe("user", "delete", "ann@example.com", "--yes")
    assert _json(dfe("key", "list", "--owner-type", "user", "--json")) == []
    dfe("service-user", "delete", "ops@example.com", "--yes")
    assert "ops@example.com" not in dfe("service-user", "list")


def test_api_problems_are_one_line(dfe, build_cli_estate):
    build_cli_estate(dfe)
    for args, message in [
        # 404
        (("cluster", "assign", "nope", "db1"), "cluster 'nope' does not exist"),
        (("mount", "delete", "ghost", "--yes"), "mount 'ghost' does not exist"),
        (("key", "revoke", "dfe_nope", "--yes"), "key 'dfe_nope' does not exist"),
        (("archive", "show", "server", "never-was"), "no archived server 'never-was'"),
        (("instance", "show", "nothing"), "instance 'nothing' does not exist"),
        (("job", "show", "987654321"), "job 987654321 does not exist"),
        (
            ("server", "create", "x", "--type", "web", "--host", "h", "--mount", "nope"),
            "mount 'nope' does not exist",
        ),
        # 409
        (
            ("server", "create", "DB1", "--type", "db", "--host", "h"),
            "a server named 'db1' already exists",
        ),
        (("cluster", "assign", "east", "db1"), "server 'db1' is already in cluster 'east'"),
        (("mount", "delete", "disk1", "--yes"), "mount 'disk1' is used by server(s) web1"),
        # 422
        (("key", "create", "--owner-type", "instance"), "a instance key needs an owner"),
        (
            ("key", "create", "--owner-type", "console", "--owner", "x"),
            "a console key belongs to the system and takes no owner",
        ),
        (("cluster", "unassign", "local", "db1"), "server 'db1' is not in cluster 'local'"),
        # refused before a request is made
        (("cluster", "create", "c", "--subdomain", "not a domain"), "subdomain: must be a DNS"),
        (("mount", "create", "m", "--root", "relative/path"), "root-path: must be an absolute"),
    ]:
        assert f"error: {message}" in dfe(*args, expect=2), args


def test_instances_and_jobs(dfe, local):
    dfe("user", "create", "ann@example.com", "--password-file", "@PASSWORD_FILE")
    output = dfe("instance", "provision", "shop", "--owner", "ann@example.com", "--wait")
    launch = re.search(r"instance shop \(shop\.localhost\) queued as job (\d+)", output)
    assert launch is not None, output
    job = launch.group(1)
    assert f"job {job} succeeded" in output
    shop = _json(dfe("instance", "show", "shop", "--json"))
    assert (shop["owner"], shop["provision_state"]) == ("ann@example.com", "provisioned")
    assert f"user '{ADMIN}' does not exist" in dfe("instance", "list", "--owner", ADMIN, expect=2)
    assert [i["name"] for i in _json(dfe("instance", "list", "--json"))] == ["shop"]
    mine = _json(dfe("instance", "list", "--owner", "ann@example.com", "--json"))
    assert [i["name"] for i in mine] == ["shop"]
    for args in [("instance", "list", "--json"), ("job", "list", "--json"), ("instance", "list")]:
        assert dfe(*args) == local(*args)
    followed = dfe("job", "show", job, "--wait")
    assert f"job {job} succeeded" in followed and "provision" in followed
    succeeded = _json(dfe("job", "list", "--status", "succeeded", "--json"))
    assert [j["id"] for j in succeeded] == [int(job)]
    assert _json(dfe("job", "list", "--status", "failed", "--json")) == []

    output = dfe("instance", "deprovision", "shop", "--yes", "--wait")
    removal = re.search(r"deprovisioning shop as job (\d+)", output)
    assert removal is not None, output
    assert f"job {removal.group(1)} succeeded" in output
    assert _json(dfe("instance", "show", "shop", "--json"))["archived"] is True
    assert _json(dfe("instance", "list", "--json")) == []
    newest = _json(dfe("job", "list", "--limit", "1", "--json"))
    assert [j["id"] for j in newest] == [int(removal.group(1))]
    removals = _json(dfe("job", "list", "--kind", "deprovision", "--json"))
    assert [j["id"] for j in removals] == [int(removal.group(1))]
    provisions = ("job", "list", "--kind", "provision", "--status", "succeeded", "--json")
    assert [j["id"] for j in _json(dfe(*provisions))] == [int(job)]
    assert dfe(*provisions) == local(*provisions)
    assert "user 'bob@example.com' does not exist" in dfe(
        "instance", "provision", "x", "--owner", "bob@example.com", expect=2
    )


def test_a_revoked_key_is_refused_naming_why(dfe, invoke, console, tmp_path):
    created = _json(
        dfe("key", "create", "--owner-type", "service_user", "--owner", ADMIN, "--json")
    )
    key_file = tmp_path / "ops.key"
    key_file.write_text(
        json.dumps({"client_id": created["client_id"], "client_secret": created["client_secret"]})
    )
    with_key = ("--remote", console.url, "--key-file", str(key_file))
    assert invoke(*with_key, "cluster", "list").exit_code == 0
    dfe("key", "revoke", created["client_id"], "--yes")

    result = invoke(*with_key, "cluster", "list")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: the Console refused the key: unknown, revoked or expired key (unknown_key)\n"
    )
    assert created["client_secret"] not in result.output


def test_a_stopped_console_cannot_be_reached(dfe, console):
    assert "local" in dfe("cluster", "list")
    console.stop()
    output = dfe("cluster", "list", expect=2)
    assert output.startswith(f"error: cannot reach the Console at {console.url}: ")
    assert "ConnectError" in output


def test_remote_mode_from_the_environment(dfe, invoke, console, monkeypatch):
    monkeypatch.setenv("DFE_REMOTE_URL", console.url)
    # The key file defaults to console.key in the data directory, as `dfe setup` wrote it.
    result = invoke("cluster", "create", "west", "--subdomain", "west.example.com")
    assert result.exit_code == 0, result.output
    entry = _json(dfe("audit", "--target", "west", "--json"))[0]
    assert entry["action"] == "cluster.create" and entry["actor"].startswith("key:")


@pytest.mark.parametrize(
    "command",
    [
        ("setup", "--email", ADMIN, "--password-file", "@PASSWORD_FILE"),
        ("db", "upgrade"),
        ("db", "check"),
        ("config", "show"),
        ("up",),
        ("serve", "console"),
        ("worker",),
        ("reconcile", "--fix"),
    ],
)
def test_local_only_commands_refuse_remote_mode(invoke, cli_env, command):
    result = invoke("--remote", "http://127.0.0.1:9", *command)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: `dfe {command[0]}` works on this machine only, not through a Console: "
        "drop --remote (and DFE_REMOTE_URL)\n"
    )
    assert not (Path(cli_env["DFE_DATA_DIR"]) / "console.key").exists()


def test_bad_remote_options(invoke, tmp_path):
    cases = [
        (("--remote", "console.example.com", "cluster", "list"), "--remote: must be an http"),
        (
            (
                "--remote",
                "http://127.0.0.1:9",
                "--key-file",
                str(tmp_path / "none"),
                "mount",
                "list",
            ),
            f"cannot read the key file {tmp_path / 'none'}: No such file or directory",
        ),
        (("--key-file", "x.key", "mount", "list"), "--key-file is for remote mode"),
    ]
    (tmp_path / "bad.key").write_text("{}")
    cases.append(
        (
            (
                "--remote",
                "http://127.0.0.1:9",
                "--key-file",
                str(tmp_path / "bad.key"),
                "user",
                "list",
            ),
            "the key file has no client_id or client_secret",
        )
    )
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr


def test_a_url_that_is_not_a_console(invoke, cli_env, tmp_path):
    class NotAConsole(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<h1>nothing here</h1>")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotAConsole)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    key_file = tmp_path / "some.key"
    key_file.write_text(json.dumps({"client_id": "dfe_x", "client_secret": "not-a-real-secret"}))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = invoke("--remote", url, "--key-file", str(key_file), "mount", "list")
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 2
    assert result.stderr == (
        "error: GET /api/v1/mounts got 404 Not Found, not an answer from a DFE Console: "
        "check the --remote URL\n"
    )


def test_limits_api_keys_and_metrics_in_both_modes(dfe, local):
    dfe("user", "create", "ann@example.com", "--password-file", "@PASSWORD_FILE")
    local("instance", "provision", "shop", "--owner", "ann@example.com")

    # The runtime API key: the same through the Console as from the database.
    remote_key = _json(dfe("instance", "api-key", "shop", "--json"))
    assert remote_key["name"] == "shop" and remote_key["api_key"].startswith("dfei_")
    assert _json(local("instance", "api-key", "shop", "--json")) == remote_key
    assert remote_key["api_key"] in local("instance", "api-key", "shop")
    assert dfe("instance", "api-key", "shop", "--quiet") == remote_key["api_key"] + "\n"
    assert "does not exist" in dfe("instance", "api-key", "nope", expect=2)

    created = _json(
        dfe("limit", "create", "shop-hourly", "--scope", "instance", "--instance", "shop",
            "--max", "100", "--per", "hour", "--json")
    )  # fmt: skip
    assert (created["instance"], created["max_requests"], created["period"]) == (
        "shop", 100, "hour",
    )  # fmt: skip
    local("limit", "create", "each", "--scope", "cluster", "--cluster", "local",
          "--max", "5000", "--per", "day")  # fmt: skip
    for args in [("limit", "list"), ("limit", "show", "each")]:
        for as_json in ((), ("--json",)):
            assert dfe(*args, *as_json) == local(*args, *as_json), args
    dfe("limit", "update", "shop-hourly", "--max", "50", "--inactive")
    updated = _json(local("limit", "show", "shop-hourly", "--json"))
    assert (updated["max_requests"], updated["is_active"]) == (50, False)
    assert "reset the counters of limit shop-hourly" in dfe("limit", "reset", "shop-hourly")
    assert "reset the counters of limit each" in local("limit", "reset", "each")
    actions = [entry["action"] for entry in _json(local("audit", "--json", "--limit", "50"))]
    assert actions.count("limit.reset") == 2
    assert "does not exist" in dfe("limit", "reset", "nope", expect=2)
    assert "a cluster limit needs cluster" in dfe(
        "limit", "create", "bad", "--scope", "cluster", "--max", "1", "--per", "minute", expect=2
    )
    dfe("limit", "delete", "each", "--yes")
    assert [limit["label"] for limit in _json(local("limit", "list", "--json"))] == ["shop-hourly"]

    # Usage: gathered on this machine, shown either way.
    gathered = _json(local("metrics", "gather", "--json"))
    assert gathered["instances"] == 1 and gathered["failures"] == []
    assert "works on this machine only" in dfe("metrics", "gather", expect=2)
    rows = _json(dfe("metrics", "show", "--json"))
    assert [(row["instance"], row["requests"]) for row in rows] == [("shop", 0)]
    assert rows[0]["database_bytes"] is not None
    assert dfe("metrics", "show", "--instance", "shop") == local(
        "metrics", "show", "--instance", "shop"
    )
    assert "not a date" in dfe("metrics", "show", "--since", "yesterday", expect=2)
