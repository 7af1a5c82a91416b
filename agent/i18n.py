"""The screens' words: plain JSON message catalogues, English first, a site's file on top.

Each language is one flat JSON object under ``agent/static/i18n/`` (``en.json``,
``de.json``, ``pl.json``): a key such as ``"pack.title"`` or ``"reason.wrong_item"`` maps to
the words, with ``{name}`` placeholders the page fills in. A node picks its language with
``[http] language`` and may name a site file (``[http] messages``) holding
``{"de": {"reason.wrong_item": "..."}, "cs": {...}}``: it overrides shipped words or adds a
language. The node merges English, the language's catalogue and the site's entries once
at start and embeds the result in the page, so a key missing from a catalogue reads in
English, never as its key.

Plain catalogues rather than gettext or Babel: the words are read by JavaScript in the
browser, not by Python, so ``.po``/``.mo`` files would need a compile step and a loader in
the page for no gain; a site edits JSON with any editor, and a test checks that every
catalogue has every English key and the same placeholders.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

ENGLISH = "en"


def shipped() -> dict[str, dict[str, str]]:
    """Every catalogue shipped in ``agent/static/i18n``, by language."""
    out: dict[str, dict[str, str]] = {}
    folder = resources.files("agent").joinpath("static", "i18n")
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            out[entry.name.removesuffix(".json")] = _flat(json.loads(entry.read_text("utf-8")))
    return out


def _flat(value: Any, where: str = "catalogue") -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{where} must be an object of strings (key: words)")
    return dict(value)


def site_messages(path: Path) -> dict[str, dict[str, str]]:
    """A site's file of messages by language; ``ValueError`` naming what is wrong in it."""
    try:
        raw = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f'{path} must be an object of languages: {{"de": {{key: words}}}}')
    return {lang: _flat(words, f"{path}: {lang!r}") for lang, words in raw.items()}


def catalogue(language: str = ENGLISH, site_file: Path | None = None) -> dict[str, str]:
    """The words a node's screens use: English, then ``language``'s, then the site's.

    Raises:
        ValueError: no catalogue for ``language`` (shipped or in the site file), or the
            site file is unreadable or not an object of languages of strings.
    """
    languages = shipped()
    site = site_messages(site_file) if site_file is not None else {}
    if language not in languages and language not in site:
        known = sorted({*languages, *site})
        raise ValueError(f"no messages for language {language!r}; there are: {', '.join(known)}")
    words = dict(languages[ENGLISH])
    words.update(site.get(ENGLISH, {}))
    if language != ENGLISH:
        words.update(languages.get(language, {}))
        words.update(site.get(language, {}))
    return words


def reason_words(code: str, words: dict[str, str] | None = None) -> str:
    """A reason code as a worker reads it: the catalogue's words, else the code spaced out."""
    table = words if words is not None else _english()
    return table.get(f"reason.{code}") or code.replace("_", " ")


_ENGLISH: dict[str, str] = {}


def _english() -> dict[str, str]:
    if not _ENGLISH:
        _ENGLISH.update(shipped()[ENGLISH])
    return _ENGLISH
