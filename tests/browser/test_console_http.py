"""The Console's admin UI over HTTP, in-process on a real database: the protection of
every route (generated from the UI's route table, so a new unprotected route fails
here), roles, CSRF, sessions, login throttling, and forms. No browser needed."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from dfe.auth.permissions import Action
from dfe.config import Settings
from dfe.console.app import create_app
from dfe.console.ui import PREFIX, SESSION_COOKIE
from dfe.console.ui.web import action_of
from dfe.enums import ServerType, ServiceRole
from dfe.models import AuditEntry, Instance, Limit, Metric
from dfe.schemas import (
    ClusterCreate,
    MountCreate,
    ServerCreate,
    ServiceUserCreate,
    ServiceUserUpdate,
    UserCreate,
)
from dfe.services import identity, infrastructure, instances, setup
from dfe.services.metrics import today

PASSWORD = "a-long-enough-password"
ADMIN, OPERATOR = "root@example.com", "ops@example.com"
# The only UI routes anyone may reach without a session.
PUBLIC = {("GET", "/login"), ("POST", "/login"), ("POST", "/logout")}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def console(db, tmp_path):
    """A Console on `db` with an administrator, a read-only operator, a user, a cluster
    with its three servers and one instance."""
    with db.transaction(actor="test") as s:
        setup.run_setup(s, ServiceUserCreate(email=ADMIN, password=PASSWORD), force=False)
        identity.create_service_user(
            s, ServiceUserCreate(email=OPERATOR, password=PASSWORD, role=ServiceRole.OPERATOR)
        )
        ann = identity.create_user(s, UserCreate(email="ann@example.com", password=PASSWORD))
        mount = infrastructure.create_mount(s, MountCreate(name="disk", root_path="/srv/disk"))
        cluster = infrastructure.create_cluster(
            s, ClusterCreate(name="east", subdomain="east.example.com")
        )
        servers = {}
        for kind in ServerType:
            servers[kind] = infrastructure.create_server(
                s, ServerCreate(name=f"{kind}-1", server_type=kind, host="h", mount=mount.name)
            )
            infrastructure.assign_server(s, cluster.id, servers[kind].id)
        instances.create_instance_record(s, "alpha", ann, cluster, servers)
    return create_app(Settings(data_dir=tmp_path), db)


def client_for(app, base_url: str = "http://console.test") -> TestClient:
    return TestClient(app, base_url=base_url, follow_redirects=False)


def csrf_of(client: TestClient, path: str = f"{PREFIX}/login") -> str:
    match = CSRF.search(client.get(path).text)
    assert match is not None
    return match.group(1)


def log_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Log in; the session's CSRF token."""
    token = csrf_of(client)
    answer = client.post(
        f"{PREFIX}/login", data={"csrf_token": token, "email": email, "password": password}
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"{PREFIX}/"
    return csrf_of(client, f"{PREFIX}/")


@dataclass
class UiRoute:
    method: str
    path: str  # inside the UI app
    action: Action | None

    @property
    def url(self) -> str:
        """The path with every parameter pointing at nothing that exists."""
        values = {"kinds": "clusters", "job_id": "987654"}
        return PREFIX + re.sub(
            r"\{(\w+)\}", lambda m: values.get(m.group(1), "does-not-exist"), self.path
        )


def ui_routes(app) -> list[UiRoute]:
    mounts = [route for route in app.routes if isinstance(route, Mount) and route.path == PREFIX]
    assert len(mounts) == 1
    found = []
    for context in iter_route_contexts(mounts[0].app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if isinstance(route, Mount):
            assert route.path == "/static"
            continue
        assert isinstance(route, APIRoute), f"{route!r}: not a page of the UI"
        action = None
        pending = list(route.dependant.dependencies)
        while pending:
            dependency = pending.pop()
            action = action or action_of(dependency.call)
            pending.extend(dependency.dependencies)
        found.extend(UiRoute(method, context.path, action) for method in route.methods)
    return found


def test_every_ui_route_declares_its_action(console):
    routes = ui_routes(console)
    missing = [
        f"{r.method} {r.path}"
        for r in routes
        if r.action is None and (r.method, r.path) not in PUBLIC
    ]
    assert missing == [], "UI routes without requires(Action...)"
    writes = [r for r in routes if r.method == "POST" and r.action is not None]
    assert all(not r.action.is_read for r in writes), "a POST guarded by a read action"
    assert len(routes) > 40


def test_without_a_session_every_route_sends_to_the_login(console):
    client = client_for(console)
    checked = 0
    for route in ui_routes(console):
        if (route.method, route.path) in PUBLIC:
            continue
        answer = client.request(route.method, route.url)
        assert answer.status_code == 303, f"{route.method} {route.url}: {answer.status_code}"
        assert answer.headers["location"] == f"{PREFIX}/login", route
        checked += 1
    assert checked > 40
    # The Console's root leads to the UI.
    assert client.get("/").headers["location"] == f"{PREFIX}/"


def test_an_operator_sees_everything_and_changes_nothing(console, db):
    client = client_for(console)
    token = log_in(client, OPERATOR)
    before = _audit_count(db)
    for route in ui_routes(console):
        if (route.method, route.path) in PUBLIC:
            continue
        if route.method == "GET":
            answer = client.get(route.url)
            if route.action is not None and route.action.is_read:
                assert answer.status_code in (200, 303, 404), f"GET {route.url}"
            else:  # a form or confirmation step of a change
                assert answer.status_code == 403, f"GET {route.url}: {answer.status_code}"
        else:  # a forged post, with the session's own CSRF token
            answer = client.post(route.url, data={"csrf_token": token, "confirm": "yes"})
            assert answer.status_code == 403, f"POST {route.url}: {answer.status_code}"
            assert "operators can look at everything" in answer.text
    # Real targets too: nothing changes, nothing is logged.
    for url in ("/clusters/east/delete", "/instances/alpha/lock", "/servers/web-1/disable"):
        data = {"csrf_token": token, "confirm": url.split("/")[2]}
        assert client.post(PREFIX + url, data=data).status_code == 403
    assert (
        client.post(
            f"{PREFIX}/clusters", data={"csrf_token": token, "name": "west", "subdomain": "w.test"}
        ).status_code
        == 403
    )
    assert _audit_count(db) == before
    for page in ("/", "/clusters/east", "/instances/alpha", "/servers", "/audit", "/keys"):
        answer = client.get(PREFIX + page)
        assert answer.status_code == 200, page
        assert "Delete…" not in answer.text and "Create the" not in answer.text, page


def _audit_count(db) -> int:
    with db.session() as s:
        return s.query(AuditEntry).filter(AuditEntry.action != "service_user.login").count()


def test_a_post_without_the_csrf_token_is_refused(console):
    client = client_for(console)
    token = log_in(client, ADMIN)
    data = {"name": "west", "subdomain": "west.example.com"}
    refused = client.post(f"{PREFIX}/clusters", data=data)
    assert refused.status_code == 403
    assert "This form has expired" in refused.text
    wrong = client.post(f"{PREFIX}/clusters", data={**data, "csrf_token": token[:-2] + "xx"})
    assert wrong.status_code == 403
    done = client.post(f"{PREFIX}/clusters", data={**data, "csrf_token": token})
    assert done.status_code == 303
    assert done.headers["location"] == f"{PREFIX}/clusters/west"
    # The login form has its CSRF check too.
    fresh = client_for(console)
    fresh.get(f"{PREFIX}/login")
    answer = fresh.post(f"{PREFIX}/login", data={"email": ADMIN, "password": PASSWORD})
    assert answer.status_code == 403


def test_forms_keep_what_was_typed_and_actions_are_audited(console, db):
    client = client_for(console)
    token = log_in(client, ADMIN)
    answer = client.post(
        f"{PREFIX}/clusters",
        data={"csrf_token": token, "name": "north-1", "subdomain": "not a domain!"},
    )
    assert answer.status_code == 422
    assert 'value="north-1"' in answer.text and 'value="not a domain!"' in answer.text
    assert "is-invalid" in answer.text
    taken = client.post(
        f"{PREFIX}/clusters", data={"csrf_token": token, "name": "east", "subdomain": "e.test"}
    )
    assert taken.status_code == 409 and "already exists" in taken.text
    client.post(
        f"{PREFIX}/clusters", data={"csrf_token": token, "name": "north", "subdomain": "n.test"}
    )
    with db.session() as s:
        entry = s.query(AuditEntry).filter_by(action="cluster.create", target_name="north").one()
        assert entry.actor == f"service_user {ADMIN} (console ui)"


def test_a_limit_is_created_and_its_counters_reset_from_the_ui(console, db):
    client = client_for(console)
    token = log_in(client, ADMIN)
    form = {"label": "alpha-5", "scope": "instance", "target": "alpha", "period": "minute"}
    created = client.post(
        f"{PREFIX}/limits", data={"csrf_token": token, **form, "max_requests": "5"}
    )
    assert created.status_code == 303, created.text
    with db.session() as s:
        before = s.query(Limit).filter_by(label="alpha-5").one().reset_generation
    reset = client.post(f"{PREFIX}/limits/alpha-5/reset", data={"csrf_token": token})
    assert reset.status_code == 303
    assert "start from zero again" in client.get(f"{PREFIX}/limits").text
    with db.session() as s:
        assert s.query(Limit).filter_by(label="alpha-5").one().reset_generation == before + 1
        entry = s.query(AuditEntry).filter_by(action="limit.reset", target_name="alpha-5").one()
        assert entry.actor == f"service_user {ADMIN} (console ui)"


def test_usage_charts_all_instances_or_one(console, db):
    with db.transaction(actor="test") as s:
        alpha = s.query(Instance).filter_by(name="alpha").one()
        s.add(Metric(instance_id=alpha.id, instance_name="alpha", day=today(), requests=1234))
        s.add(Metric(instance_id=999, instance_name="gone", day=today(), requests=66))
    client = client_for(console)
    log_in(client, OPERATOR)  # reading usage is an operator's right too
    everything = client.get(f"{PREFIX}/usage")
    assert everything.status_code == 200
    assert "All instances (2 with figures)" in everything.text
    assert "1,300 in all" in everything.text and everything.text.count("<svg") == 3
    one = client.get(f"{PREFIX}/usage", params={"instance": "alpha"})
    assert "Instance <strong>alpha</strong>" in one.text and "1,234 in all" in one.text


def test_a_move_is_offered_to_other_db_servers_and_refused_clearly(console, db):
    with db.transaction(actor="test") as s:
        infrastructure.create_server(
            s, ServerCreate(name="db-2", server_type=ServerType.DB, host="h2")
        )
    client = client_for(console)
    token = log_in(client, ADMIN)
    page = client.get(f"{PREFIX}/instances/alpha/move")
    assert page.status_code == 200
    assert '<option value="db-2">' in page.text and '<option value="db-1">' not in page.text
    refused = client.post(
        f"{PREFIX}/instances/alpha/move", data={"csrf_token": token, "db_server": "db-2"}
    )
    assert refused.status_code == 409
    assert "alpha" in refused.text and "not provisioned" in refused.text
    unknown = client.post(
        f"{PREFIX}/instances/alpha/move", data={"csrf_token": token, "db_server": "db-9"}
    )
    assert unknown.status_code in (404, 409)


def test_destructive_actions_need_the_typed_name(console):
    client = client_for(console)
    token = log_in(client, ADMIN)
    page = client.get(f"{PREFIX}/servers/app-1/delete")
    assert page.status_code == 200 and "Type <strong>app-1</strong>" in page.text
    wrong = client.post(
        f"{PREFIX}/servers/app-1/delete", data={"csrf_token": token, "confirm": "app"}
    )
    assert wrong.status_code == 422 and "does not match" in wrong.text
    in_use = client.post(
        f"{PREFIX}/servers/app-1/delete", data={"csrf_token": token, "confirm": "app-1"}
    )
    assert in_use.status_code == 409 and "still hosts 1 instance" in in_use.text
    assert client.get(f"{PREFIX}/servers/app-1").status_code == 200


def test_restore_explains_a_conflict(console):
    client = client_for(console)
    token = log_in(client, ADMIN)
    client.post(
        f"{PREFIX}/clusters", data={"csrf_token": token, "name": "west", "subdomain": "w.test"}
    )
    gone = client.post(
        f"{PREFIX}/clusters/west/delete", data={"csrf_token": token, "confirm": "west"}
    )
    assert gone.status_code == 303
    listing = client.get(f"{PREFIX}/archive/clusters")
    assert 'data-name="west"' in listing.text
    assert f"service_user {ADMIN} (console ui)" in listing.text
    client.post(
        f"{PREFIX}/clusters", data={"csrf_token": token, "name": "west", "subdomain": "w2.test"}
    )
    refused = client.post(f"{PREFIX}/archive/clusters/west/restore", data={"csrf_token": token})
    assert refused.status_code == 409
    assert "It cannot be restored" in refused.text and "the name is taken" in refused.text


def test_sessions_end_when_the_password_changes_or_the_account_is_deactivated(console, db):
    for change in (
        ServiceUserUpdate(password="another-long-password"),
        ServiceUserUpdate(is_active=False),
    ):
        with db.transaction(actor="test") as s:
            identity.update_service_user(
                s, OPERATOR, ServiceUserUpdate(password=PASSWORD, is_active=True)
            )
        client = client_for(console)
        log_in(client, OPERATOR)
        assert client.get(f"{PREFIX}/instances").status_code == 200
        with db.transaction(actor="test") as s:
            identity.update_service_user(s, OPERATOR, change)
        ended = client.get(f"{PREFIX}/instances")
        assert ended.status_code == 303 and ended.headers["location"] == f"{PREFIX}/login"
        assert "Your session has ended" in client.get(f"{PREFIX}/login").text


def test_logout_ends_the_session(console):
    client = client_for(console)
    token = log_in(client, ADMIN)
    assert client.post(f"{PREFIX}/logout", data={"csrf_token": token}).status_code == 303
    assert client.get(f"{PREFIX}/").status_code == 303


def test_logins_are_throttled_and_users_cannot_log_in(console, tmp_path):
    client = client_for(console)
    token = csrf_of(client)
    # A Dashboard user is no service user.
    user = client.post(
        f"{PREFIX}/login",
        data={"csrf_token": token, "email": "ann@example.com", "password": PASSWORD},
    )
    assert user.status_code == 401 and "wrong" in user.text
    for _ in range(5):
        answer = client.post(
            f"{PREFIX}/login", data={"csrf_token": token, "email": ADMIN, "password": "nope"}
        )
        assert answer.status_code == 401
    throttled = client.post(
        f"{PREFIX}/login", data={"csrf_token": token, "email": ADMIN, "password": PASSWORD}
    )
    assert throttled.status_code == 429 and "Too many failed logins" in throttled.text


@pytest.mark.parametrize("base_url", ["http://console.test", "https://console.test"])
def test_the_session_cookie(console, base_url):
    client = client_for(console, base_url)
    client.get(f"{PREFIX}/login")
    token = csrf_of(client)
    answer = client.post(
        f"{PREFIX}/login", data={"csrf_token": token, "email": ADMIN, "password": PASSWORD}
    )
    cookie = next(
        value
        for name, value in answer.headers.multi_items()
        if name == "set-cookie" and value.startswith(SESSION_COOKIE + "=")
    ).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert ("secure" in cookie.split("; ")) == base_url.startswith("https")
    assert answer.headers["x-frame-options"] == "DENY"
    assert "script-src 'self'" in answer.headers["content-security-policy"]


def test_bad_input_is_a_page_not_a_500(console):
    client = client_for(console)
    log_in(client, ADMIN)
    for url in (
        "/jobs/0",
        "/jobs/not-a-number",
        "/instances?page=-4&sort=nonsense&state=weird",
        "/audit?since=yesterday",
        "/archive/mounts",
        "/instances/nope",
    ):
        answer = client.get(PREFIX + url)
        assert answer.status_code in (200, 400, 404, 422), url
        assert "<html" in answer.text, url


def test_a_key_secret_is_shown_once(console):
    client = client_for(console)
    token = log_in(client, ADMIN)
    made = client.post(
        f"{PREFIX}/keys",
        data={"csrf_token": token, "owner_type": "user", "owner": "ann@example.com", "label": "ci"},
    )
    assert made.status_code == 200
    client_id = re.search(r'data-role="client-id">([^<]+)<', made.text).group(1)
    secret = re.search(r'data-role="client-secret">([^<]+)<', made.text).group(1)
    listing = client.get(f"{PREFIX}/keys?q={client_id}")
    assert client_id in listing.text and secret not in listing.text
    rotated = client.post(f"{PREFIX}/keys/{client_id}/rotate", data={"csrf_token": token})
    successor = re.search(r'data-role="client-secret">([^<]+)<', rotated.text).group(1)
    assert successor != secret
    wrong_owner = client.post(
        f"{PREFIX}/keys",
        data={"csrf_token": token, "owner_type": "user", "owner": "nobody@example.com"},
    )
    assert wrong_owner.status_code == 404 and 'value="nobody@example.com"' in wrong_owner.text
    revoked = client.post(
        f"{PREFIX}/keys/{client_id}/revoke", data={"csrf_token": token, "confirm": client_id}
    )
    assert revoked.status_code == 303
    assert f'data-name="{client_id}"' not in client.get(f"{PREFIX}/keys?q={client_id}").text


def test_provisioning_from_the_ui_and_a_failed_job_retried(console):
    client = client_for(console)
    token = log_in(client, ADMIN)
    form = {"csrf_token": token, "owner": "ann@example.com", "name": "Bad Name!", "cluster": "east"}
    refused = client.post(f"{PREFIX}/instances/new", data=form)
    assert refused.status_code == 422 and 'value="Bad Name!"' in refused.text
    launched = client.post(f"{PREFIX}/instances/new", data={**form, "name": "beta"})
    assert launched.status_code == 303
    job_url = launched.headers["location"]
    # The tests run jobs inline: this one fails for real, as the db server names no driver.
    failed = client.get(job_url)
    assert 'data-status="failed"' in failed.text and "every 1s" not in failed.text
    assert "unknown database driver" in failed.text
    overview = client.get(f"{PREFIX}/")
    assert "unknown database driver" in overview.text  # it needs attention
    retried = client.post(f"{job_url}/retry", data={"csrf_token": token})
    assert retried.status_code == 303 and retried.headers["location"] != job_url
    assert "retried as job" in client.get(retried.headers["location"]).text
