"""Small rules about text shown to a person, each written once."""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata

from .taxonomy import CATEGORIES

# Search hits in a snippet: control characters never appear in arXiv text, so they cannot be confused with it.
HIT_START, HIT_END = "\x02", "\x03"


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 paper``, ``2 papers``, ``1,204 papers``."""
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def one_line(exc: BaseException) -> str:
    """An exception as the one line a user reads; digest's own failures are already phrased for that."""
    text = " ".join(str(exc).split())
    if getattr(exc, "phrased", False):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def nearest(word: str, known, cutoff: float = 0.6) -> str | None:
    """The one of ``known`` closest to a mistyped ``word`` (difflib's ratio at least ``cutoff``), or
    None: the "did you mean" of a one-line error."""
    import difflib  # here: only a mistake pays for it

    near = difflib.get_close_matches(word, list(known), n=1, cutoff=cutoff)
    return near[0] if near else None


def shown_value(value) -> str:
    """A configuration value as an error message quotes it: ``"abc"``, ``42``, ``true``, ``a table``."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (dt.date, dt.time, dt.datetime)):
        return value.isoformat()
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    """One CSV cell, the same in every CSV digest writes: lists joined with "; ", nothing for None, and
    text that a spreadsheet would run as a formula (a title starting with "=") kept as text with a
    leading apostrophe. Numbers are left alone: -0.12 is a score, not a formula."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = "; ".join(map(str, value))
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_START) else value
    return str(value)


def shown_cell(value) -> str:
    """A value in a terminal table: lists joined with ", ", nothing for None."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


# -- untrusted text -------------------------------------------------------------------------------------

HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<!--.*?-->", re.S)
# A scheme URL, www., a script/data URI, or a bare host with a common top-level domain and an optional
# path: anything a mail client or chat app could turn into a link.
LINK = re.compile(
    r"(?:\b[A-Za-z][A-Za-z0-9+.\-]*://|\bwww\.)[^\s<>\"'`)\]]+"
    r"|\b(?:javascript|vbscript|data):[^\s<>\"'`)\]]+"
    r"|\b(?:[A-Za-z0-9-]+\.)+(?:com|net|org|io|ai|dev|app|co|info|biz|xyz|me|ly|gl|link|site|online|top|ru|cn|tk"
    r"|example)(?![\w-])(?:/[^\s<>\"'`)\]]*)?",
    re.I,
)
ARXIV_HOST = re.compile(r"^(?:[a-z][a-z0-9+.\-]*://)?(?:[a-z0-9-]+\.)*arxiv\.org(?:[/:?#]|$)", re.I)
# An arXiv category code (cs.AI, math.CO) or an old-style id (cs.AI/0101001) looks like a host with a
# top-level domain, but it is an identifier: written exactly as arXiv writes it, it stays.
ARXIV_CODE = re.compile(r"^(?P<code>[a-z-]+\.[A-Za-z-]+)(?:/\d{7}(?:v\d+)?)?$")
SCRIPT_URI = re.compile(r"^(?:javascript|vbscript|data):", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
LINK_REMOVED = "[link removed]"


def clean_untrusted(text: str, max_chars: int | None = None, *, tags: bool = False) -> str:
    """Untrusted text (a paper's title, authors or abstract; with ``tags``, an LLM's answer) as one line a
    reader sees as it is: no character that hides or reorders text (bidi overrides, zero-width
    characters), no link but arXiv's (mail clients and chat apps make bare URLs clickable: any other
    address is shown defanged, ``github[.]com/x/y``, readable but never a link; a script or data URI is
    removed), whitespace collapsed, and at most ``max_chars``, cut at a word. ``tags``: HTML tags are
    removed too, for text that is not escaped where it is shown. The one cleaning for the email, chat,
    files, feed and LLM."""
    text = str(text)
    if tags:
        text = HTML_TAG.sub(" ", text)
    text = LINK.sub(_shown_link, identifier_text(text))  # an address holds no white space
    if tags:
        text = re.sub(r" +([.,;:!?])", r"\1", text)  # where a removed tag left a gap
    return cap(text, max_chars) if max_chars else text


def identifier_text(text: str) -> str:
    """An identifier from the record (an author's name, category codes) as one line, shown as it is: only
    the characters that hide or reorder text go. Never through the link cleaner, which would take
    ``cs.AI`` for a web address."""
    return " ".join("".join(_visible(ch) for ch in str(text)).split())


def _visible(ch: str) -> str:
    """Format characters (bidi overrides and isolates, zero-width characters) go: they hide or reorder
    text. Control characters (a bell, a newline) become a space: they separate words."""
    category = unicodedata.category(ch)
    return "" if category == "Cf" else " " if category == "Cc" else ch


def _shown_link(match: re.Match) -> str:
    link = match.group(0)
    trailing = len(link) - len(link.rstrip(".,;:!?"))  # sentence punctuation is not part of a link
    link, after = link[:len(link) - trailing], link[len(link) - trailing:]
    if ARXIV_HOST.match(link) or _is_arxiv_code(link):
        return link + after
    if SCRIPT_URI.match(link):
        return LINK_REMOVED + after
    return defanged(link) + after


def defanged(link: str) -> str:
    """``https://github.com/x/y.git`` -> ``github[.]com/x/y[.]git``: the address stays readable (a
    product named after its domain, a paper's code) but no mail client or chat app makes it a link."""
    return SCHEME.sub("", link).replace(".", "[.]")


def _is_arxiv_code(text: str) -> bool:
    code = ARXIV_CODE.match(text)
    return bool(code) and code["code"] in CATEGORIES


def cap(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars``, at a word where one is near, with an ellipsis."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars - 1]
    if " " in cut[max_chars // 2:]:
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip(" ,;:") + "…"
