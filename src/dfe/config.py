"""The one settings object: `DFE_*` environment variables or a `.env` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DRIVER_ALIASES = {
    "postgres://": "postgresql+psycopg://",
    "postgresql://": "postgresql+psycopg://",
    "mysql://": "mysql+pymysql://",
    "mariadb://": "mysql+pymysql://",
    "mariadb+pymysql://": "mysql+pymysql://",
}


def normalize_database_url(url: str) -> str:
    """Pick the drivers we ship for bare scheme names (mysqlclient is not installed)."""
    for alias, scheme in _DRIVER_ALIASES.items():
        if url.startswith(alias):
            return scheme + url[len(alias) :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DFE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Embedded database, keys, storage.")
    database_url: str | None = Field(default=None, description="Defaults to SQLite in data_dir.")
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated Fernet keys, newest first; default: a key file in data_dir.",
    )
    console_url: str | None = Field(
        default=None,
        description="Where the Dashboard and the web tier reach the Console; "
        "default: http://<console_host>:<console_port>.",
    )
    console_host: str = "127.0.0.1"
    console_port: int = 8000
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8001
    dashboard_open_registration: bool = Field(
        default=True, description="Anyone may create an account on the Dashboard."
    )
    dashboard_product_name: str = Field(default="DFE", description="Shown in the Dashboard.")
    dashboard_session_secret: SecretStr | None = Field(
        default=None,
        description="Signs the Dashboard's session cookies; default: derived from its key.",
    )
    dashboard_instance_domain: str = Field(
        default="localhost",
        description="The Dashboard's host preview <name>.<this>: the default cluster's subdomain.",
    )
    dashboard_instance_url: str | None = Field(
        default=None,
        description="An instance's link in the Dashboard, with {host}; "
        "default: http://{host}:<DFE_HOST_PORT>/ (the web tier on this machine).",
    )
    dashboard_url: str | None = Field(
        default=None,
        description="The Dashboard's public address, for links in mails; "
        "default: http://<dashboard_host>:<dashboard_port>.",
    )
    dashboard_logo: str | None = Field(
        default=None,
        description="Logo in the Dashboard's navigation bar: an http(s) URL, or an image "
        "file the Dashboard serves.",
    )
    dashboard_stylesheet: str | None = Field(
        default=None,
        description="An extra stylesheet loaded after the Dashboard's own: an http(s) URL, "
        "or a CSS file the Dashboard serves.",
    )
    smtp_url: str | None = Field(
        default=None,
        description="smtp://user:password@host:port (add ?starttls=true) or smtps://...; "
        "default: each mail is written as an .eml file into mail_outbox_dir.",
    )
    mail_from: str = Field(default="DFE <dfe@localhost>", description="Sender of every mail.")
    mail_outbox_dir: Path | None = Field(
        default=None, description="Where mails go without DFE_SMTP_URL; default: data_dir/outbox."
    )
    password_reset_ttl_seconds: int = Field(
        default=3600, ge=1, description="How long a password reset link works."
    )
    password_reset_max_per_account: int = Field(
        default=3, ge=1, description="Reset mails one account gets per window (more: none)."
    )
    password_reset_max_per_address: int = Field(
        default=20, ge=1, description="Reset requests one address may make per window."
    )
    password_reset_window_seconds: int = 3600
    default_instance_limit: int = Field(
        default=0,
        ge=0,
        description="Instances a user may own when their own limit is not set; 0: no limit.",
    )
    host_host: str = "127.0.0.1"
    host_port: int = 8080
    host_subdomain: str = Field(
        default="localhost",
        description="The web tier serves <instance>.<this> (comma-separated: several).",
    )
    host_key_file: Path | None = Field(
        default=None, description="The web server's own app key; default: host.key in data_dir."
    )
    host_cache_seconds: float = Field(
        default=300, description="How long the web tier keeps an instance's config."
    )
    host_poll_seconds: float = Field(
        default=2, description="How often the web tier asks the Console what changed."
    )
    host_max_upload_bytes: int = Field(
        default=32 * 1024 * 1024, description="Largest file an instance's API accepts."
    )
    host_usage_flush_seconds: float = Field(
        default=60, description="How often the web tier adds its request counts to metrics_t."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token that may read GET /metrics from anywhere; "
        "without it, only unproxied clients on loopback may.",
    )
    redis_url: str | None = Field(default=None, description="Shared replay cache and counters.")
    redis_namespace: str = Field(
        default="dfe",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of the rate-limit counters' Redis keys (one per installation).",
    )
    broker_url: str | None = Field(
        default=None,
        description="Job queue: redis://... or amqp://...; default SQLite in data_dir.",
    )
    queue_eager: bool = Field(
        default=False, description="Run jobs inside the process that asks (tests, debugging)."
    )
    default_cluster: str = Field(
        default="local", description="Where instances launch when the caller names no cluster."
    )
    job_lease_seconds: int = Field(
        default=300, description="A running job whose worker is silent this long is taken over."
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses whose X-Forwarded-Proto/Host headers are believed.",
    )
    max_body_bytes: int = Field(default=1_048_576, description="Largest API request body.")
    snapshot_ttl_days: int = Field(
        default=30, ge=1, le=365, description="How long a snapshot and its download link live."
    )
    snapshot_max_upload_bytes: int = Field(
        default=1024 * 1024 * 1024, description="Largest snapshot archive an import accepts."
    )
    user_token_ttl_seconds: int = 8 * 3600
    login_max_failures_per_account: int = 5
    login_max_failures_per_address: int = 20
    login_failure_window_seconds: int = 900
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    key_rotation_grace_hours: int = 168

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if value:
            from dfe.mail import parse_smtp_url

            parse_smtp_url(value)
        return value or None

    @property
    def metrics_token_value(self) -> str | None:
        return self.metrics_token.get_secret_value() if self.metrics_token else None

    @property
    def proxies(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.trusted_proxies.split(",") if p.strip())

    @property
    def host_subdomains(self) -> tuple[str, ...]:
        return tuple(
            d.strip().strip(".").lower() for d in self.host_subdomain.split(",") if d.strip()
        )

    @property
    def effective_host_key_file(self) -> Path:
        return self.host_key_file or self.data_dir / "host.key"

    @property
    def effective_instance_url(self) -> str:
        return self.dashboard_instance_url or f"http://{{host}}:{self.host_port}/"

    @property
    def effective_dashboard_url(self) -> str:
        return (self.dashboard_url or f"http://{self.dashboard_host}:{self.dashboard_port}").rstrip(
            "/"
        )

    @property
    def effective_outbox_dir(self) -> Path:
        return self.mail_outbox_dir or self.data_dir / "outbox"

    @property
    def effective_console_url(self) -> str:
        return self.console_url or f"http://{self.console_host}:{self.console_port}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'queue.db'}"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite:///{self.data_dir / 'dfe.db'}"

    def masked(self) -> dict[str, Any]:
        """Settings as printable values, with secrets and URL passwords masked."""
        from sqlalchemy.engine import make_url

        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********" if value.get_secret_value() else ""
            elif name == "database_url":
                value = make_url(self.effective_database_url).render_as_string(hide_password=True)
            elif name in ("redis_url", "broker_url", "smtp_url") and value:
                value = make_url(value).render_as_string(hide_password=True)
            shown[name] = str(value) if isinstance(value, Path) else value
        return shown


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
