"""Reading arXiv's Atom documents safely: the feed and the API both answer in Atom, and both put their
errors inside a document. Pure functions over bytes; nothing here does I/O."""

from __future__ import annotations

import datetime as dt
import re

from lxml import etree

from .calendar import ET

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV_NS = "{http://arxiv.org/schemas/atom}"
OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
DC = "{http://purl.org/dc/elements/1.1/}"

# No entity expansion, no network, no DTD: a hostile answer cannot make the parser fetch or blow up.
_XML_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)


class FeedError(Exception):
    """The answer is not a usable Atom document: an HTML page, truncated XML, or arXiv's own error."""


def atom_root(xml: bytes):
    """The document's <feed> element. Raises :class:`FeedError` saying what came instead."""
    if not isinstance(xml, (bytes, bytearray)):
        raise FeedError(f"expected the answer as bytes, got {type(xml).__name__}")
    head = bytes(xml[:512]).lstrip().lower()
    if head.startswith(b"<!doctype html") or head.startswith(b"<html"):
        raise FeedError(f"arXiv answered with an HTML page instead of a feed{_html_headline(xml)}")
    if not head:
        raise FeedError("arXiv answered with an empty document instead of a feed")
    try:
        root = etree.fromstring(bytes(xml), etree.XMLParser(**_XML_PARSER_OPTIONS))
    except etree.XMLSyntaxError as exc:
        reason = (exc.msg or "unreadable").split(",")[0][:120]
        line, column = exc.position if exc.position else (0, 0)
        raise FeedError(f"the feed is not valid XML (cut off or damaged) at line {line}, column {column}: "
                        f"{reason}") from None
    except (ValueError, etree.LxmlError) as exc:
        raise FeedError(f"the feed is not valid XML: {str(exc)[:160]}") from None
    if root is None or not isinstance(root.tag, str):
        raise FeedError("the feed is not valid XML: no root element")
    if root.tag.lower().endswith("html"):
        raise FeedError(f"arXiv answered with an HTML page instead of a feed{_html_headline(xml)}")
    if root.tag != f"{ATOM}feed":
        raise FeedError(f"expected an Atom <feed>, got <{etree.QName(root).localname}>")
    raise_if_error_document(root)
    return root


def raise_if_error_document(root) -> None:
    """arXiv reports errors inside a feed: the RSS service titles it "Feed error for query: ...",
    the API sends one entry whose id points at api/errors and whose summary says what is wrong."""
    title = text(root.find(f"{ATOM}title"))
    if title.lower().startswith("feed error"):
        raise FeedError(title)
    first = root.find(f"{ATOM}entry")
    if first is not None and "/api/errors" in text(first.find(f"{ATOM}id")):
        raise FeedError(text(first.find(f"{ATOM}summary")) or "arXiv reported an error")


def error_text(body: bytes) -> str:
    """What arXiv's error document says, in one short line (for an HTTP 400)."""
    try:
        atom_root(body)
    except FeedError as exc:
        return str(exc)
    return "no reason given"


def _html_headline(xml: bytes) -> str:
    match = re.search(rb"<(?:title|h1)[^>]*>([^<]{1,120})<", bytes(xml[:4096]), re.I)
    if not match:
        return ""
    return f" ({' '.join(match.group(1).decode('utf-8', 'replace').split())})"


def text(element) -> str:
    """An element's text with its whitespace collapsed; "" for a missing element."""
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def iso_stamp(stamp: str) -> str | None:
    """An Atom timestamp as ISO 8601 with an explicit offset (``Z`` -> ``+00:00``); None if unreadable."""
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).isoformat() if stamp else None
    except ValueError:
        return None


def et_day(stamp: str) -> dt.date | None:
    """The ET date of an ISO timestamp; None when it cannot be read."""
    if not stamp:
        return None
    try:
        moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(ET).date()


class EntryProblem(ValueError):
    """One entry that cannot be used; the others still are. ``label`` names it in the log."""

    def __init__(self, label: str, message: str):
        super().__init__(message)
        self.label = label
