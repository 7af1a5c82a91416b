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

What a workflow says on a screen is a :class:`Message`: a catalogue key and its parameters
(``{"id": "pack.opened", "params": {"order": "SO-1"}}``), never a finished sentence. The
page renders it in the node's language (``screen.js``: ``say``); :func:`render` renders the
same in Python (the English ``text`` beside each message in ``GET /api/state``, and tests).
A parameter is a string or number (data: an order id, a quantity), another message (a
reason, a material, a weight in grams), or a list of these (joined with ", ").

A message with a count (the parameter ``n``) has one entry per plural form, CLDR's
categories after a ``#``: ``"pack.items#one": "{n} item"``, ``"pack.items#other": "{n}
items"``; Polish has ``#one``, ``#few`` and ``#many`` (1 pozycja, 2 pozycje, 5 pozycji).
The page picks the form with the browser's ``Intl.PluralRules`` (CLDR, any language a site
adds); :func:`plural` is the same rule for English, German and Polish. A form missing from
a language falls back to its ``#other``, then to English.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias, TypedDict

ENGLISH = "en"

Param: TypeAlias = "str | int | float | Message | Sequence[Param]"


class Message(TypedDict):
    """Words for a screen: a catalogue key and the values of its placeholders."""

    id: str
    params: dict[str, Param]


def msg(key: str, **params: Param) -> Message:
    """The message ``key`` with ``params`` (``msg("pack.opened", order="SO-1")``)."""
    return {"id": key, "params": params}


PLURAL_FORMS: dict[str, tuple[str, ...]] = {
    "en": ("one", "other"),
    "de": ("one", "other"),
    "pl": ("one", "few", "many"),
}
"""The plural forms each shipped catalogue has for a count (CLDR, whole numbers)."""


def plural(language: str, n: int | float) -> str:
    """The CLDR plural category of the whole number ``n`` in ``language``.

    Polish: ``one`` for 1; ``few`` when it ends in 2-4 but not in 12-14; else ``many``.
    English, German and any other language: ``one`` for 1, else ``other``.
    """
    if n != int(n):
        return "other"
    whole = abs(int(n))
    if language.split("-")[0] == "pl":
        if whole == 1:
            return "one"
        if 2 <= whole % 10 <= 4 and not 12 <= whole % 100 <= 14:
            return "few"
        return "many"
    return "one" if whole == 1 else "other"


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


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def words_of(key: str, params: dict[str, Param], words: dict[str, str], language: str) -> str:
    """The catalogue's words for ``key``: its plural form when it counts ``n``.

    A key no catalogue has reads as its last part spaced out, never as the key.
    """
    text = words.get(key)
    count = params.get("n")
    if text is None and isinstance(count, int | float):
        text = words.get(f"{key}#{plural(language, count)}") or words.get(f"{key}#other")
    return text if text is not None else key.rsplit(".", 1)[-1].replace("_", " ")


def render(message: Message, words: dict[str, str] | None = None, language: str = ENGLISH) -> str:
    """``message`` in words: English from the shipped catalogue unless ``words`` is given.

    Numbers are written as in English (``1,234``); the page writes them in its language.
    """
    table = words if words is not None else _english()
    params = message["params"]

    def value(param: Param) -> str:
        if isinstance(param, str):
            return param
        if isinstance(param, dict):
            return render(param, table, language)
        if isinstance(param, bool):
            return str(param)
        if isinstance(param, int) or (isinstance(param, float) and param.is_integer()):
            return f"{int(param):,}"
        if isinstance(param, float):
            return f"{param:,.1f}"
        return ", ".join(value(p) for p in param)

    text = words_of(message["id"], params, table, language)
    return _PLACEHOLDER.sub(lambda m: value(params[m[1]]) if m[1] in params else m[0], text)


def reason_words(code: str, words: dict[str, str] | None = None) -> str:
    """A reason code as a worker reads it: the catalogue's words, else the code spaced out."""
    table = words if words is not None else _english()
    return table.get(f"reason.{code}") or code.replace("_", " ")


_ENGLISH: dict[str, str] = {}


def _english() -> dict[str, str]:
    if not _ENGLISH:
        _ENGLISH.update(shipped()[ENGLISH])
    return _ENGLISH
