"""The transport's settings: the ``[broker]`` table of a node file.

Beside the transport that uses them (as ESPHome keeps a schema beside its driver), so the
link does not import the node-file module; :mod:`agent.config` embeds this model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class BrokerConfig(BaseModel):
    """How to reach the MQTT broker (or the brokers of a cluster, tried in turn)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    urls: list[str] = Field(default_factory=lambda: ["mqtt://127.0.0.1:1883"], min_length=1)
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive_s: int = Field(default=15, ge=5, le=600)
    connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="how long to wait for CONNACK (and a new session's SUBACKs)",
    )
    session_expiry_s: int = Field(default=86_400, ge=0)
    # 4.5, not 5: the watchdog looks every 0.25 s, so a dead link is torn down 4.5-4.75 s
    # after the first unanswered packet, within DESIGN's "5 s of evidence" (5.0 measured
    # 5.3-5.7 s from the fault).
    dead_after_s: float = Field(
        default=4.5,
        gt=0,
        le=120,
        description="a link owing an answer that hears nothing this long is torn down",
    )
    backoff_initial_s: float = Field(default=0.5, gt=0, le=60)
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600)
    max_inflight: int = Field(default=100, ge=1, le=1000)

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme == "memory":
                if not parts.netloc or len(urls) != 1:
                    raise ValueError(
                        f"{url!r}: an in-process broker is one memory://NAME URL alone"
                    )
                continue
            if parts.username is not None or parts.password is not None:
                # Said before anything else: the text of the error must not echo the secret.
                raise ValueError(
                    f"{parts.scheme}://{parts.hostname}: credentials do not go in the URL; set "
                    "broker.username in the file and the password in ZONE_AGENT_BROKER_PASSWORD"
                )
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError(f"{url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
            try:
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError as exc:
                raise ValueError(f"{url!r}: {exc}") from None
        return urls

    @property
    def in_process(self) -> bool:
        """Whether the URL names a broker in this process (``memory://NAME``).

        For tests and one-process simulations, see :mod:`agent.link.memory`.
        """
        return self.urls[0].startswith("memory://")

    @property
    def uses_tls(self) -> bool:
        """Whether any URL asks for TLS."""
        return any(u.startswith("mqtts://") for u in self.urls)
