"""Node files: one TOML file per node under firmware_config/, validated whole before start.

A node file names the node, its role, where its state lives, how to reach the broker and
which devices it drives::

    site = "dc1"
    node = "zone-a1"
    role = "pick"                      # pick | put_wall | pack | returns | dispatch
    state_dir = "/var/lib/zone-agent"

    [broker]
    urls = ["mqtts://broker-1.example:8883", "mqtts://broker-2.example:8883"]
    username = "zone-a1"               # the password comes from ZONE_AGENT_BROKER_PASSWORD
    ca_file = "/etc/zone-agent/ca.crt"

    [[devices]]
    name = "shelf"
    kind = "gpio_slots"
    ...

Secrets never live in the file: ``ZONE_AGENT_BROKER_PASSWORD`` (and ``..._USERNAME``,
``..._URLS`` as a comma-separated list, ``ZONE_AGENT_STATE_DIR``, ``ZONE_AGENT_HTTP_PORT``)
override it. Every
mistake is reported as ``file:line: field: reason`` and nothing opens until the whole file is
valid: unknown keys, an unknown device kind, a pin or port claimed twice, a location on two
devices. ``gaps(config)`` lists what a valid file still lacks to be of use (no devices, no
broker); ``check-config`` reports those instead of "ok".
"""

from __future__ import annotations

import os
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.errors import ConfigError
from agent.i18n import catalogue
from agent.link.settings import BrokerConfig
from agent.roles import ROLES, manifest
from agent.tomllines import field_path, key_lines, line_of
from agent.wire.topics import check_segment
from devices import registry
from devices.config import DeviceConfig, FieldValueError

ENV_PREFIX = "ZONE_AGENT_"


