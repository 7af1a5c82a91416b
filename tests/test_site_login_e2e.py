"""The site service and the `oms` commands log in like a node: the [broker] table of a site
file, the password from the environment; a refused login is an error and exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.oms.demo.broker import LocalBroker
from tests.harness import SITE
from tests.site_harness import SiteProcess

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd"),
]
SECRET = "correct horse battery staple"


def site_file(tmp_path: Path, broker: LocalBroker) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f'site = "{SITE}"\n[broker]\nurls = ["{broker.url}"]\nusername = "site-service"\n'
        f'backoff_initial_s = 0.05\nbackoff_max_s = 0.2\n[log]\npath = "{tmp_path / "s.db"}"\n'
    )
    return path


@pytest.fixture
def secured(tmp_path: Path) -> LocalBroker:
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "site-service", SECRET], check=True
    )
    passwd.chmod(0o600)
    extra = f"password_file {passwd}\nper_listener_settings false\nallow_anonymous false\n"
    broker = LocalBroker(tmp_path / "broker", extra_config=extra)
    broker.start()
    yield broker  # type: ignore[misc]
    broker.stop()


def oms(
    tmp_path: Path, broker: LocalBroker, password: str, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZONE_AGENT_BROKER_PASSWORD": password}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "oms",
            *args,
            "--site-file",
            str(site_file(tmp_path, broker)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_refused_login_is_an_error_and_exit_2_for_every_command(
    tmp_path: Path, secured: LocalBroker
) -> None:
    watch = oms(tmp_path, secured, "wrong-" + SECRET, "watch", "--seconds", "5")
    assert watch.returncode == 2, watch.stdout + watch.stderr
    assert "refused the login" in watch.stderr and "ZONE_AGENT_BROKER_PASSWORD" in watch.stderr
    assert SECRET not in watch.stdout + watch.stderr
    send = oms(tmp_path, secured, "", "send", "zone-a1", "ping", "{}")
    assert send.returncode == 2 and "refused the login" in send.stderr

    site = SiteProcess(site_file(tmp_path, secured), env={"ZONE_AGENT_BROKER_PASSWORD": "nope"})
    site.start()
    assert site.proc is not None
    assert site.proc.wait(30) == 2
    assert "refused the login" in site.text()


def test_the_right_password_from_the_environment_logs_in(
    tmp_path: Path, secured: LocalBroker
) -> None:
    watch = oms(tmp_path, secured, SECRET, "watch", "--seconds", "1")
    assert watch.returncode == 0, watch.stderr
    site = SiteProcess(site_file(tmp_path, secured), env={"ZONE_AGENT_BROKER_PASSWORD": SECRET})
    try:
        site.start()
        site.wait_role("active")
        # Active is the log's leadership: the broker link comes up on its own time.
        deadline = time.monotonic() + 30
        while "link up" not in site.text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "link up" in site.text() and SECRET not in site.text()
    finally:
        site.stop()


def test_credentials_in_a_url_are_refused_with_a_pointer(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "oms",
            "watch",
            "--site",
            SITE,
            "--broker",
            "mqtt://oms:hunter2@127.0.0.1:1883",
            "--seconds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "ZONE_AGENT_BROKER_PASSWORD" in done.stderr and "hunter2" not in done.stderr
