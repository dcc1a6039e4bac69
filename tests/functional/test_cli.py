"""The admin CLI end to end: every verb, JSON output, and one clear line for bad input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfe.cli.main import app

PASSWORD = "a-long-enough-password"


@pytest.fixture
def dfe(cli_env, tmp_path):
    runner = CliRunner()
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")

    def run(*args: str, expect: int = 0) -> str:
        argv = [a.replace("@PASSWORD_FILE", str(password_file)) for a in args]
        result = runner.invoke(app, argv, catch_exceptions=False)
        assert result.exit_code == expect, result.output
        return result.output

    return run


def _json(output: str):
    return json.loads(output)


def test_estate_verbs_and_json_listings(dfe, build_cli_estate):
    build_cli_estate(dfe)
    clusters = _json(dfe("cluster", "list", "--json"))
    assert [c["name"] for c in clusters] == ["east"]
    assert clusters[0]["servers"] == ["app1", "db1", "web1"]
    servers = {s["name"]: s for s in _json(dfe("server", "list", "--json"))}
    assert servers["db1"]["config"]["admin_password"] == "********"
    assert servers["db1"]["config"]["port"] == 5432
    assert servers["web1"]["mount"] == "disk1"
    assert [s["name"] for s in _json(dfe("server", "list", "--type", "web", "--json"))] == ["web1"]
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


def test_delete_archive_restore_round_trip(dfe, build_cli_estate):
    build_cli_estate(dfe)
    dfe("cluster", "delete", "east", "--yes")
    assert _json(dfe("cluster", "list", "--json")) == []
    archived = _json(dfe("archive", "list", "cluster", "--json"))
    assert [a["name"] for a in archived] == ["east"]
    assert archived[0]["archived_by"].startswith("cli:")
    shown = dfe("archive", "show", "cluster", "east")
    assert "INSERT INTO cluster_t" in shown and "cluster_server_asgn_t" in shown

    dfe("cluster", "create", "east", "--subdomain", "again.example.com")
    error = dfe("restore", "cluster", "east", expect=2)
    assert "name is taken" in error and "Traceback" not in error
    dfe("cluster", "delete", "east", "--yes")
    dfe("restore", "cluster", "east")
    restored = _json(dfe("cluster", "show", "east", "--json"))
    # The most recent batch comes back: the second cluster, which had no servers.
    assert restored["subdomain"] == "again.example.com" and restored["servers"] == []
    dfe("archive", "restore", "cluster", "east", expect=2)


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
    dfe("user", "update", "ann@example.com", "--deactivate", "--last-name", "Lee")
    ann = _json(dfe("user", "show", "ann@example.com", "--json"))
    assert (ann["is_active"], ann["last_name"]) == (False, "Lee")
    assert "password" not in json.dumps(ann)

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
            "--json",
        )
    )
    assert len(created["client_secret"]) >= 43
    listed = dfe("key", "list")
    assert created["client_id"] in listed and created["client_secret"] not in listed

    rotated = _json(dfe("key", "rotate", created["client_id"], "--grace-hours", "1", "--json"))
    assert rotated["client_id"] != created["client_id"]
    old = next(
        k for k in _json(dfe("key", "list", "--json")) if k["client_id"] == created["client_id"]
    )
    assert old["replaced_by_id"] == rotated["id"] and old["expires_at"] is not None
    dfe("key", "revoke", rotated["client_id"], "--yes")
    assert rotated["client_id"] not in dfe("key", "list")

    dfe("user", "delete", "ann@example.com", "--yes")
    assert _json(dfe("key", "list", "--owner-type", "user", "--json")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("server", "create", "x", "--type", "db", "--host", "bad host"), "host"),
        (
            ("server", "create", "x", "--type", "web", "--host", "h", "--mount", "nope"),
            "mount 'nope' does not exist",
        ),
        (("cluster", "create", "c", "--subdomain", "not a domain"), "subdomain"),
        (("cluster", "assign", "nope", "db1"), "cluster 'nope' does not exist"),
        (("user", "create", "not-an-email", "--password-file", "@PASSWORD_FILE"), "email"),
        (("mount", "create", "m", "--root", "relative/path"), "absolute path"),
        (
            ("server", "create", "x", "--type", "db", "--host", "h", "--config", "{oops"),
            "not valid JSON",
        ),
        (("key", "create", "--owner-type", "instance"), "needs an owner"),
        (("key", "revoke", "dfe_nope", "--yes"), "key 'dfe_nope' does not exist"),
        (("archive", "show", "server", "never-was"), "no archived server 'never-was'"),
        (("mount", "delete", "ghost", "--yes"), "mount 'ghost' does not exist"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_2(dfe, args, message):
    output = dfe(*args, expect=2)
    assert message in output
    assert "Traceback" not in output


def test_duplicates_and_in_use_are_refused(dfe, build_cli_estate):
    build_cli_estate(dfe)
    assert "already exists" in dfe(
        "server", "create", "DB1", "--type", "db", "--host", "h", expect=2
    )
    assert "already in cluster" in dfe("cluster", "assign", "east", "db1", expect=2)
    assert "used by server(s) web1" in dfe("mount", "delete", "disk1", "--yes", expect=2)
    # An unknown server type is a usage error, which Click also reports with exit code 2.
    assert "database" in dfe("server", "create", "x", "--type", "database", "--host", "h", expect=2)


def test_setup_refuses_a_second_run_unless_forced(dfe, cli_env):
    data_dir = Path(cli_env["DFE_DATA_DIR"])
    dfe("setup", "--email", "root@example.com", "--password-file", "@PASSWORD_FILE")
    dashboard_key = json.loads((data_dir / "dashboard.key").read_text())
    assert stat.S_IMODE((data_dir / "dashboard.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir / "console.key").stat().st_mode) == 0o600
    assert set(dashboard_key) == {"client_id", "client_secret", "console_url"}

    before = dfe("key", "list", "--json")
    error = dfe(
        "setup", "--email", "root@example.com", "--password-file", "@PASSWORD_FILE", expect=2
    )
    assert "set up already" in error
    assert dfe("key", "list", "--json") == before
    assert json.loads((data_dir / "dashboard.key").read_text()) == dashboard_key

    dfe("setup", "--email", "root@example.com", "--password-file", "@PASSWORD_FILE", "--force")
    replaced = json.loads((data_dir / "dashboard.key").read_text())
    assert replaced["client_id"] != dashboard_key["client_id"]
    system_keys = [
        k
        for k in _json(dfe("key", "list", "--json"))
        if k["owner_type"] in ("console", "dashboard")
    ]
    assert len(system_keys) == 2
    assert [p["email"] for p in _json(dfe("service-user", "list", "--json"))] == [
        "root@example.com"
    ]


def test_db_check_reports_ok(dfe):
    output = dfe("db", "check")
    assert "archive triggers installed" in output and "problem" not in output


def test_config_show_masks_secrets(dfe, cli_env):
    shown = dfe("config", "show")
    assert cli_env["DFE_ENCRYPTION_KEYS"] not in shown
    assert "DFE_ENCRYPTION_KEYS=********" in shown


def test_the_installed_command_prints_no_traceback(cli_env):
    """The real `dfe` executable, as an operator runs it."""
    dfe_bin = Path(sys.executable).parent / "dfe"
    result = subprocess.run(
        [str(dfe_bin), "cluster", "show", "missing"],
        capture_output=True,
        text=True,
        env={**os.environ, **cli_env},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: cluster 'missing' does not exist"
    assert result.stdout == ""


def test_audit_log_records_cli_changes(dfe, build_cli_estate):
    build_cli_estate(dfe)
    dfe("cluster", "update", "east", "--capacity", "7")
    entries = _json(dfe("audit", "--target", "east", "--json"))
    assert entries[0]["action"] == "cluster.update"
    assert entries[0]["actor"].startswith("cli:")
    assert (entries[0]["before"]["max_instances"], entries[0]["after"]["max_instances"]) == (100, 7)
    servers = _json(dfe("audit", "--action", "server.create", "--json"))
    assert {e["target_name"] for e in servers} == {"db1", "web1", "app1"}
    db1 = next(e for e in servers if e["target_name"] == "db1")
    assert db1["after"]["config"]["admin_password"] == "********"
