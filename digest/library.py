"""The reader's own library as seed papers: a BibTeX, RIS or CSL JSON export (Zotero, Mendeley, JabRef).

Files are parsed with bibtexparser and rispy (CSL JSON is plain JSON); only the parsed field values are
searched for an arXiv reference: a DOI 10.48550/arXiv.ID, an arxiv.org URL, an eprint with arXiv as its
archive, or "arXiv:ID" in any field (Zotero puts it in CSL's "number", BibTeX styles in "journal").
Entries without one are counted and reported as skipped.

The file is read at every run, so an edited or re-exported library counts from the next run on. Entries
later in the file count as more recent, weighted as zotero-arxiv-daily weights a library by the order of
addition: 1 / (1 + log10(n)) for the n-th newest.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .arxiv.ids import InvalidArxivId, normalize_id

_DOI = re.compile(r"10\.48550/arxiv\.(\S+)", re.I)
_URL = re.compile(r"arxiv\.org/(?:abs|pdf|html)/([^\s?#]+)", re.I)
_LABELLED = re.compile(r"arxiv:\s*(\S+)", re.I)


class LibraryError(Exception):
    """The library file cannot be read or parsed; one line naming the file."""


@dataclass
class Library:
    """arXiv ids newest first, each with its weight, and how many entries had no arXiv reference."""

    weights: dict[str, float] = field(default_factory=dict)
    skipped: int = 0


def read_library(path: str | Path) -> Library:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise LibraryError(f"{path}: cannot read the library: {exc.strerror}") from None
    entries = _entries(path, text)
    library = Library()
    found = []
    for entry in entries:
        paper_id = arxiv_id_of(entry)
        if paper_id is None:
            library.skipped += 1
        elif paper_id not in found:
            found.append(paper_id)
    for n, paper_id in enumerate(reversed(found), start=1):  # the last entry is the newest
        library.weights[paper_id] = 1 / (1 + math.log10(n))
    return library


def _entries(path: Path, text: str) -> list[dict]:
    """Every entry as {field: value}, by the file's format (its suffix, else its first character)."""
    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix not in (".bib", ".ris") and text.lstrip()[:1] in "[{"):
        return _csl_json(path, text)
    if suffix == ".ris" or (suffix != ".bib" and text.lstrip().startswith("TY  -")):
        import rispy

        try:
            return rispy.loads(text)
        except (ValueError, IOError) as exc:
            raise LibraryError(f"{path}: not a RIS file this reader understands: {exc}") from None
    import bibtexparser

    parsed = bibtexparser.parse_string(text)
    if not parsed.entries and parsed.failed_blocks:
        raise LibraryError(f"{path}: no BibTeX entry could be read ({len(parsed.failed_blocks)} broken blocks)")
    return [{**{k: f.value for k, f in e.fields_dict.items()}, "ENTRYTYPE": e.entry_type} for e in parsed.entries]


def _csl_json(path: Path, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LibraryError(f"{path}: not CSL JSON: {exc.msg} at line {exc.lineno}") from None
    items = data.get("items", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise LibraryError(f"{path}: CSL JSON must be a list of items")
    return [item for item in items if isinstance(item, dict)]


def arxiv_id_of(entry: dict) -> str | None:
    """The arXiv id an entry refers to, without version; the DOI first, then the eprint, then any field."""
    fields = {key.lower(): value for key, value in entry.items()}
    candidates = []
    candidates += _DOI.findall(_text(fields.get("doi")))
    archive = _text(fields.get("archiveprefix") or fields.get("eprinttype") or fields.get("archive")).lower()
    if "arxiv" in archive:
        candidates.append(_text(fields.get("eprint")))
    everything = " ".join(_text(v) for v in fields.values())
    candidates += _URL.findall(everything) + _DOI.findall(everything) + _LABELLED.findall(everything)
    for candidate in candidates:
        candidate = candidate.strip().rstrip(".,;)}").removesuffix(".pdf")
        try:
            return normalize_id(candidate)[0]
        except InvalidArxivId:
            continue
    return None


def _text(value) -> str:
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return " ".join(_text(v) for v in value.values())
    return "" if value is None else str(value)
