"""A real headless browser (Debian's chromium) for testing the node's screens.

``dump_dom`` loads a page once. ``browser()`` keeps one tab open and drives it through the
DevTools protocol over ``--remote-debugging-pipe`` (fds 3 and 4, NUL-separated JSON), so a
test can read the DOM again after each live update, set the viewport (the Pi 7-inch
display is 800x480) and measure where elements are.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def dump_dom(url: str) -> str:
    """The page's DOM once it has loaded and its scripts ran.

    No ``--virtual-time-budget``: virtual time stands still while a request is open, and
    the screens keep an event stream open for good.
    """
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--timeout=10000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Page:
    """One headless chromium tab, driven through the DevTools protocol on a pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc = proc
        self._out = to_browser
        self._in = from_browser
        self._buffer = b""
        self._id = 0
        self.session: str | None = None

    def _send(self, method: str, params: dict[str, Any], session: bool = True) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session and self.session is not None:
            message["sessionId"] = self.session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 65536)
                if not chunk:
                    raise AssertionError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, _, self._buffer = self._buffer.partition(b"\0")
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]
        raise AssertionError(f"no answer to {method}")

    def open(self, url: str) -> None:
        target = self._send("Target.createTarget", {"url": url}, session=False)["targetId"]
        attached = self._send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False
        )
        self.session = attached["sessionId"]

    def evaluate(self, expression: str) -> Any:
        """The expression's value; a JavaScript exception fails the test."""
        params = {"expression": expression, "returnByValue": True}
        result = self._send("Runtime.evaluate", params)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str, ready: str = "true", timeout: float = 15) -> None:
        """Load ``url`` in this tab and wait until the JS expression ``ready`` is true."""
        if self.session is None:
            self.open(url)  # the first page of this tab
        else:
            self._send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(f"document.readyState === 'complete' && !!({ready})"):
                return
            time.sleep(0.05)
        raise AssertionError(f"{url} not ready ({ready}) after {timeout} s")

    def wait_text(self, selector: str, expected: str, timeout: float = 15) -> str:
        """Wait until the element's text contains ``expected``; returns the text."""
        text = ""
        deadline = time.monotonic() + timeout
        query = f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
        while time.monotonic() < deadline:
            text = self.evaluate(query)
            if expected in text:
                return str(text)
            time.sleep(0.05)
        raise AssertionError(f"{selector} shows {text!r}, expected {expected!r}")

    def html(self, selector: str) -> str:
        query = f"(document.querySelector({json.dumps(selector)}) || {{}}).outerHTML || ''"
        return str(self.evaluate(query))

    def viewport(self, width: int, height: int) -> None:
        """Show the page as on a display of ``width`` x ``height`` CSS pixels."""
        self._send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def rect(self, selector: str) -> dict[str, float]:
        """The element's box in the viewport (top, bottom, left, right, height, width)."""
        query = (
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; const r = e.getBoundingClientRect();"
            " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,"
            " height: r.height, width: r.width}; })()"
        )
        found = self.evaluate(query)
        assert found is not None, f"no {selector} on the page"
        return {key: float(value) for key, value in found.items()}

    def click(self, selector: str) -> None:
        """Click the middle of the element as a mouse would (what is on top there gets it)."""
        box = self.rect(selector)
        x, y = (box["left"] + box["right"]) / 2, (box["top"] + box["bottom"]) / 2
        for kind in ("mousePressed", "mouseReleased"):
            self._send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def screenshot(self, path: Path) -> None:
        """Save what the viewport shows as a PNG (to look at a layout by eye)."""
        data = self._send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))


@contextlib.contextmanager
def browser() -> Iterator[Page]:
    """A headless chromium with the DevTools protocol on fds 3 (in) and 4 (out)."""
    assert CHROMIUM is not None
    to_read, to_write = os.pipe()  # chromium reads commands from its fd 3
    from_read, from_write = os.pipe()  # and writes answers to its fd 4

    def plumb() -> None:
        os.dup2(to_read, 3)
        os.dup2(from_write, 4)

    # Chromium's helper processes may still write to the profile for a moment after the
    # browser exits; a leftover file in /tmp must not fail the test.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=plumb,  # the DevTools pipe must be on fds 3 and 4
            close_fds=False,
        )
        os.close(to_read)
        os.close(from_write)
        try:
            yield Page(proc, to_write, from_read)
        finally:
            os.close(to_write)
            os.close(from_read)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
