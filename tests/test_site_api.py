"""The site service's contract pieces without a broker: the OpenAPI document, the site
file, the webhook signature against the Standard Webhooks reference library."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from standardwebhooks import Webhook as ReferenceVerifier

from agent.errors import ConfigError
from agent.oms.site.commands import openapi_yaml
from agent.oms.site.settings import load_site
from agent.oms.site.webhooks import new_secret, sign, verify

ROOT = Path(__file__).resolve().parent.parent


def test_docs_openapi_yaml_is_what_the_code_generates() -> None:
    # Regenerate with: .venv/bin/zone-agent site openapi > docs/openapi.yaml
    assert (ROOT / "docs" / "openapi.yaml").read_text() == openapi_yaml()
    text = openapi_yaml()
    assert text.startswith("openapi: 3.1.")
    assert "\nwebhooks:\n" in text and "Idempotency-Key" in text


def test_signatures_verify_with_the_reference_library() -> None:
    secret = new_secret()
    body = b'{"type":"event.picked","timestamp":"2026-12-06T18:00:00.000Z","data":{"id":7}}'
    now = int(time.time())
    headers = {
        "webhook-id": "evt_7",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, "evt_7", now, body),
    }
    ReferenceVerifier(secret).verify(body, headers)
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body.replace(b"7}", b"8}"))
    assert not verify(new_secret(), headers, body)
    stale = {**headers, "webhook-timestamp": str(now - 3600)}
    stale["webhook-signature"] = sign(secret, "evt_7", now - 3600, body)
    assert not verify(secret, stale, body)  # a replay an hour later


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_credentials_in_a_broker_url_are_refused_with_the_right_setting(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "dc1"\n[broker]\nurls = ["mqtt://oms:s3cret@broker:1883"]\n')
    with pytest.raises(ConfigError) as err:
        load_site(path, env={})
    assert err.value.field == "broker.urls"
    assert (
        "ZONE_AGENT_BROKER_PASSWORD" in err.value.reason and "broker.username" in err.value.reason
    )
    assert "s3cret" not in str(err.value)
    assert str(err.value).startswith(f"{path}:3:")


def test_nothing_anonymous_beyond_localhost(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "dc1"\n[api]\nbind = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match="ZONE_AGENT_SITE_TOKENS"):
        load_site(path, env={})
    config = load_site(path, env={"ZONE_AGENT_SITE_TOKENS": "a-token, another"})
    assert config.tokens == ("a-token", "another")
    assert load_site(write(tmp_path, 'site = "dc1"\n'), env={}).api.bind == "127.0.0.1"
    with pytest.raises(ConfigError, match="not in the file"):
        load_site(write(tmp_path, 'site = "dc1"\ntokens = ["x"]\n'), env={})


def test_the_broker_table_is_a_nodes_with_a_stable_client_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'site = "dc1"\n[broker]\nurls = ["mqtts://b1:8883", "mqtts://b2:8883"]\n'
        'username = "site"\nca_file = "/etc/ca.crt"\ncert_file = "/etc/c.crt"\n'
        'key_file = "/etc/c.key"\n',
    )
    config = load_site(path, env={"ZONE_AGENT_BROKER_PASSWORD": "pw"})
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "pw"
    assert "pw" not in repr(config)
    assert config.client_id == "zone-agent-site-dc1"
    assert config.broker.session_expiry_s > 0
    with pytest.raises(ConfigError) as err:
        load_site(write(tmp_path, 'site = "dc1"\n[broker]\nport = 1\n'), env={})
    assert err.value.field == "broker.port"
