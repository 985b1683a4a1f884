"""Names from users' files (scanner names, image names, paths) in the Markdown reports that
`midog evaluate` and `midog experiment` write: always shown as the text they are.

Report viewers render Markdown to HTML, many of them passing raw HTML through (editors'
previews, pandoc, static-site generators). A scanner named `<img src=x onerror=...>` in a
domains file, a `|` that would split a table row, or a backtick that would close a code span
must not become markup there: `md_text` escapes HTML and the Markdown punctuation that
starts markup; `md_code` puts a value in a code span no content can close.
"""

from __future__ import annotations

import html
import re

from ..errors import shown

__all__ = ["md_code", "md_text"]

# Backslash first; then what opens emphasis, code, links and images, tables and strikethrough.
_MARKUP = re.compile(r"([\\`*_\[\]|~!])")


def md_text(value: object) -> str:
    """`value` as plain text inside Markdown, in a paragraph, list item or table cell."""
    text = html.escape(shown(value), quote=False)  # control characters (a newline ends a row) as escapes; <, >, &
    return _MARKUP.sub(r"\\\1", text)


def md_code(value: object) -> str:
    """`value` as a code span: fenced by more backticks than it holds in a row (CommonMark),
    so nothing in it is markup. For paragraphs and lists: in a table cell use `md_text` (a
    `|` splits the row even inside a code span there)."""
    text = shown(value)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"
