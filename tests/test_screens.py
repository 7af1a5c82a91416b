"""Every station screen in headless Chromium at the floor's display sizes, in every state.

The node's own web server serves each role's page with a state the real workflows made
(tests/screen_states.py: 60-character item names, 8-line orders, a gift note, a 300-slot
zone, refused scans) in each state a worker meets: working, offline, a device down,
waiting for work, and the screen cut off from the node. At 800x480 (the Pi 7-inch display),
1024x600 and 1280x800 nothing may be clipped or scrolled away: neither the page nor any
column, section or list scrolls (scroll sizes within client sizes), and what the worker
acts on (location, quantity, item name, the cubby or bin or lane) is whole and in view.
A screenshot of each is kept in the test's directory (printed; ``pytest -s`` shows it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.i18n import PLURAL_FORMS, catalogue, msg, render, shipped
from agent.roles import manifest
from agent.web import WebServer
from tests import screen_states
from tests.browser import Page, browser, needs_chromium

VIEWPORTS = ((800, 480), (1024, 600), (1280, 800))
STATES = (*screen_states.VARIANTS, "lost")

# What the worker acts on: each must be on the page, in view and not clipped.
KEY: dict[str, dict[str, tuple[str, ...]]] = {
    "pick": {
        "normal": (
            ".slot",
            ".slot .loc",
            ".slot .lamp",
            ".slot .name",
            "#zone .target",
            "#pickers",
        ),
        "waiting": ("[data-state=waiting] .target", "#pickers"),
    },
    "put_wall": {
        "normal": ("#put .target", "#put .cubby", "#put .name", "#wall", "#fill", "#cubbies"),
        "waiting": ("[data-state=waiting] .target", "#wall", "#fill"),
    },
    "pack": {
        "normal": (
            "#notice",
            "#order-head",
            "#special",
            "#lines .line",
            "#box",
            "#weight",
            "#printer",
            "#refusals li",
            "#queue li",
        ),
        "waiting": ("#notice", "#prompt", "#order-head", "#printer", "#queue li"),
    },
    "returns": {
        "normal": (
            "#notice",
            "#unit .name",
            "#return-head",
            "#lines .line",
            "#bins",
            "#recent li",
            "#announced li",
        ),
        "waiting": ("#notice", "#prompt", "#unit", "#bins", "#recent li"),
    },
    "dispatch": {
        "normal": (
            "#notice",
            "#pending .target",
            "#lanes",
            "#waiting li",
            "#recent li",
            "#refusals li",
        ),
        "waiting": ("#notice", "#prompt", "#pending", "#lanes"),
    },
}

CHECK = (Path(__file__).parent / "screen_check.js").read_text()


class Served:
    """The node's web server on a loop of its own, serving whatever ``state`` is now."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.web = WebServer(lambda: self.state, stream_interval_s=0.05)
        port = asyncio.run_coroutine_threadsafe(self.web.start("127.0.0.1", 0), self.loop).result(
            10
        )
        self.url = f"http://127.0.0.1:{port}"
        self._loads = itertools.count()

    def open(self, page: Page, role: str, state: dict[str, Any], language: str = "en") -> None:
        """Show ``role``'s page in ``language`` with ``state`` in the browser's tab."""
        self.state = state
        self.web.page = manifest(role).page
        self.web.language = language
        self.web.words = catalogue(language)
        n = next(self._loads)
        page.navigate(f"{self.url}/?load={n}", f"location.search === '?load={n}' && shown !== null")
        page.evaluate("stream.close(); true")  # from here on the test says what is shown

    def show(self, page: Page, state: dict[str, Any]) -> None:
        """Render ``state`` now, as the stream would."""
        self.state = state
        page.evaluate(f"shown = {json.dumps(state)}; lost = false; redraw(); true")

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.web.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = Served()
    yield server
    server.close()


@pytest.fixture(scope="module")
def tab() -> Iterator[Page]:
    with browser() as page:
        yield page


def _problems(page: Page, keys: tuple[str, ...]) -> list[str]:
    return list(page.evaluate(f"{CHECK}({json.dumps(keys)})"))


def _states(role: str) -> dict[str, dict[str, Any]]:
    build = screen_states.BUILDERS[role]
    out = {variant: build(variant) for variant in screen_states.VARIANTS}
    out["lost"] = out["normal"]
    return out


def _look(
    page: Page,
    served: Served,
    role: str,
    states: dict[str, dict[str, Any]],
    shots: Path,
    suffix: str = "",
) -> list[str]:
    failures = []
    for (width, height), state in itertools.product(VIEWPORTS, STATES):
        page.viewport(width, height)
        served.show(page, states[state])
        if state == "lost":
            page.evaluate("lost = true; redraw(); true")
        keys = KEY[role]["waiting" if state == "waiting" else "normal"]
        banner = page.evaluate("document.getElementById('banner').dataset.state || ''")
        expected = {"offline": "offline", "fault": "fault", "lost": "lost"}.get(state, "")
        if banner != expected:
            failures.append(f"{width}x{height} {state}: the banner says {banner!r}")
        if expected:
            keys = (*keys, "#banner")
        failures += [f"{width}x{height} {state}: {p}" for p in _problems(page, keys)]
        page.screenshot(shots / f"{role}{suffix}-{state}-{width}x{height}.png")
    return failures


