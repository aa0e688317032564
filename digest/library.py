"""The reader's own library as seed papers: a BibTeX, RIS or CSL JSON export (Zotero, Mendeley, JabRef).

Files are parsed with bibtexparser and rispy (CSL JSON is plain JSON); only the parsed field values are
searched for an arXiv reference: a DOI 10.48550/arXiv.ID, an arxiv.org URL, an eprint with arXiv as its
archive, or "arXiv:ID" in any field (Zotero puts it in CSL's "number", BibTeX styles in "journal").
An entry without one is looked up by its exact title in the arXiv API, once: the answer (a paper or none)
is kept in the ``library_titles`` table, which this module owns. At most TITLE_LOOKUPS_PER_RUN titles are
asked per run, so a large library is matched over a few runs without a burst of requests.

The file is parsed again only when its size or modification time changed (the ``library_files`` table,
also this module's), so an edited or re-exported library counts from the next run on and a large one costs
nothing the runs after. It must be a regular file of at most MAX_LIBRARY_BYTES, in UTF-8 (with or without a
BOM), UTF-16 with a BOM, or else read as Windows-1252/Latin-1; anything else is one line, and the run ranks
without it. Entries
later in the file count as more recent, weighted as zotero-arxiv-daily weights a library by the order of
addition: 1 / (1 + log10(n)) for the n-th newest.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .arxiv.ids import InvalidArxivId, normalize_id, title_key
from .storage.db import now_iso, transaction

if TYPE_CHECKING:
    from .records import Paper

log = logging.getLogger(__name__)

_DOI = re.compile(r"10\.48550/arxiv\.(\S+)", re.I)
_URL = re.compile(r"arxiv\.org/(?:abs|pdf|html)/([^\s?#]+)", re.I)
_LABELLED = re.compile(r"arxiv:\s*(\S+)", re.I)


class LibraryError(Exception):
    """The library file cannot be read or parsed; one line naming the file."""


TITLE_LOOKUPS_PER_RUN = 20
MAX_LIBRARY_BYTES = 64 * 1024 * 1024  # a library of 100,000 entries is ~50 MB of BibTeX


@dataclass
class Library:
    """The entries in the file's order, each as (arXiv id or None, title)."""

    entries: list[tuple[str | None, str]] = field(default_factory=list)

    @property
    def titles(self) -> list[str]:
        """Titles of the entries with no arXiv reference, to look up."""
        return [title for paper_id, title in self.entries if paper_id is None and title_key(title)]


def read_library(path: str | Path) -> Library:
    path = Path(path).expanduser()
    text = _decoded(path, _library_bytes(path))
    try:
        return Library([(arxiv_id_of(entry), _title_of(entry)) for entry in _entries(path, text)])
    except RecursionError:
        raise LibraryError(f"{path}: nested too deeply to be a library export") from None


def library_of(db, path: str | Path) -> Library:
    """read_library, but parsed again only when the file's size or modification time changed."""
    path = Path(path).expanduser()
    try:
        status = path.stat()
    except OSError as exc:
        raise LibraryError(f"{path}: cannot read the library: {exc.strerror}") from None
    row = db.execute("SELECT entries FROM library_files WHERE path = ? AND size = ? AND mtime_ns = ?",
                     [str(path), status.st_size, status.st_mtime_ns]).fetchone()
    if row:
        return Library([(paper_id, title) for paper_id, title in json.loads(row[0])])
    library = read_library(path)
    with transaction(db):
        db.execute("INSERT OR REPLACE INTO library_files (path, size, mtime_ns, entries, read_at) "
                   "VALUES (?, ?, ?, ?, ?)", [str(path), status.st_size, status.st_mtime_ns,
                                              json.dumps(library.entries), now_iso()])
    return library


def _library_bytes(path: Path) -> bytes:
    """The file's bytes, when it is a regular file no larger than MAX_LIBRARY_BYTES. A FIFO or a device is
    refused before it is opened (reading one would wait forever, holding the run's lock)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise LibraryError(f"{path}: not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # swapped for a FIFO since: open it without waiting
    except OSError as exc:
        raise LibraryError(f"{path}: cannot read the library: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise LibraryError(f"{path}: not a regular file")
        data = handle.read(MAX_LIBRARY_BYTES + 1)
    if len(data) > MAX_LIBRARY_BYTES:
        raise LibraryError(f"{path}: larger than {MAX_LIBRARY_BYTES // 2**20} MB; export fewer entries")
    return data


def _decoded(path: Path, data: bytes) -> str:
    """UTF-8 (a BOM allowed), UTF-16 with its BOM, else Windows-1252 (Latin-1 where it has no character):
    the encodings reference managers export. NUL bytes mean a binary file, refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise LibraryError(f"{path}: not valid UTF-16, though it starts as UTF-16 does") from None
    if b"\0" in data:
        raise LibraryError(f"{path}: a binary file, not a BibTeX, RIS or CSL JSON export")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    log.info("%s: not UTF-8; read as Windows-1252", path)
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # one of the five bytes Windows-1252 leaves undefined: Latin-1 has them all
        return data.decode("latin-1")


def weigh(paper_ids: list[str]) -> dict[str, float]:
    """Each id (in the file's order, the last the newest) with its weight, newest first."""
    unique = list(dict.fromkeys(reversed(paper_ids)))
    return {paper_id: 1 / (1 + math.log10(n)) for n, paper_id in enumerate(unique, start=1)}


def _title_of(entry: dict) -> str:
    fields = {key.lower(): value for key, value in entry.items()}
    title = fields.get("title") or fields.get("primary_title") or ""
    return _text(title).replace("{", "").replace("}", "")


# -- titles matched through the arXiv API, once (the library_titles table) -----------------------------

def matched_titles(db, titles: list[str], find: Callable[[str], "Paper | None"] | None,
                   ) -> tuple[dict[str, str | None], list["Paper"], int]:
    """(title key -> arXiv id or None for every title known, papers found now, titles still to ask).

    ``find(title)`` asks the arXiv API for a paper of exactly that title (``arxiv.api.find_by_title``); it
    may raise when arXiv cannot be reached, which ends the lookups for this run, nothing remembered."""
    keys = list(dict.fromkeys(title_key(t) for t in titles if title_key(t)))
    known = {row[0]: row[1] for row in db.execute(
        f"SELECT title, paper_id FROM library_titles WHERE title IN ({','.join('?' * len(keys))})", keys)}
    by_key = {title_key(t): t for t in titles}
    found: list[Paper] = []
    asked = 0
    for key in [k for k in keys if k not in known][:TITLE_LOOKUPS_PER_RUN if find else 0]:
        try:
            paper = find(by_key[key])
        except Exception as exc:  # arXiv unreachable: ask again next run
            log.warning("library titles not looked up now: %s", exc)
            break
        asked += 1
        known[key] = paper.id if paper else None
        found += [paper] if paper else []
        with transaction(db):
            db.execute("INSERT OR REPLACE INTO library_titles (title, paper_id, looked_up_at) VALUES (?, ?, ?)",
                       [key, known[key], now_iso()])
    return known, found, sum(k not in known for k in keys)


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
