"""The screens' words: a node's language, a site's file on top, English for what is missing."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import get_args

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.i18n import catalogue, msg, reason_words, render, shipped
from agent.web import WebServer
from agent.workflows.cartons import MATERIALS
from agent.workflows.dispatch.station import Urgency
from agent.workflows.health import says, screen_devices
from agent.workflows.returns.messages import DISPOSITIONS
from devices.backends.ipp import PrinterState
from devices.base import SCALE_OVERLOAD
from devices.printers.base import NO_REPLY, PrinterStatus
from devices.printers.ipp import status_from_ipp
from tests.test_config import GOOD, write


def test_a_language_is_english_then_its_catalogue() -> None:
    german = catalogue("de")
    assert german["pack.title"] == "Packplatz"
    assert german["reason.wrong_bin"] == "falscher Behälter"
    assert set(german) == set(shipped()["en"])


def test_a_site_file_overrides_words_adds_a_language_and_english_fills_the_gaps(
    tmp_path: Path,
) -> None:
    site = tmp_path / "words.json"
    site.write_text(
        json.dumps(
            {
                "de": {"pack.title": "Packtisch 3"},
                "cs": {"pack.title": "Balicí místo", "reason.wrong_item": "špatné zboží"},
            }
        )
    )
    assert catalogue("de", site)["pack.title"] == "Packtisch 3"
    czech = catalogue("cs", site)
    assert czech["reason.wrong_item"] == "špatné zboží"
    assert czech["reason.wrong_bin"] == "wrong bin"  # not in the site's file: English


def test_the_node_file_names_its_language_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD + '\n[http]\nlanguage = "pl"\n'), env={})
    assert config.http.language == "pl"
    path = write(tmp_path, GOOD + '\n[http]\nlanguage = "fr"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    [(field, reason)] = info.value.problems
    assert field == "http" and "no messages for language 'fr'; there are: de, en, pl" in reason
    assert "node.toml:" in str(info.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "is not JSON"),
        ('["de"]', "must be an object of languages"),
        ('{"de": {"pack.title": 3}}', "'de' must be an object of strings"),
    ],
)
def test_a_bad_site_file_is_named(tmp_path: Path, content: str, reason: str) -> None:
    site = tmp_path / "words.json"
    site.write_text(content)
    path = write(tmp_path, GOOD + f'\n[http]\nlanguage = "de"\nmessages = "{site}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert any(reason in r for _, r in info.value.problems), info.value.problems
    with pytest.raises(ConfigError) as missing:
        load_config(write(tmp_path, GOOD + '\n[http]\nmessages = "/nope.json"\n'), env={})
    assert any("cannot read /nope.json" in r for _, r in missing.value.problems)


def test_reason_codes_read_as_words() -> None:
    assert reason_words("unknown_code") == "barcode not known"
    assert reason_words("wrong_bin", catalogue("pl")) == "zły pojemnik"
    assert reason_words("some_new_reason") == "some new reason"  # never the raw code


def test_the_page_carries_its_language_and_words() -> None:
    web = WebServer(
        lambda: {"site": "s", "node": "n"}, page="pack.html", language="de", words=catalogue("de")
    )
    page = web._page().body.decode()
    assert '<html lang="de">' in page
    words = page.split('<script id="words" type="application/json">')[1].split("</script>")[0]
    assert json.loads(words)["pack.title"] == "Packplatz"
    assert '<link rel="stylesheet" href="/static/station.css">' in page
    assert web._static("screen.js").content_type == "text/javascript"
    assert web._static("station.css").status == 200


# --- every message a workflow can send is in every catalogue, with its parameters ----------

AGENT = Path(__file__).parent.parent / "agent"

# Keys built at run time from a code: the prefix and every code it can take.
FAMILIES: dict[str, tuple[str, ...]] = {
    "disposition.": DISPOSITIONS,
    "material.": tuple(MATERIALS),
    "dispatch.urgency_": tuple(u for u in get_args(Urgency) if u != "normal"),
}


def _said() -> list[tuple[str, int, set[str], ast.expr]]:
    """Every ``msg(...)`` call outside agent/oms: (file, line, its keyword names, its key)."""
    calls = []
    for path in sorted(AGENT.rglob("*.py")):
        if "oms" in path.relative_to(AGENT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "msg":
                where = f"{path.relative_to(AGENT.parent)}:{node.lineno}"
                names = {k.arg for k in node.keywords}
                assert None not in names and len(node.args) == 1, f"{where}: keywords only"
                calls.append((where, node.lineno, {n for n in names if n}, node.args[0]))
    return calls


def _keys(where: str, key: ast.expr) -> list[str]:
    """The catalogue keys a call's first argument can be."""
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return [key.value]
    if isinstance(key, ast.IfExp):
        return _keys(where, key.body) + _keys(where, key.orelse)
    if isinstance(key, ast.JoinedStr) and isinstance(key.values[0], ast.Constant):
        prefix = str(key.values[0].value)
        assert prefix in FAMILIES and len(key.values) == 2, f"{where}: {prefix}... is no family"
        return [prefix + code for code in FAMILIES[prefix]]
    raise AssertionError(f"{where}: a message key must be written out, not {ast.dump(key)}")


