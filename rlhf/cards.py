"""Markdown for the dataset and model cards: what people typed (annotator names, guidelines, model specs, config
values) shown as text.

A card quotes text it did not write. None of it may end the table, code span or code block it sits in, start a
heading or a list, or reach the page as HTML: `text` escapes it for running text and table cells, `code` makes a code
span no backtick inside can close, `fenced` a code block no line inside can close (CommonMark: a fence closes only on
a run of backticks at least as long as the one that opened it, so ours is longer than any run inside).
"""

from __future__ import annotations

import html
import re

SPACE_URL = "https://huggingface.co/spaces"
"""Where the cards link "RLHF Space"."""

_INLINE = re.compile(r"([\\`*_\[\]|~])")
"""Characters that start emphasis, code, links, strikethrough or end a table cell anywhere in a line."""
_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")
"""A heading, quote, list item or setext underline: only where a line starts (the text's first characters)."""
_BACKTICKS = re.compile(r"`+")


def _one_line(value) -> str:
    return " ".join(str(value).split())  # a line break in a name would end a table row or start a block


def text(value) -> str:
    """`value` as literal inline text on one line: HTML escaped, Markdown punctuation backslash-escaped (so also safe
    in a table cell, where `\\|` is a literal bar)."""
    escaped = _INLINE.sub(r"\\\1", html.escape(_one_line(value), quote=False))
    return _LINE_START.sub(lambda m: m.group(1) + re.sub(r"([#>+=\-.)])", r"\\\1", m.group(2)), escaped)


def _fence_for(value: str, least: int) -> str:
    return "`" * max(least, max((len(run) for run in _BACKTICKS.findall(value)), default=0) + 1)


def code(value, table: bool = False) -> str:
    """`value` as an inline code span on one line, whatever backticks it holds. `table`: for a table cell, where a
    bar must be written `\\|` even in code (GFM splits cells first)."""
    content = _one_line(value)
    if table:
        content = content.replace("|", "\\|")
    fence = _fence_for(content, 1)
    pad = " " if content.startswith("`") or content.endswith("`") or not content.strip() else ""
    return f"{fence}{pad}{content}{pad}{fence}"


def fenced(value: str, info: str = "") -> str:
    """`value` verbatim in a fenced code block (`info`: its language) that no line of it can close."""
    body = value.rstrip("\n")
    fence = _fence_for(body, 3)
    return f"{fence}{info}\n{body}\n{fence}"


def link(label, url: str) -> str:
    """A Markdown link with `label` as text; the URL in angle brackets, so spaces or parentheses cannot end it."""
    target = url.replace("<", "%3C").replace(">", "%3E").replace("\n", "")
    return f"[{text(label)}](<{target}>)"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A GFM table from cells already made safe (with `text` or `code(..., table=True)`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])