class Strict(BaseModel):
    """Base of config sections: unknown keys are typos, and typos are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class OutboxConfig(Strict):
    """Bounds of the outbox of unacknowledged events.

    Above ``limit`` the node refuses new commands (rejected, reason ``outbox_full``) so the OMS
    stops sending work to a node that cannot report; device events still go in up to
    ``limit + reserve``; beyond that the node stops taking device input (the task stays
    open and lit, and the journal says why) rather than dropping a confirmation.
    """

    limit: int = Field(default=100_000, ge=10)
    reserve: int = Field(default=10_000, ge=1)
    resend_after_s: float = Field(default=15.0, gt=0)
    batch_events: int = Field(default=250, ge=1, le=2000)


class InputConfig(Strict):
    """How the node treats device input that waited (docs/protocol.md, "A press is bound").

    A press older than ``press_max_age_s`` when the workflow would handle it confirms
    nothing: the picker has long since looked again (and pressed again if the light stayed
    on). Input is handled within milliseconds when all is well; only a node that was stuck
    (a failing SD card, a machine swapping) meets this bound.
    """

    press_max_age_s: float = Field(default=5.0, gt=0, le=600)


class HttpConfig(Strict):
    """The node's local web server: the screens and, when simulated, the control API.

    ``GET /metrics`` is served there too. For Prometheus on the LAN, ``metrics_port``
    opens a second listener that serves ``/metrics`` and nothing else, on ``metrics_bind``
    (``0.0.0.0`` for every interface): the screen and its API stay on ``bind``, which a
    kiosk browser on the Pi reaches at 127.0.0.1. Nothing listens beyond localhost unless
    the file says so. ``language`` picks the screen's words (``agent/static/i18n``), and
    ``messages`` a site's file that adds or overrides them (:mod:`agent.i18n`).
    """

    bind: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    metrics_bind: str = Field(
        default="127.0.0.1", description="address of the /metrics-only listener"
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="a /metrics-only listener; none if unset"
    )
    language: str = Field(
        default="en", description="the screen's language: en, de, pl or one of the site file's"
    )
    messages: Path | None = Field(
        default=None, description="a site's JSON file of screen words by language (agent.i18n)"
    )

    @field_validator("metrics_port")
    @classmethod
    def _own_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value == info.data.get("port"):
            raise ValueError("is the screen's port: the metrics listener needs its own")
        return value

    @model_validator(mode="after")
    def _words(self) -> HttpConfig:
        catalogue(self.language, self.messages)  # a ValueError names the language or file
        return self


class NodeConfig(Strict):
    """A whole node file."""

    site: str
    node: str
    role: Literal["pick", "put_wall", "pack", "returns", "dispatch"]
    state_dir: Path = Path("/var/lib/zone-agent")
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    devices: list[DeviceConfig] = Field(default_factory=list)
    settings: dict[str, Any] = Field(
        default_factory=dict, description="role settings, validated by the role's workflow"
    )

    @field_validator("site", "node")
    @classmethod
    def _segment(cls, value: str) -> str:
        return check_segment(value, "name")

    @property
    def client_id(self) -> str:
        """The MQTT client id: configured, or ``{site}-{node}``."""
        return self.broker.client_id or f"{self.site}-{self.node}"


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    broker = raw.setdefault("broker", {})
    if not isinstance(broker, dict):
        return
    if f"{ENV_PREFIX}BROKER_PASSWORD" in env:
        broker["password"] = env[f"{ENV_PREFIX}BROKER_PASSWORD"]
    if f"{ENV_PREFIX}BROKER_USERNAME" in env:
        broker["username"] = env[f"{ENV_PREFIX}BROKER_USERNAME"]
    if f"{ENV_PREFIX}BROKER_URLS" in env:
        broker["urls"] = [u.strip() for u in env[f"{ENV_PREFIX}BROKER_URLS"].split(",") if u]
    if f"{ENV_PREFIX}STATE_DIR" in env:
        raw["state_dir"] = env[f"{ENV_PREFIX}STATE_DIR"]
    if f"{ENV_PREFIX}HTTP_PORT" in env:
        # A simulated node beside others on a laptop: 0 takes a free port, not the kiosk's.
        http = raw.setdefault("http", {})
        if isinstance(http, dict):
            http["port"] = env[f"{ENV_PREFIX}HTTP_PORT"]


def _devices(raw_devices: Any, problems: list[tuple[str, str]]) -> list[DeviceConfig]:
    if not isinstance(raw_devices, list):
        problems.append(("devices", "must be an array of [[devices]] tables"))
        return []
    out: list[DeviceConfig] = []
    for i, item in enumerate(raw_devices):
        where = f"devices[{i}]"
        if not isinstance(item, dict):
            problems.append((where, "must be a table"))
            continue
        kind = item.get("kind")
        if kind not in registry.KINDS:
            known = ", ".join(sorted(registry.KINDS))
            problems.append((f"{where}.kind", f"unknown kind {kind!r}; known kinds: {known}"))
            continue
        model: type[DeviceConfig] = registry.module_for(kind).CONFIG
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                # A check of the whole device (a pin used twice) names the field it blames.
                blamed = (err.get("ctx") or {}).get("error")
                if isinstance(blamed, FieldValueError):
                    loc += blamed.field
                problems.append((f"{where}.{_field(loc)}" if loc else where, err["msg"]))
    return out


def _cross_check(devices: list[DeviceConfig], problems: list[tuple[str, str]]) -> None:
    names: dict[str, int] = {}
    claims: dict[str, str] = {}
    locations: dict[str, str] = {}
    for i, dev in enumerate(devices):
        if dev.name in names:
            problems.append((f"devices[{i}].name", f"{dev.name!r} is already used"))
        names[dev.name] = i
        for claim in dev.claims():
            if claim in claims and claims[claim] != dev.name:
                problems.append(
                    (f"devices[{i}]", f"{claim} is used by both {claims[claim]!r} and {dev.name!r}")
                )
            claims.setdefault(claim, dev.name)
        for loc in dev.locations():
            if loc in locations and locations[loc] != dev.name:
                problems.append(
                    (
                        f"devices[{i}]",
                        f"location {loc!r} is on both {locations[loc]!r} and {dev.name!r}",
                    )
                )
            locations.setdefault(loc, dev.name)


def _check_settings(role: Any, settings: Any, problems: list[tuple[str, str]]) -> None:
    if not isinstance(role, str) or role not in ROLES or not isinstance(settings, dict):
        return
    model = manifest(role).settings
    try:
        model.model_validate(settings)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append((f"settings.{_field(err['loc'])}", err["msg"]))


def parse_config(
    raw: dict[str, Any], file: str, env: Mapping[str, str] | None = None
) -> NodeConfig:
    """Validate a decoded node file; raises ``ConfigError`` listing every problem."""
    raw = dict(raw)
    _apply_env(raw, os.environ if env is None else env)
    problems: list[tuple[str, str]] = []
    devices = _devices(raw.pop("devices", []), problems)
    _cross_check(devices, problems)
    _check_settings(raw.get("role"), raw.get("settings", {}), problems)
    config: NodeConfig | None = None
    try:
        config = NodeConfig.model_validate({**raw, "devices": []})
    except ValidationError as exc:
        for err in exc.errors():
            problems.append((_field(err["loc"]), err["msg"]))
    if problems or config is None:
        field, reason = problems[0]
        raise ConfigError(file, field, reason, problems)
    return config.model_copy(update={"devices": devices})


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read and validate a node file; raises ``ConfigError`` (file, field, reason, lines)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "(file)", exc.strerror or str(exc)) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(syntax)", str(exc)) from None  # tomllib gives the line
    try:
        return parse_config(raw, str(path), env)
    except ConfigError as exc:
        raise _with_lines(exc, str(path), text) from None


def _with_lines(exc: ConfigError, file: str, text: str) -> ConfigError:
    # tomllib keeps no positions: find each field's line in the text itself.
    keys = key_lines(text)
    lines = {}
    for field, _ in exc.problems:
        line = line_of(keys, field_path(field))
        if line is not None:
            lines[field] = line
    return ConfigError(file, exc.field, exc.reason, exc.problems, lines)


def locate(problems: list[tuple[str, str]], path: str | Path) -> ConfigError:
    """A ``ConfigError`` for ``problems`` found after loading ``path``, with their lines.

    For what only the machine can tell (a certificate file missing, a port taken): the
    fields are still written somewhere in the file, and the installer is sent there.
    """
    field, reason = problems[0]
    error = ConfigError(str(path), field, reason, problems)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return error
    return _with_lines(error, str(path), text)


def _readable_file(path: Path) -> str | None:
    """Why ``path`` cannot be read by this process, or ``None`` when it can."""
    if not path.exists():
        return f"{path}: no such file"
    if not path.is_file():
        return f"{path}: not a file"
    if not os.access(path, os.R_OK):
        return f"{path}: not readable by uid {os.geteuid()} (the service user must read it)"
    return None


def tls_file_problems(broker: BrokerConfig) -> list[tuple[str, str]]:
    """The broker's CA, certificate and key files as the transport will load them.

    Only this machine can tell (the examples name /etc/zone-agent/...), so ``check-config``
    (the unit's ExecStartPre, as the service user) and ``run`` check them, not
    ``load_config``. Returns ``(field, reason)`` per problem.
    """
    if not broker.uses_tls:
        # The transport loads them only for mqtts:// (a file naming them whose URLs an
        # environment variable points at a plain local broker, as docs/simulation.md does).
        return []
    found: list[tuple[str, str]] = []
    files = {"ca_file": broker.ca_file, "cert_file": broker.cert_file, "key_file": broker.key_file}
    for field, path in files.items():
        why = None if path is None else _readable_file(path)
        if why is not None:
            found.append((f"broker.{field}", why))
    if broker.key_file is not None and broker.cert_file is None:
        found.append(("broker.key_file", "given without cert_file: the key would not be used"))
    if found:
        return found
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if broker.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(broker.ca_file))
        except (ssl.SSLError, ValueError) as exc:
            found.append(("broker.ca_file", f"{broker.ca_file}: no PEM certificate in it ({exc})"))
    if broker.cert_file is not None:
        key = str(broker.key_file) if broker.key_file is not None else None
        try:
            # A passphrase would be asked for on a terminal: the transport has none to give.
            context.load_cert_chain(str(broker.cert_file), key, password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            field = "broker.key_file" if key is not None else "broker.cert_file"
            found.append(
                (
                    field,
                    f"{broker.cert_file} and {key or 'its key'} do not make a usable "
                    f"certificate and unencrypted private key ({exc})",
                )
            )
    return found


LIGHT_KINDS = frozenset({"gpio_slots", "led_strip", "atop", "modbus_io"})
"""Device kinds that show a pick or put location (a pick zone or put wall needs one)."""


def gaps(config: NodeConfig) -> list[tuple[str, str]]:
    """What a valid node file still lacks to be of use, as ``(field, reason)``.

    A node with no devices has nothing to drive; a pick zone or put wall with no light has
    no location to show a line at; a node whose file names no broker would talk to
    ``mqtt://127.0.0.1:1883`` only, which is right on a laptop and wrong on the floor.
    """
    found: list[tuple[str, str]] = []
    kinds = {device.kind for device in config.devices}
    if not kinds:
        found.append(("devices", f"none: a {config.role} node needs at least one [[devices]]"))
    elif manifest(config.role).shows_locations and not kinds & LIGHT_KINDS:
        found.append(
            (
                "devices",
                f"no gpio_slots, led_strip, atop or modbus_io: a {config.role} node shows "
                "lines on one",
            )
        )
    if "urls" not in config.broker.model_fields_set:
        default = ", ".join(config.broker.urls)
        found.append(("broker.urls", f"not set: the node would only try {default}"))
    return found


def advice(config: NodeConfig) -> list[tuple[str, str]]:
    """Warnings about a valid node file, as ``(field, reason)``: worth fixing, not fatal."""
    return [
        (f"devices[{index}].{field}", reason)
        for index, device in enumerate(config.devices)
        for field, reason in device.advice()
    ]
