"""The site file: what ``zone-agent site serve`` runs with, validated whole before start.

::

    site = "dc1"

    [broker]                            # the same table as a node file's
    urls = ["mqtts://broker-1.example:8883", "mqtts://broker-2.example:8883"]
    username = "site-service"           # the password comes from ZONE_AGENT_BROKER_PASSWORD
    ca_file = "/etc/zone-agent/ca.crt"
    client_id = "zone-agent-site-dc1"   # stable: the broker keeps the session across restarts

    [log]
    path = "/var/lib/zone-agent/site.db"   # SQLite; or postgres = "postgresql://..." (failover)

    [api]
    bind = "127.0.0.1"
    port = 8910
    tls_cert = "/etc/zone-agent/api.crt"  # with tls_key: HTTPS
    tls_key = "/etc/zone-agent/api.key"

    [webhooks]
    allow_networks = ["10.20.0.0/16"]     # receivers on the LAN; elsewhere public https only

    [dashboard]
    language = "de"                     # the supervisor dashboard's words: en, de, pl
    messages = "words.json"             # a site's words on top (agent.i18n), beside this file

API tokens come from ``ZONE_AGENT_SITE_TOKENS`` (comma-separated), never from the file;
the PostgreSQL password from ``PGPASSWORD`` (libpq reads it). Mistakes are reported as
``file:line: field: reason``, like a node file's.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from agent.config import ENV_PREFIX, Strict
from agent.errors import ConfigError
from agent.i18n import catalogue
from agent.link.settings import BrokerConfig
from agent.tomllines import field_path, key_lines, line_of
from agent.wire.topics import check_segment

TOKENS_ENV = "ZONE_AGENT_SITE_TOKENS"


class LogConfig(Strict):
    """Where the event log lives: one SQLite file, or a PostgreSQL database for failover."""

    path: Path = Path("site.db")
    postgres: str | None = Field(
        default=None,
        description="a libpq connection string; two instances on it: one active, one standby",
    )
    lease_s: float = Field(default=2.0, gt=0.2, le=60)
    """How often the active instance proves it holds the leadership (PostgreSQL)."""
    snapshot_s: float = Field(default=1.0, gt=0, le=3600)
    """How often a wave's router is kept while it changes: after a restart or a takeover,
    at most about this much of the log is replayed to it."""

    @field_validator("postgres")
    @classmethod
    def _no_password(cls, dsn: str | None) -> str | None:
        if dsn is not None and ":" in dsn.split("@")[0].split("//")[-1] and "@" in dsn:
            raise ValueError("no password in the connection string: set PGPASSWORD instead")
        return dsn


class ApiConfig(Strict):
    """The HTTP API: where it listens, TLS, limits."""

    bind: str = "127.0.0.1"
    port: int = Field(default=8910, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    anonymous_localhost: bool = True
    """Requests from 127.0.0.1 / ::1 without a token are served (a laptop, the demo)."""

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @property
    def loopback(self) -> bool:
        """Whether the API listens on loopback only."""
        if self.bind == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.bind).is_loopback
        except ValueError:
            return False


class WebhookConfig(Strict):
    """How webhooks are delivered (Standard Webhooks' schedule by default)."""

    retry_s: list[float] = Field(
        default_factory=lambda: [
            5.0,
            300.0,
            1800.0,
            7200.0,
            18000.0,
            36000.0,
            50400.0,
            72000.0,
            86400.0,
        ],
        min_length=1,
        max_length=20,
    )
    """Waits before each retry; when they are used up the endpoint is disabled."""
    timeout_s: float = Field(default=15.0, gt=0, le=60)
    """The most one delivery attempt may take, from resolving the name to the answer read."""
    in_flight: int = Field(default=8, ge=1, le=64)
    """Messages on their way to one endpoint at once (1: strictly one after the other).

    One at a time, an endpoint takes at most one message per round trip: 20-200 a second
    over a LAN or the internet, fewer than a site's events at a wave's end with ``batch = 1``.
    """
    allow_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    """Non-public networks (or single addresses) receivers may be in: the warehouse LAN,
    loopback for a demo. Elsewhere public addresses only, over https (site/urlguard.py)."""
    https_only: bool = False
    """Refuse plain http even inside ``allow_networks``."""

    @field_validator("allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError('a list of networks, e.g. ["10.20.0.0/16", "127.0.0.1"]')
        networks: list[IPv4Network | IPv6Network] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f'{item!r}: a network as a string, e.g. "10.20.0.0/16"')
            try:
                networks.append(ipaddress.ip_network(item))
            except ValueError:
                try:
                    loose = ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(
                        f'{item!r} is not a network nor an address (e.g. "10.20.0.0/16")'
                    ) from None
                raise ValueError(f"{item!r} has host bits set: {str(loose)!r}?") from None
        return tuple(networks)


class DashboardConfig(Strict):
    """The supervisor dashboard's words (``site serve --dashboard-port``, ``oms serve``).

    The same catalogues as the node screens (``agent/static/i18n``): ``language`` picks one,
    ``messages`` names a site's JSON file that overrides words or adds a language
    (:mod:`agent.i18n`); a path is taken from the site file's directory.
    """

    language: str = Field(default="en", description="en, de, pl or one of the messages file's")
    messages: Path | None = None

    @model_validator(mode="after")
    def _words(self) -> DashboardConfig:
        catalogue(self.language, self.messages)  # a ValueError names the language or file
        return self

    def words(self) -> dict[str, str]:
        """The page's words: English, the language's, the site's."""
        return catalogue(self.language, self.messages)


class SiteConfig(Strict):
    """A whole site file."""

    site: str
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    webhooks: WebhookConfig = Field(default_factory=WebhookConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    tokens: tuple[str, ...] = ()
    """API tokens (from ``ZONE_AGENT_SITE_TOKENS`` only)."""

    @field_validator("site")
    @classmethod
    def _segment(cls, value: str) -> str:
        check_segment(value, "site")
        return value

    @model_validator(mode="after")
    def _not_open(self) -> SiteConfig:
        if not self.api.loopback and not self.tokens:
            raise ValueError(
                f"api.bind = {self.api.bind!r} listens beyond this machine: "
                f"set API tokens in {TOKENS_ENV} (nothing anonymous beyond localhost)"
            )
        return self

    @property
    def client_id(self) -> str:
        """The service's MQTT client id: the file's, else one stable per site."""
        return self.broker.client_id or f"zone-agent-site-{self.site}"


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def parse_site(raw: dict[str, Any], file: str, env: Mapping[str, str] | None = None) -> SiteConfig:
    """Validate a decoded site file; raises ``ConfigError`` listing every problem."""
    env = os.environ if env is None else env
    raw = dict(raw)
    if "tokens" in raw:
        raise ConfigError(file, "tokens", f"API tokens go in {TOKENS_ENV}, not in the file")
    broker = dict(raw.get("broker", {}))
    for key in ("password", "username"):
        value = env.get(f"{ENV_PREFIX}BROKER_{key.upper()}")
        if value:
            broker[key] = value
    urls = env.get(f"{ENV_PREFIX}BROKER_URLS")
    if urls:
        broker["urls"] = [u.strip() for u in urls.split(",") if u.strip()]
    raw["broker"] = broker
    tokens = [t.strip() for t in env.get(TOKENS_ENV, "").split(",") if t.strip()]
    raw["tokens"] = tuple(tokens)
    try:
        return SiteConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [(_field(err["loc"]), err["msg"]) for err in exc.errors()]
        raise ConfigError(file, problems[0][0], problems[0][1], problems) from None


def load_site(path: str | Path, env: Mapping[str, str] | None = None) -> SiteConfig:
    """Read and validate a site file; raises ``ConfigError`` (file, field, reason, lines)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "(file)", exc.strerror or str(exc)) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(syntax)", str(exc)) from None
    dashboard = raw.get("dashboard")
    if isinstance(dashboard, dict) and isinstance(dashboard.get("messages"), str):
        # A site's words file sits beside its site file, wherever the service starts.
        raw["dashboard"] = dashboard | {"messages": str(path.parent / dashboard["messages"])}
    try:
        return parse_site(raw, str(path), env)
    except ConfigError as exc:
        keys = key_lines(text)
        lines = {}
        for field, _ in exc.problems:
            line = line_of(keys, field_path(field))
            if line is not None:
                lines[field] = line
        raise ConfigError(exc.file, exc.field, exc.reason, exc.problems, lines) from None
