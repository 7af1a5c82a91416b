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

import ast
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
from tests.test_i18n import _keys, _said

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

    def open_as_is(self, page: Page) -> None:
        """Load the page again with the server's page, language and words as they are now."""
        n = next(self._loads)
        page.navigate(f"{self.url}/?load={n}", f"location.search === '?load={n}' && shown !== null")
        page.evaluate("stream.close(); true")

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
@pytest.mark.parametrize("language", ["de", "pl"])
@pytest.mark.parametrize("role", sorted(KEY))
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
    samples += [msg("pack.scanned_of", scanned=1, n=n) for n in (1, 2, 5, 22)]
    samples.append(msg("pack.packaging", label=msg("material.air_pillow"), protection=90))
    samples.append(msg("device.problem", device="label", what=["a", msg("printer.paper_out")]))
    served.open(tab, "pack", screen_states.pack("waiting"), language)
    shown = tab.evaluate(f"{json.dumps(samples)}.map(say)")
    assert shown == [render(m, catalogue(language), language) for m in samples]


# --- every word a screen shows comes from the catalogue ----------------------------------

# A pseudo-language: English with every catalogue word between marks ("⟦Order ⟧{order}"), so
# text outside the marks on a page came from somewhere else: a workflow's or driver's English,
# a word written into the page, a key missing from the catalogue.
MARKED = re.compile(r"(\{\w+\})")

# What a screen may show unmarked: the data of the state under these fields and message
# parameters (ids, names, codes, quantities; a site's own words such as a lane's name), the
# keys of these maps (a picker, a device, a slot), and the lamps' display texts (what the
# hardware's 7-segment shows: "donE", "LoAd").
DATA_FIELDS = {
    "site", "node", "order", "sku", "description", "tote", "container", "rma", "bin", "slot",
    "name", "carrier", "parcel", "code", "grade", "suggested", "chosen", "job_id", "gift_note",
    "bonus_item", "lanes", "lane", "announced",
}  # fmt: skip
DATA_PARAMS = {
    "code", "codes", "order", "sku", "job", "confirm", "box", "barcode", "name", "carrier",
    "parcel", "manifest", "lane", "lanes", "right", "parcel_carrier", "rma", "close", "item",
    "bin", "pressed", "skus", "label", "device", "part",
}  # fmt: skip
DATA_MAPS = {"pickers", "devices", "lights", "orders", "parts", "locations", "items", "bins"}


def _pseudo() -> dict[str, str]:
    marked = {}
    for key, text in shipped()["en"].items():
        parts = MARKED.split(text)
        marked[key] = "".join(p if MARKED.fullmatch(p) or not p else f"⟦{p}⟧" for p in parts)
    return marked


def _data(value: Any, key: str | None, out: set[str]) -> set[str]:
    """The strings of ``value`` a screen may show as they are (see DATA_FIELDS)."""
    if isinstance(value, dict) and set(value) == {"id", "params"}:  # a message
        for name, param in value["params"].items():
            if isinstance(param, dict):
                _data(param, None, out)
            elif name in DATA_PARAMS:
                out.update(str(p) for p in (param if isinstance(param, list) else [param]))
    elif isinstance(value, dict):
        if key in DATA_MAPS:
            out.update(map(str, value))
        if key == "lights":
            out.update(str(v["text"]) for v in value.values() if v and v.get("text"))
        for k, v in value.items():
            _data(v, k, out)
    elif isinstance(value, list):
        for v in value:
            _data(v, key, out)
    elif isinstance(value, str) and key in DATA_FIELDS:
        out.add(value)
    return out


UNMARKED = """((data) => {
  let text = document.body.innerText.replace(/⟦[^⟦⟧]*⟧/g, " ");
  for (const d of data) text = text.split(d).join(" ");
  return text.split(/\\s+/).filter((w) => /\\p{L}/u.test(w));
})"""


@needs_chromium
@pytest.mark.slow
@pytest.mark.parametrize("role", sorted(KEY))
def test_every_word_a_screen_shows_is_the_catalogues(role: str, tab: Page, served: Served) -> None:
    """Every state of every screen, in a pseudo-language whose words are all marked: what
    is left unmarked is data (ids, names, quantities), never words. So a German or Polish
    worker reads nothing in English that the catalogue does not translate."""
    states = _states(role)
    served.open(tab, role, states["normal"])
    served.web.language = "qps"
    served.web.words = _pseudo()
    served.open_as_is(tab)
    found = {}
    for variant, state in states.items():
        served.show(tab, state)
        if variant == "lost":
            tab.evaluate("lost = true; redraw(); true")
        data = sorted({d.strip() for d in _data(state, None, set())} - {""}, key=len, reverse=True)
        left = tab.evaluate(f"{UNMARKED}({json.dumps(data)})")
        if left:
            found[variant] = left
    assert tab.evaluate("document.body.innerText").count("⟦") > 10
    assert not found, found


