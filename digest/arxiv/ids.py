"""arXiv identifiers: new style (2401.01234) and old style (hep-th/9901001), with or without a version."""

from __future__ import annotations

import re


class InvalidArxivId(ValueError):
    pass


_NEW_STYLE = re.compile(r"(?P<id>\d{2}(?:0[1-9]|1[0-2])\.\d{4,5})(?:v(?P<v>[1-9]\d*))?")
# Old style: archive, optional subject class (dropped: the id is archive/YYMMNNN), seven digits.
_OLD_STYLE = re.compile(r"(?P<archive>[a-z]+(?:-[a-z]+)?)(?:\.[A-Za-z-]{2,})?/(?P<num>\d{2}(?:0[1-9]|1[0-2])\d{3})"
                        r"(?:v(?P<v>[1-9]\d*))?")
_PREFIXES = re.compile(
    r"^(?:oai:arxiv\.org:|arxiv:|(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/)", re.IGNORECASE)


def normalize_id(text: str) -> tuple[str, int | None]:
    """``"2401.01234v2"`` -> ``("2401.01234", 2)``; ``"hep-th/9901001"`` -> ``("hep-th/9901001", None)``.

    Accepts an ``arXiv:`` prefix, the feed's ``oai:arXiv.org:`` guid, and abs/pdf URLs.
    """
    cleaned = _PREFIXES.sub("", text.strip())
    cleaned = cleaned.removesuffix(".pdf").rstrip("/")
    match = _NEW_STYLE.fullmatch(cleaned)
    if match:
        return match["id"], int(match["v"]) if match["v"] else None
    match = _OLD_STYLE.fullmatch(cleaned)
    if match:
        return f"{match['archive']}/{match['num']}", int(match["v"]) if match["v"] else None
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise InvalidArxivId(f'"{shown}" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)')


def title_key(title: str) -> str:
    """A title as compared: lower case, words only ("{BERT}: Pre-training" -> "bert pre training")."""
    return " ".join(re.findall(r"[^\W_]+", title.lower()))
