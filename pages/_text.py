"""Text that came from outside (blob names, metadata, tags, reasons, e-mails) shown as text, never as Markdown.

Not a page. Streamlit reads Markdown in `st.markdown`, `st.caption`, `st.error` and the other alerts,
`st.subheader`, `st.table` cells, tooltips (`help=`) and in every widget's label: a blob named
`![x](http://host/x.png)` would make each reviewer's browser load that address, and `**x**`, `:red[x]`,
`$x$` or `:material/x:` would format. Where a whole element is outside text, `st.text` or `st.code` show it
as it is; where it is part of a sentence or a label, `md()` escapes it.

Streamlit's Markdown is GitHub-flavoured (CommonMark) plus its own directives (`:red[...]`, `:small[...]`,
`:material/icon:`, emoji shortcodes `:smile:`), LaTeX between `$` and typographic replacements (`->`, `--`).
CommonMark lets a backslash escape any ASCII punctuation: `md()` escapes the characters that start something
within a line (emphasis, code, links and images, HTML and autolinks, e-mail autolinks, directives, LaTeX,
entities, tables) and the markers that start a block at the beginning of the text. What Streamlit replaces
in the text after parsing (shortcodes, `->`), a backslash does not stop: a word joiner (U+2060, invisible)
goes between the characters instead. Line breaks are folded into spaces. Ordinary names (`12-2026-11-02-
10-00-00.jpg.dec`) come out unchanged, so the label a screen reader announces stays the name.
"""

from __future__ import annotations

import re

# Always: backslash, code, emphasis `*`, strikethrough, links and images, HTML and autolinks, LaTeX, entities,
# e-mail autolinks, tables. `_` only where it can open or close emphasis (not between two letters or digits, as
# in `model_name`); `:` only where a directive, shortcode or URL scheme could follow (`:red[`, `:smile:`, `://`).
_INLINE = re.compile(r"([\\`*~\[\]<>$&@|]|(?<![^\W_])_|_(?![^\W_])|:(?=[\w+\-/\[]))")
_BLOCK_START = re.compile(r"^(\s*)([#+\-](?=\s|$)|>)")
_NUMBERED = re.compile(r"^(\s*\d+)([.)])(?=\s|$)")
_WWW = re.compile(r"(?i)\b(www)\.")
_WORD_JOINER = "\u2060"
_REPLACED_PAIRS = re.compile(r"(?<=[-<>~])(?=[->=])|(?<=<)(?=-)")
_SHORTCODE = re.compile(r"(?<=:)(?=[\w+\-/]+:)")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")


def md(text: object) -> str:
    """`text` escaped for any place Streamlit reads Markdown: it shows exactly as written, formats nothing."""
    plain = _LINE_BREAKS.sub(" ", "" if text is None else str(text))
    plain = _SHORTCODE.sub(_WORD_JOINER, _REPLACED_PAIRS.sub(_WORD_JOINER, plain))
    escaped = _INLINE.sub(r"\\\1", plain)
    escaped = _WWW.sub(r"\1\\.", escaped)
    escaped = _BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped, count=1)
    escaped = _NUMBERED.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped, count=1)
    return escaped


def unescape(label: str) -> str:
    """What `md()` escaped, as it was (what a reviewer reads): for finding an element by the text it shows."""
    return re.sub(r"\\(.)", r"\1", label.replace(_WORD_JOINER, ""))
