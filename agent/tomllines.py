"""Where each key of a TOML text is: the line numbers tomllib does not give.

``tomllib`` decodes a file into plain dicts and lists, so a schema error found afterwards
(``devices[1].slots[0].confirm: Input should be ...``) has no line. ``key_lines(text)`` walks
the text once, the way a TOML reader meets it (``[table]`` and ``[[array of tables]]``
headers, ``key = value`` lines with dotted keys, inline tables), and maps every key path to
the line it is written on; ``line_of(lines, path)`` finds the line of a path, or of the
nearest enclosing key or table when the path itself is not in the file (a missing field is
reported at its table's header).

It reads only what tomllib already accepted, so it does not validate; values spanning lines
(arrays, triple-quoted strings) are skipped whole.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_FIELD = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def field_path(field: str) -> Path:
    """``"devices[0].slots[2].led"`` as ``("devices", 0, "slots", 2, "led")``."""
    return tuple(
        int(index) if index else name for name, index in _FIELD.findall(field) if name or index
    )


def _key(text: str, at: int) -> tuple[list[str], int]:
    """The dotted key starting at ``text[at]`` (bare or quoted parts); its end."""
    parts: list[str] = []
    while True:
        while at < len(text) and text[at] in " \t":
            at += 1
        if at < len(text) and text[at] in "\"'":
            quote = text[at]
            end = at + 1
            while end < len(text) and text[end] != quote:
                end += 2 if quote == '"' and text[end] == "\\" else 1
            parts.append(text[at + 1 : end])
            at = end + 1
        else:
            match = _BARE.match(text, at)
            if match is None:
                return parts, at
            parts.append(match.group())
            at = match.end()
        while at < len(text) and text[at] in " \t":
            at += 1
        if at < len(text) and text[at] == ".":
            at += 1
            continue
        return parts, at


def _scan_value(text: str, at: int) -> tuple[int, list[tuple[int, int]], str | None]:
    """Bracket depth after a value from ``text[at]``; inline-table key spans; open string."""
    depth = 0
    inline: list[tuple[int, int]] = []  # (position of a key, brace depth) inside { }
    expect_key = False
    i = at
    while i < len(text):
        ch = text[i]
        if text.startswith(('"""', "'''"), i):
            quote = text[i : i + 3]
            end = text.find(quote, i + 3)
            if end < 0:
                return depth, inline, quote
            i = end + 3
            continue
        if ch in "\"'":
            if expect_key:
                inline.append((i, depth))
                expect_key = False
            end = i + 1
            while end < len(text) and text[end] != ch:
                end += 2 if ch == '"' and text[end] == "\\" else 1
            i = end + 1
            continue
        if ch == "#":
            break
        if ch in "[{":
            depth += 1
            expect_key = ch == "{"
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth > 0:
            expect_key = text.rfind("{", at, i) > text.rfind("[", at, i)
        elif expect_key and not ch.isspace():
            inline.append((i, depth))
            expect_key = False
        i += 1
    return depth, inline, None


def key_lines(text: str) -> dict[Path, int]:
    """Every key path of a TOML text and its 1-based line (tables at their header)."""
    lines: dict[Path, int] = {}
    counts: dict[Path, int] = {}
    table: Path = ()
    depth = 0
    open_string: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if open_string is not None:
            end = line.find(open_string)
            if end >= 0:
                open_string = None
                more, _, open_string = _scan_value(line, end + 3)
                depth += more
            continue
        if depth > 0:
            more, _, open_string = _scan_value(line, 0)
            depth += more
            continue
        stripped = line.lstrip()
        start = len(line) - len(stripped)
        if stripped.startswith("[["):
            parts, _ = _key(line, start + 2)
            table = _array_table(parts, lines, counts)
            lines.setdefault(table, number)
            continue
        if stripped.startswith("["):
            parts, _ = _key(line, start + 1)
            table = _resolve(parts, counts)
            lines.setdefault(table, number)
            continue
        if not stripped or stripped.startswith("#"):
            continue
        parts, end = _key(line, start)
        if not parts or end >= len(line) or line[end] != "=":
            continue
        path = table + tuple(parts)
        for n in range(len(table) + 1, len(path) + 1):
            lines.setdefault(path[:n], number)
        depth, inline, open_string = _scan_value(line, end + 1)
        _inline_keys(line, path, inline, lines, number)
    return lines


def _resolve(parts: list[str], counts: dict[Path, int]) -> Path:
    """A header's path, each array of tables at its latest element."""
    path: Path = ()
    for part in parts:
        path += (part,)
        if path in counts:
            path += (counts[path] - 1,)
    return path


def _array_table(parts: list[str], lines: dict[Path, int], counts: dict[Path, int]) -> Path:
    """The path of a new element of the array of tables ``parts``."""
    parent = _resolve(parts[:-1], counts)
    array = (*parent, parts[-1])
    index = counts.get(array, 0)
    counts[array] = index + 1
    return (*array, index)


def _inline_keys(
    line: str, path: Path, keys: list[tuple[int, int]], lines: dict[Path, int], number: int
) -> None:
    """Keys of inline tables on one line (``display = { clk = 5, dio = 6 }``), one level."""
    for position, depth in keys:
        if depth == 1:
            parts, _ = _key(line, position)
            if parts:
                lines.setdefault((*path, *parts), number)


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of ``path``, or of its nearest enclosing key or table; ``None`` if none."""
    for n in range(len(path), 0, -1):
        found = lines.get(path[:n])
        if found is not None:
            return found
    return None


__all__ = ["field_path", "key_lines", "line_of"]