# Realistic parameters of the stations' messages: what makes a notice long.
PARAMS: dict[str, Any] = {
    "order": "WEB-30001", "sku": "SKU-1-2", "code": "5901234123457", "job": "WEB-30001-label-2",
    "confirm": "CONFIRM", "box": "XL", "barcode": "BOX-XL", "name": "Katarzyna",
    "carrier": "FedEx", "parcel": "376104250000000048", "manifest": "FedEx-0001",
    "lane": "Door 5", "lanes": ["Door 5"], "right": "Door 5", "parcel_carrier": "FedEx",
    "rma": "RMA-40000", "close": "CLOSE", "item": "SKU-1-2", "bin": "B2", "pressed": "B1",
    "unit": 3, "n": 12, "qty": 3, "scanned": 2, "skus": ["SKU-1-2"], "protection": 90,
    "label": msg("material.air_pillow"), "disposition": msg("disposition.return_to_vendor"),
    "missing": msg("returns.missing", n=2), "urgency": msg("dispatch.urgency_late"),
    "diff": msg("pack.grams", g=1553), "g": 553,
}  # fmt: skip
STATIONS = ("pack.", "dispatch.", "returns.", "station.")


@needs_chromium
@pytest.mark.slow
@pytest.mark.parametrize("language", ["en", "de", "pl"])
def test_every_station_message_fits_its_line_at_800x480(
    language: str, tab: Page, served: Served
) -> None:
    """Each message a station sends, with realistic parameters, as the notice (two lines
    beside its tag: the longest reason it is refused with, or its level) and as the prompt
    (one line): never cut."""
    english = shipped()["en"]
    words = catalogue(language)
    ids = sorted({k.partition("#")[0] for k in english if k.startswith(STATIONS)})
    said = {i for where, _, _, key in _said() for i in _keys(where, key)}
    ids = [i for i in ids if i in said]  # the ones the workflows send (not page labels)
    assert len(ids) > 60
    reasons = _refusal_reasons()
    state = screen_states.pack("normal")
    served.open(tab, "pack", state, language)
    tab.viewport(800, 480)
    cut = []
    for id_ in ids:
        names = set().union(
            *(_placeholders(v) for k, v in english.items() if k.partition("#")[0] == id_)
        )
        message = msg(id_, **{name: PARAMS[name] for name in names})
        notice = {"level": "error", "text": "", "message": message, "at": 0}
        workflow = {**state["workflow"], "prompt_message": message}
        reason = max(reasons.get(id_, [None]), key=lambda r: len(words.get(f"reason.{r}", "")))
        served.show(
            tab, {**state, "workflow": {**workflow, "notice": {**notice, "reason": reason}}}
        )
        if tab.evaluate(f"{CUT}(document.querySelector('#notice .text'))"):
            cut.append(f"notice {id_}: {render(message, words, language)}")
        if "prompt" in id_ and tab.evaluate(f"{CUT}(document.getElementById('prompt'))"):
            cut.append(f"prompt {id_}: {render(message, words, language)}")
    assert not cut, "\n".join(cut)


def _refusal_reasons() -> dict[str, list[str | None]]:
    """Each message a station refuses a scan with, and the reasons it goes with."""
    out: dict[str, list[str | None]] = {
        "station.unreadable": ["unreadable"],
        "station.unknown_code": ["unknown_code"],
    }
    for path in sorted((Path(__file__).parent.parent / "agent" / "workflows").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "_refuse":
                reason, message = node.args[3], node.args[4]
                options = (
                    [reason.body, reason.orelse] if isinstance(reason, ast.IfExp) else [reason]
                )
                codes: list[str | None] = [o.value for o in options if isinstance(o, ast.Constant)]
                codes = codes or ["unknown_reason", "unknown_grade"]  # returns' loop variable
                for call in ast.walk(message):
                    if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "msg":
                        for id_ in _keys(str(path), call.args[0]):
                            out.setdefault(id_, []).extend(codes)
    return out


CUT = "((e) => e.scrollHeight > e.clientHeight + 1 || e.scrollWidth > e.clientWidth + 1)"


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
