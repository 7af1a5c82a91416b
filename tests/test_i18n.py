"""The screens' words: a node's language, a site's file on top, English for what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.i18n import catalogue, reason_words, shipped
from agent.web import WebServer
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