@needs_chromium
@pytest.mark.slow
@pytest.mark.parametrize("role", sorted(KEY))
def test_screen_fits_at_every_size_in_every_state(
    role: str, tab: Page, served: Served, tmp_path: Path
) -> None:
    states = _states(role)
    served.open(tab, role, states["normal"])
    failures = _look(tab, served, role, states, tmp_path)
    print(f"\nscreenshots of the {role} screen: {tmp_path}")
    assert not failures, "\n".join(failures)


@needs_chromium
@pytest.mark.slow
@pytest.mark.parametrize(
    ("role", "language"), [("pack", "de"), ("pick", "pl"), ("returns", "de"), ("put_wall", "pl")]
)
def test_german_and_polish_words_fit(
    role: str, language: str, tab: Page, served: Served, tmp_path: Path
) -> None:
    """Longer words (Kommissionierzone, przegródki) must not overflow either."""
    states = _states(role)
    served.open(tab, role, states["normal"], language)
    assert tab.evaluate("document.documentElement.lang") == language
    failures = _look(tab, served, role, states, tmp_path, f"-{language}")
    prompt = tab.evaluate("(document.getElementById('prompt') || {}).innerText")
    english = states["normal"]["workflow"].get("prompt")
    if english:  # the station's prompt for this phase in the worker's language
        assert prompt and prompt != english, (prompt, english)
    title = tab.evaluate("document.getElementById('title').innerText")
    assert title.startswith(catalogue(language)[f"{'wall' if role == 'put_wall' else role}.title"])
    print(f"\nscreenshots of the {role} screen in {language}: {tmp_path}")
    assert not failures, "\n".join(failures)


@needs_chromium
@pytest.mark.slow
@pytest.mark.parametrize("language", ["en", "de", "pl"])
def test_the_page_says_a_message_as_python_renders_it(
    language: str, tab: Page, served: Served
) -> None:
    """Plural forms (Chromium's CLDR rules against agent.i18n.plural), nested messages and
    lists come out the same in the page and in Python."""
    counts = (0, 1, 2, 3, 4, 5, 11, 12, 13, 14, 21, 22, 25, 101, 102, 112, 122, 125)
    samples = [msg("pack.items", n=n) for n in counts] + [
        msg("pick.open_lines", n=n) for n in counts
    ]
    samples.append(msg("pack.scanned_of", scanned=3, units=msg("pack.items", n=4)))
    samples.append(msg("device.fault", device="label", detail=["a", msg("reason.wrong_bin")]))
    served.open(tab, "pack", screen_states.pack("waiting"), language)
    shown = tab.evaluate(f"{json.dumps(samples)}.map(say)")
    assert shown == [render(m, catalogue(language), language) for m in samples]


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"{(\w+)}", text))


def test_every_catalogue_has_every_english_key_with_its_placeholders() -> None:
    """Every shipped language says every message, with English's placeholders; a message
    with a count has exactly the plural forms its language uses (pl: one, few, many)."""
    languages = shipped()
    english = languages["en"]
    assert {"en", "de", "pl"} <= set(languages)
    assert set(PLURAL_FORMS) == set(languages)

    def groups(words: dict[str, str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for key in words:
            base, _, form = key.partition("#")
            out.setdefault(base, set()).add(form)
        return out

    expected = groups(english)
    for language, words in languages.items():
        got = groups(words)
        assert sorted(set(expected) - set(got)) == [] == sorted(set(got) - set(expected)), language
        for base, forms in got.items():
            if expected[base] != {""}:  # a count: the language's own forms, each using {n}
                assert forms == set(PLURAL_FORMS[language]), (language, base, forms)
            else:
                assert forms == {""}, (language, base, forms)
        for key, text in words.items():
            base = key.partition("#")[0]
            theirs = [_placeholders(v) for k, v in english.items() if k.partition("#")[0] == base]
            assert _placeholders(text) in theirs, (language, key, text)
            if "#" in key:
                assert "n" in _placeholders(text) or key.endswith("#one"), (language, key)


def test_pages_use_only_keys_the_english_catalogue_has() -> None:
    """A word the page asks for by a fixed key is in en.json (keys built at run time are
    checked by the screens above: a missing one would show as its last part)."""
    static = Path(__file__).parent.parent / "agent" / "static"
    keyword = r'"((?:pick|pack|wall|returns|dispatch|screen)\.[a-z_]+)"'
    english = shipped()["en"]
    used = set()
    for page in [*static.glob("*.html"), static / "screen.js"]:
        used |= set(re.findall(r'\bt\("([a-z_]+\.[a-z_]+)"', page.read_text()))
        used |= set(re.findall(keyword, page.read_text()))
    bases = {key.partition("#")[0] for key in english}
    assert used and not sorted(used - bases)