def test_every_message_a_workflow_sends_is_in_every_catalogue_with_its_parameters() -> None:
    """A message id used anywhere on the node (workflows, screens, device words) exists in
    en, de and pl, and the call gives exactly the placeholders the words use."""
    languages = shipped()
    calls = _said()
    assert len(calls) > 80  # the notices, prompts and words of pack, dispatch and returns
    for where, _, names, key in calls:
        for id_ in _keys(where, key):
            for language in ("en", "de", "pl"):
                words = languages[language]
                forms = [v for k, v in words.items() if k == id_ or k.startswith(id_ + "#")]
                assert forms, f"{where}: {id_!r} is not in {language}.json"
                wanted = set().union(*(set(re.findall(r"{(\w+)}", v)) for v in forms))
                assert names == wanted, f"{where}: {id_} ({language}) takes {wanted}, got {names}"
                if id_ + "#one" in words:
                    assert "n" in names, f"{where}: {id_} counts n"


def test_every_reason_a_station_refuses_with_has_words() -> None:
    """The reason a station's notice leads with (``_refuse(step, now, code, reason, ...)``)
    reads as words in every language, never as its code."""
    languages = shipped()
    reasons = set()
    for path in sorted((AGENT / "workflows").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "_refuse":
                reason = node.args[3]
                options = (
                    [reason.body, reason.orelse] if isinstance(reason, ast.IfExp) else [reason]
                )
                for option in options:
                    if isinstance(option, ast.Constant):
                        reasons.add(option.value)
                    else:  # returns' unknown reason or grade code: the loop's variable
                        assert isinstance(option, ast.Name) and option.id == "reason", path
    reasons |= {"unknown_reason", "unknown_grade"}
    assert len(reasons) >= 20
    for language in ("en", "de", "pl"):
        missing = sorted(r for r in reasons if f"reason.{r}" not in languages[language])
        assert not missing, (language, missing)


# --- device health in the worker's words --------------------------------------------------


def test_what_a_screen_says_of_a_device_is_the_catalogues_never_the_drivers_english() -> None:
    jammed = PrinterStatus.from_flags(paper_out=True, paused=True)  # "paper out, paused"
    assert says("zpl_printer", "fault", jammed.detail) == [
        msg("printer.paper_out"),
        msg("printer.paused"),
    ]
    assert says("escpos_printer", "fault", NO_REPLY) == [msg("printer.no_reply")]
    # An IPP printer's own reason, or a reply the driver could not read: what to check.
    spool = status_from_ipp(PrinterState(state=3, reasons=("spool-area-full-error",)))
    assert spool.detail == "spool area full"
    assert says("ipp_printer", "fault", spool.detail) == [msg("printer.check")]
    near = PrinterStatus.from_flags(paper_near_end=True)
    assert says("ipp_printer", "ok", near.detail) == [msg("printer.paper_near_end")]
    assert says("zpl_printer", "ok", "ready (no status read-back)") == []
    assert says("mt_sics", "fault", SCALE_OVERLOAD) == [msg("scale.overload")]
    assert says("hid_pos", "fault", "the scale reports a fault") == [msg("health.fault")]
    assert says("atop", "fault", "controller alarm: input voltage too low") == [msg("lights.alarm")]
    errno = "/dev/ttyUSB0: [Errno 2] could not open port"
    assert says("hid_scanner", "unavailable", errno) == [msg("health.unavailable")]
    assert says("hid_scanner", "starting", "") == says("hid_scanner", "ok", "") == []
    state = screen_devices(
        {
            "shelf": {
                "kind": "atop",
                "status": "ok",
                "detail": "1 of 40 tags down",
                "parts": {"A1": {"status": "unavailable", "detail": "not connected (status poll)"}},
            }
        }
    )
    assert state["shelf"]["says"] == []
    assert state["shelf"]["parts"]["A1"]["says"] == [msg("health.unavailable")]
    assert state["shelf"]["detail"] == "1 of 40 tags down"  # the driver's words stay beside
    german = catalogue("de")
    words = render(msg("device.problem", device="label", what=[msg("printer.paper_out")]), german)
    assert words == "label: Papier leer"
