"""The history: search, inspect, feedback and export over everything ever fetched.

Library functions behind `digest search`, `show`, `related`, `digests`, `digest`, `like`, `dislike`,
`feedback`, `export`, `stats` and `status`. Each takes ``db`` (and ``settings`` where it needs them) and
returns plain data; the ``*_view`` functions turn that data into rich renderables for the terminal.

Semantic search reads vectors from a float32 matrix file beside the database (:class:`VectorIndex`),
kept in step with the ``embeddings`` table on every use, because reading a million blobs out of SQLite
for each query would take seconds.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import functools
import io
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from . import db as dbm
from . import ledger
from .config import Settings
from .deliver import outbox
from .records import Paper, Summary
from .taxonomy import is_known
from .text import csv_cell, plural, shown_cell

EmbedText = Callable[[str], np.ndarray]

# snippet() markers: control characters never appear in arXiv text, so they cannot be confused with it.
HIT_START, HIT_END = "\x02", "\x03"
# bm25 column weights for title, abstract, authors: a word in the title says more than one in the abstract.
BM25_WEIGHTS = (5.0, 1.0, 3.0)


class HistoryError(ValueError):
    """A user's mistake (bad id, bad query, unknown day), phrased as the one line they see."""


# -- arXiv ids --------------------------------------------------------------------------------------

def normalize_paper_id(text: str) -> str:
    """An arXiv id without version (a version, URL or arXiv: prefix is accepted and dropped)."""
    from .arxiv.ids import InvalidArxivId, normalize_id

    try:
        return normalize_id(text)[0]
    except InvalidArxivId as exc:
        raise HistoryError(str(exc)) from None


# -- filters shared by search, semantic search and export -----------------------------------------

@dataclass
class Filters:
    """Narrow a search. ``since``/``until`` bound the announcement day; ``profile`` keeps papers that
    appeared in that profile's digests; ``liked`` keeps papers liked (for ``profile``, or by anyone)."""

    since: dt.date | None = None
    until: dt.date | None = None
    category: str | None = None
    author: str | None = None
    profile: str | None = None
    liked: bool = False

    def check(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise HistoryError(f"--since {self.since} is after --until {self.until}")
        if self.category is not None and not is_known(self.category):
            raise HistoryError(f"--category: {json.dumps(self.category)} is not an arXiv category "
                               f"(e.g. cs.CL, or an archive such as cs)")
        if self.author is not None and not self.author.strip():
            raise HistoryError("--author: empty name")

    def sql(self, alias: str = "p") -> tuple[str, list]:
        """A WHERE fragment (starting with AND, or empty) over papers ``alias``, and its parameters."""
        where, params = [], []
        if self.since or self.until:
            where.append(f"EXISTS (SELECT 1 FROM announcements a WHERE a.paper_id = {alias}.id "
                         f"AND a.announced_on BETWEEN ? AND ?)")
            params += [(self.since or dt.date.min).isoformat(), (self.until or dt.date.max).isoformat()]
        if self.category:
            where.append(f"EXISTS (SELECT 1 FROM json_each({alias}.categories) c "
                         f"WHERE c.value = ? OR c.value LIKE ? ESCAPE '\\')")
            params += [self.category, _like_escape(self.category) + ".%"]
        if self.author:
            where.append(f"{alias}.authors LIKE ? ESCAPE '\\'")
            params.append("%" + _like_escape(self.author.strip()) + "%")
        if self.profile:
            where.append(f"EXISTS (SELECT 1 FROM digest_items di JOIN digests d ON d.id = di.digest_id "
                         f"WHERE di.paper_id = {alias}.id AND d.profile = ?)")
            params.append(self.profile)
        if self.liked:
            where.append(f"EXISTS (SELECT 1 FROM feedback f WHERE f.paper_id = {alias}.id AND f.value = 1"
                         + (" AND f.profile IN ('', ?))" if self.profile else ")"))
            params += [self.profile] if self.profile else []
        return "".join(f" AND {w}" for w in where), params


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- full-text search ------------------------------------------------------------------------------

_TERM = re.compile(r'"([^"]*)"|(\S+)')


def fts_query(text: str) -> str:
    """The user's words as a safe FTS5 query: every term quoted, so ``"``, ``*``, ``NEAR``, ``AND`` or a
    stray parenthesis is searched as text instead of parsed. ``"a b"`` stays a phrase; a trailing ``*``
    on a word is kept as a prefix search. Terms are ANDed, as in a search box."""
    parts = []
    for phrase, word in _TERM.findall(text):
        token = phrase if phrase else word
        prefix = bool(word) and word.endswith("*")
        token = token.replace('"', " ").strip("*")
        if not re.search(r"\w", token):
            continue
        parts.append('"' + token.strip() + '"' + ("*" if prefix else ""))
    if not parts:
        raise HistoryError(f"nothing to search for in {json.dumps(text)}: give at least one word")
    return " ".join(parts)


def search(db, query: str, filters: Filters | None = None, limit: int = 20, raw: bool = False) -> list[dict]:
    """Papers matching ``query`` (titles, abstracts, authors), best bm25 first, each with a snippet
    whose hits are marked by HIT_START/HIT_END. ``raw`` passes FTS5 syntax through for experts."""
    filters = filters or Filters()
    filters.check()
    if not query.strip():
        raise HistoryError("empty query: give words to search for")
    match = query if raw else fts_query(query)
    where, params = filters.sql()
    weights = ", ".join(map(str, BM25_WEIGHTS))
    sql = (
        f"SELECT p.id, p.version, p.title, p.authors, p.categories, p.primary_category, "
        f"bm25(papers_fts, {weights}) AS bm25_score, "
        f"snippet(papers_fts, -1, '{HIT_START}', '{HIT_END}', '…', 24) AS snippet "
        f"FROM papers_fts JOIN papers p ON p.rowid = papers_fts.rowid "
        f"WHERE papers_fts MATCH ?{where} ORDER BY bm25_score LIMIT ?"
    )
    try:
        rows = list(db.query(sql, [match, *params, limit]))
    except sqlite3.OperationalError as exc:
        if raw:
            raise HistoryError(f"--raw: not a valid FTS5 query: {exc}") from None
        raise
    first_days = _first_days(db, [r["id"] for r in rows])
    return [_result(r, first_days, score=round(-r["bm25_score"], 3), snippet=_clean_snippet(r["snippet"]))
            for r in rows]


def _clean_snippet(snippet: str) -> str:
    # The authors column holds a JSON list; a snippet from it reads better without the JSON quoting.
    if snippet.startswith('["') or snippet.startswith('…"'):
        snippet = snippet.replace('", "', ", ").replace('["', "").replace('"]', "")
    return " ".join(snippet.split())


def _result(row: dict, first_days: dict[str, str], **extra) -> dict:
    return {
        "id": row["id"],
        "title": " ".join(row["title"].split()),
        "authors": json.loads(row["authors"]),
        "categories": json.loads(row["categories"]),
        "announced": first_days.get(row["id"]),
        **extra,
    }


def _first_days(db, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    return dict(db.execute(f"SELECT paper_id, MIN(announced_on) FROM announcements WHERE paper_id IN ({marks}) "
                           f"GROUP BY paper_id", ids).fetchall())


def plain_snippet(snippet: str, start: str = "**", end: str = "**") -> str:
    """A snippet for JSON and CSV: hits marked the Markdown way."""
    return snippet.replace(HIT_START, start).replace(HIT_END, end)


# -- vectors ---------------------------------------------------------------------------------------

class VectorIndex:
    """One model's embeddings as two memory-mapped files beside the database: ``<model>.f32`` (a float32
    matrix, one row per paper) and ``<model>.ids`` (fixed-width ids, same order), in ``<db>.vectors/``.

    The ``embeddings`` table stays the truth. Its rows only grow or are replaced (a replaced row gets a
    new rowid), so the index remembers the highest rowid it has read and, when opened, appends or
    overwrites whatever came after: one indexed lookup when nothing changed. Deleting the folder forces
    a rebuild. Fixed-width ids let a query map rows to ids without reading a million of them.
    """

    ID_WIDTH = 32  # bytes; the longest arXiv id (old style, "solv-int/9901001") is 16

    def __init__(self, db, model: str, folder: Path | None = None):
        self.db = db
        self.model = model
        self.folder = folder if folder is not None else _index_folder(db)
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.id_array = np.zeros(0, dtype=f"S{self.ID_WIDTH}")
        self._mapped: dict | None = None  # the metadata of what is mapped now

    def __len__(self) -> int:
        return len(self.id_array)

    def _path(self, suffix: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9._-]", "_", self.model) + suffix)

    def open(self) -> "VectorIndex":
        """Bring the files up to date with the table, then map them. Calling it again on an open index
        is the cheap check before each query: the mapping is kept unless the table changed, because a
        fresh mapping of a million rows costs more page faults than the scan itself."""
        if self.folder is None:  # an in-memory database: keep the matrix in memory too
            self._load_all_from_table()
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes syncing at once would interleave appends
            self._sync()
        return self

    def _sync(self) -> None:
        meta = self._read_meta()
        latest = self.db.execute("SELECT COALESCE(MAX(rowid), 0) FROM embeddings").fetchone()[0]
        if meta is None or meta["watermark"] > latest:
            # Missing, cut short, or from another database file: start again from the table.
            meta = {"watermark": 0, "count": 0, "dimensions": 0}
        if latest > meta["watermark"]:
            meta = self._apply_new_rows(meta, latest)
        if meta != self._mapped:
            self._map(meta)

    def _apply_new_rows(self, meta: dict, latest: int) -> dict:
        count, dims = meta["count"], meta["dimensions"]
        known = np.memmap(self._path(".ids"), dtype=self.id_array.dtype, mode="r", shape=(count,)) if count else []
        positions = {paper_id.decode(): n for n, paper_id in enumerate(known)}
        del known
        rows = self.db.execute(
            "SELECT paper_id, dimensions, vector FROM embeddings WHERE rowid > ? AND model = ? ORDER BY rowid",
            [meta["watermark"], self.model])
        mode = "r+b" if count else "w+b"
        with open(self._path(".f32"), mode) as vectors, open(self._path(".ids"), mode) as ids:
            for paper_id, dimensions, blob in rows:
                if dims and dimensions != dims:
                    continue  # a stray vector of another size cannot be compared; skip it
                dims = dimensions
                position = positions.get(paper_id)
                if position is None:
                    position = positions[paper_id] = count
                    count += 1
                vectors.seek(position * dims * 4)
                vectors.write(blob)
                ids.seek(position * self.ID_WIDTH)
                ids.write(paper_id.encode().ljust(self.ID_WIDTH, b"\0"))
            vectors.truncate(count * dims * 4)
            ids.truncate(count * self.ID_WIDTH)
        meta = {"watermark": latest, "count": count, "dimensions": dims}
        _write_atomically(self._path(".json"), json.dumps(meta))  # last: a crash before it redoes the rows
        return meta

    def _map(self, meta: dict) -> None:
        count, dims = meta["count"], meta["dimensions"]
        self._mapped = meta
        if count == 0:
            return
        self.matrix = np.memmap(self._path(".f32"), dtype="<f4", mode="r", shape=(count, dims))
        self.id_array = np.memmap(self._path(".ids"), dtype=self.id_array.dtype, mode="r", shape=(count,))

    def _read_meta(self) -> dict | None:
        try:
            meta = json.loads(self._path(".json").read_text())
            vectors, ids = self._path(".f32").stat().st_size, self._path(".ids").stat().st_size
        except (OSError, ValueError):
            return None
        if vectors < meta["count"] * meta["dimensions"] * 4 or ids < meta["count"] * self.ID_WIDTH:
            return None  # a file lost its tail (a disk full, a copy cut short): rebuild
        return meta

    def _load_all_from_table(self) -> None:
        rows = self.db.execute("SELECT paper_id, vector FROM embeddings WHERE model = ? ORDER BY rowid",
                               [self.model]).fetchall()
        latest = {paper_id: blob for paper_id, blob in rows}
        if latest:
            self.id_array = np.array([i.encode() for i in latest], dtype=self.id_array.dtype)
            self.matrix = np.vstack([np.frombuffer(b, dtype="<f4") for b in latest.values()])

    def id_at(self, row: int) -> str:
        return self.id_array[row].decode()

    def position(self, paper_id: str) -> int | None:
        found = np.flatnonzero(self.id_array == paper_id.encode())
        return int(found[0]) if len(found) else None

    def vector(self, paper_id: str) -> np.ndarray | None:
        position = self.position(paper_id)
        return None if position is None else np.array(self.matrix[position])

    def nearest(self, query: np.ndarray, count: int) -> list[tuple[int, float]]:
        """The ``count`` best (row, cosine) pairs. Vectors are L2-normalised, so a dot product is the cosine."""
        if not len(self) or count <= 0:
            return []
        scores = self.matrix @ np.asarray(query, dtype=np.float32)
        count = min(count, len(scores))
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(i), float(scores[i])) for i in best]


def _index_folder(db) -> Path | None:
    path = db.execute("PRAGMA database_list").fetchone()[2]
    return Path(path + ".vectors") if path else None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def embed_query(settings: Settings) -> EmbedText:
    """Text -> vector with the configured model, loaded once per process as for the run's own stages."""
    from .embed import shared_embedder

    embedder = shared_embedder(settings.embedding)
    return lambda text: embedder.embed_texts([text])[0]


def semantic_search(db, settings: Settings, query: str, filters: Filters | None = None, limit: int = 20,
                    embed: EmbedText | None = None, index: VectorIndex | None = None) -> list[dict]:
    """Papers nearest in meaning to ``query``, by cosine similarity of embeddings."""
    filters = filters or Filters()
    filters.check()
    if not query.strip():
        raise HistoryError("empty query: give words to search for")
    index = index or VectorIndex(db, settings.embedding.model).open()
    vector = (embed or embed_query(settings))(query)
    return _nearest_papers(db, index, vector, filters, limit, exclude=None)


def related(db, settings: Settings, paper_id: str, limit: int = 10, embed: EmbedText | None = None,
            index: VectorIndex | None = None) -> list[dict]:
    """The papers in the history nearest to ``paper_id`` by embedding."""
    paper_id = normalize_paper_id(paper_id)
    index = index or VectorIndex(db, settings.embedding.model).open()
    vector = index.vector(paper_id)
    if vector is None:
        paper = dbm.get_paper(db, paper_id)
        if paper is None:
            raise HistoryError(f"{paper_id} is not in your history; `digest show {paper_id}` fetches it")
        from .embed import paper_text

        vector = (embed or embed_query(settings))(paper_text(paper))
    return _nearest_papers(db, index, vector, Filters(), limit, exclude=paper_id)


def _nearest_papers(db, index: VectorIndex, vector: np.ndarray, filters: Filters, limit: int,
                    exclude: str | None) -> list[dict]:
    """Walk the ranking in growing slices until ``limit`` papers pass the filters."""
    where, params = filters.sql()
    wanted = limit + (1 if exclude else 0)
    take = wanted if not where else max(wanted * 20, 200)
    chosen: list[tuple[str, float]] = []
    while True:
        ranked = index.nearest(vector, take)
        candidates = [(index.id_at(i), score) for i, score in ranked if index.id_at(i) != exclude]
        if where:
            kept = _passing(db, [c[0] for c in candidates], where, params)
            candidates = [c for c in candidates if c[0] in kept]
        chosen = candidates[:limit]
        if len(chosen) >= limit or take >= len(index):
            break
        take *= 8
    rows = {r["id"]: r for r in db.query(
        f"SELECT id, title, authors, categories FROM papers WHERE id IN ({','.join('?' * len(chosen))})",
        [c[0] for c in chosen])}
    first_days = _first_days(db, list(rows))
    return [_result(rows[i], first_days, score=round(score, 4)) for i, score in chosen if i in rows]


def _passing(db, ids: list[str], where: str, params: list) -> set[str]:
    """Which of ``ids`` are stored papers matching the filter fragment."""
    kept: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        kept.update(r[0] for r in db.execute(f"SELECT p.id FROM papers p WHERE p.id IN ({marks}){where}",
                                             [*chunk, *params]))
    return kept


# -- one paper -------------------------------------------------------------------------------------

def paper_details(db, settings: Settings, paper_id: str, fetch=None) -> dict:
    """Everything known about a paper. One not stored is fetched from the arXiv API (``fetch`` is
    arxiv.fetch_papers), shown, and not stored: `show` only reads."""
    paper_id = normalize_paper_id(paper_id)
    paper = dbm.get_paper(db, paper_id)
    if paper is None:
        return {**_paper_fields(_fetch_one(settings, paper_id, fetch)), "stored": False, "versions": [],
                "announcements": [], "digests": [], "summary": None, "feedback": []}
    announcements = [dict(r) for r in db.query(
        "SELECT announced_on AS day, kind, version, source FROM announcements WHERE paper_id = ? "
        "ORDER BY announced_on", [paper_id])]
    digests = [dict(r) for r in db.query(
        "SELECT d.announced_on AS day, d.profile, di.rank, ROUND(di.score, 4) AS score, di.section, di.reason "
        "FROM digest_items di JOIN digests d ON d.id = di.digest_id WHERE di.paper_id = ? "
        "ORDER BY d.announced_on, d.profile", [paper_id])]
    versions = sorted({a["version"] for a in announcements} | {paper.version})
    return {**_paper_fields(paper), "stored": True, "versions": versions, "announcements": announcements,
            "digests": digests, "summary": _latest_summary(db, paper_id),
            "feedback": [dict(r) for r in db.query(
                "SELECT CASE profile WHEN '' THEN 'all profiles' ELSE profile END AS profile, "
                "CASE value WHEN 1 THEN 'like' ELSE 'dislike' END AS feedback, created_at "
                "FROM feedback WHERE paper_id = ? ORDER BY profile", [paper_id])]}


def _fetch_one(settings: Settings, paper_id: str, fetch) -> Paper:
    if fetch is None:
        from .arxiv.api import fetch_papers

        fetch = functools.partial(fetch_papers, raise_errors=True)  # ArxivError: a RunFailure, not "no such paper"
    papers, _ = fetch(settings, [paper_id])
    if not papers:
        raise HistoryError(f"{paper_id}: not in your history, and arXiv has no such paper")
    return papers[0]


def _paper_fields(paper: Paper) -> dict:
    return {
        "id": paper.id, "version": paper.version, "title": " ".join(paper.title.split()),
        "authors": paper.authors, "categories": paper.categories, "primary_category": paper.primary_category,
        "published": paper.published, "updated": paper.updated, "comment": paper.comment,
        "journal_ref": paper.journal_ref, "doi": paper.doi, "url": paper.abs_url, "abstract": paper.abstract,
    }


def _latest_summary(db, paper_id: str) -> dict | None:
    row = db.execute("SELECT tldr, faq, model, language, version FROM summaries WHERE paper_id = ? "
                     "ORDER BY created_at DESC, version DESC LIMIT 1", [paper_id]).fetchone()
    if row is None:
        return None
    try:
        faq = json.loads(row[1])
    except ValueError:
        faq = {}
    questions = [{"question": q, "answer": faq[key]} for key, q in Summary.FAQ if faq.get(key)]
    return {"tldr": row[0], "faq": questions, "model": row[2], "language": row[3], "version": row[4]}


# -- digests ---------------------------------------------------------------------------------------

def list_digests(db, profile: str | None = None, limit: int | None = None) -> list[dict]:
    """The digests built, newest first, with each channel's delivery status."""
    rows = [dict(r) for r in db.query(
        "SELECT id, announced_on AS day, profile, announced, new, cross, replaced, summarized, subject "
        "FROM digests WHERE (? IS NULL OR profile = ?) ORDER BY announced_on DESC, profile LIMIT ?",
        [profile, profile, -1 if limit is None else limit])]
    for row in rows:
        row["deliveries"] = [{k: d[k] for k in ("channel", "target", "status", "attempts", "sent_at", "last_error")}
                             for d in outbox.for_digests(db, [row["id"]])]
        row["delivery"] = "; ".join(
            f"{d['channel']}{' ' + d['target'] if d['target'] else ''}: {d['status']}" for d in row["deliveries"]
        ) or "not queued"
    return rows


def day_digests(db, day: dt.date, profile: str | None = None) -> list[dict]:
    """One day's digests as the email had them: the stored text render, or else the ranked list
    rebuilt from digest_items (a digest built before renders were stored)."""
    digests = [dict(r) for r in db.query(
        "SELECT id, profile, announced_on AS day, subject FROM digests WHERE announced_on = ? "
        "AND (? IS NULL OR profile = ?) ORDER BY profile", [day.isoformat(), profile, profile])]
    if not digests:
        raise HistoryError(f"no digest for {day}{' and profile ' + profile if profile else ''}; "
                           f"`digest digests` lists the days there are")
    for digest in digests:
        digest["items"] = [dict(r) for r in db.query(
            "SELECT di.rank, di.paper_id AS id, ROUND(di.score, 4) AS score, di.section, di.kind, di.reason, "
            "p.title FROM digest_items di JOIN papers p ON p.id = di.paper_id WHERE di.digest_id = ? "
            "ORDER BY di.rank", [digest["id"]])]
        rendered = db.execute("SELECT body FROM renders WHERE digest_id = ? AND format = 'text'",
                              [digest["id"]]).fetchone()
        digest["text"] = rendered[0] if rendered else _items_as_text(digest)
    return digests


def _items_as_text(digest: dict) -> str:
    lines = [digest["subject"] or f"arXiv digest {digest['day']} ({digest['profile']})", ""]
    section = None
    for item in digest["items"]:
        if item["section"] != section:
            section = item["section"]
            lines += ["", {"top": "Top papers", "rest": "Everything else",
                           "replaced": "Replaced"}.get(section, section), ""]
        title = " ".join(item["title"].split())
        lines.append(f"{item['rank']:>4}. {title} [{item['id']}] ({item['score']:.3f}, {item['kind']})")
        lines.append(f"      {item['reason']}")
    return "\n".join(lines).replace("\n\n\n", "\n\n").strip() + "\n"


# -- feedback --------------------------------------------------------------------------------------

def set_feedback(db, paper_id: str, value: int, profile: str = "") -> dict:
    """Like (+1) or dislike (-1) a paper, for one profile or ('') all; the latest word wins."""
    paper_id = normalize_paper_id(paper_id)
    with dbm.transaction(db):
        db.execute("INSERT INTO feedback (paper_id, profile, value, created_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (paper_id, profile) DO UPDATE SET value = excluded.value, "
                   "created_at = excluded.created_at", [paper_id, profile, value, dbm.now_iso()])
    paper = dbm.get_paper(db, paper_id)
    return {"id": paper_id, "profile": profile, "value": value, "title": paper.title if paper else None}


def list_feedback(db, profile: str | None = None) -> list[dict]:
    return [dict(r) for r in db.query(
        "SELECT f.paper_id AS id, CASE f.value WHEN 1 THEN 'like' ELSE 'dislike' END AS feedback, "
        "f.profile, COALESCE(p.title, '') AS title, f.created_at FROM feedback f "
        "LEFT JOIN papers p ON p.id = f.paper_id WHERE (? IS NULL OR f.profile = ?) "
        "ORDER BY f.created_at DESC, f.paper_id", [profile, profile])]


def clear_feedback(db, paper_ids: Iterable[str] = (), profile: str | None = None, everything: bool = False) -> int:
    """Forget feedback on ``paper_ids`` (or on every paper with ``everything``). Returns rows removed."""
    ids = [normalize_paper_id(i) for i in paper_ids]
    with dbm.transaction(db):
        if everything:
            cursor = db.execute("DELETE FROM feedback WHERE (? IS NULL OR profile = ?)", [profile, profile])
            return cursor.rowcount
        removed = 0
        for paper_id in ids:
            removed += db.execute("DELETE FROM feedback WHERE paper_id = ? AND (? IS NULL OR profile = ?)",
                                  [paper_id, profile, profile]).rowcount
    return removed


# -- export ----------------------------------------------------------------------------------------

EXPORT_FORMATS = ("bibtex", "ris", "csv", "json")


def papers_for_export(db, ids: list[str]) -> list[tuple[Paper, str | None]]:
    """(paper, first announcement day) in the order of ``ids``."""
    papers = dbm.get_papers(db, ids)
    first_days = _first_days(db, list(papers))
    return [(papers[i], first_days.get(i)) for i in ids if i in papers]


def day_paper_ids(db, day: dt.date, profile: str | None = None) -> list[str]:
    """A day's papers: in the profile's ranked order when given, else in arXiv's listing order."""
    if profile:
        rows = db.execute("SELECT di.paper_id FROM digest_items di JOIN digests d ON d.id = di.digest_id "
                          "WHERE d.announced_on = ? AND d.profile = ? ORDER BY di.rank", [day.isoformat(), profile])
    else:
        rows = db.execute("SELECT paper_id FROM announcements WHERE announced_on = ? ORDER BY position, paper_id",
                          [day.isoformat()])
    ids = [r[0] for r in rows]
    if not ids:
        raise HistoryError(f"nothing stored for {day}{' in profile ' + profile if profile else ''}")
    return ids


def liked_paper_ids(db, profile: str | None = None) -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT DISTINCT paper_id FROM feedback WHERE value = 1 AND (? IS NULL OR profile IN ('', ?)) "
        "ORDER BY paper_id", [profile, profile])]


def export_papers(papers: list[tuple[Paper, str | None]], fmt: str) -> str:
    writer = {"bibtex": to_bibtex, "ris": to_ris, "csv": to_csv, "json": to_json}[fmt]
    return writer(papers)


def _year(paper: Paper, day: str | None) -> str:
    if day:
        return day[:4]
    if paper.published:
        return paper.published[:4]
    new_style = re.match(r"(\d{2})\d{2}\.", paper.id) or re.search(r"/(\d{2})\d{5}$", paper.id)
    two = int(new_style.group(1)) if new_style else 0
    return str(1900 + two if two >= 91 else 2000 + two)


def _bibtex_value(text: str) -> str:
    """Braces kept balanced (an unbalanced one would end the entry) and TeX's specials escaped."""
    text = " ".join(text.split())
    text = re.sub(r"(?<!\\)([&%#])", r"\\\1", text)
    depth = 0
    out = []
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                out.append("\\}")
                continue
            depth -= 1
        out.append(char)
    return "".join(out) + "}" * depth


def bibtex_key(paper: Paper) -> str:
    return "arXiv:" + paper.id.replace("/", "_")


def to_bibtex(papers: list[tuple[Paper, str | None]]) -> str:
    entries = []
    for paper, day in papers:
        fields = [
            ("title", "{" + _bibtex_value(paper.title) + "}"),
            ("author", " and ".join(_bibtex_value(a) for a in paper.authors)),
            ("year", _year(paper, day)),
            ("eprint", paper.id),
            ("archivePrefix", "arXiv"),
            ("primaryClass", paper.primary_category),
            ("url", paper.abs_url),
        ]
        if paper.doi:
            fields.append(("doi", paper.doi))
        if paper.journal_ref:
            fields.append(("journal", _bibtex_value(paper.journal_ref)))
        fields.append(("abstract", _bibtex_value(paper.abstract)))
        body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
        entries.append(f"@misc{{{bibtex_key(paper)},\n{body}\n}}\n")
    return "\n".join(entries)


def to_ris(papers: list[tuple[Paper, str | None]]) -> str:
    records = []
    for paper, day in papers:
        lines = [("TY", "UNPB"), ("TI", " ".join(paper.title.split()))]
        lines += [("AU", author) for author in paper.authors]
        lines += [("PY", _year(paper, day)), ("DA", (day or "").replace("-", "/")), ("AB", " ".join(paper.abstract.split())),
                  ("UR", paper.abs_url), ("PB", "arXiv"), ("M1", f"arXiv:{paper.id}")]
        lines += [("KW", c) for c in paper.categories]
        if paper.doi:
            lines.append(("DO", paper.doi))
        records.append("".join(f"{tag}  - {value}\n" for tag, value in lines if value) + "ER  - \n")
    return "\n".join(records)


EXPORT_COLUMNS = ["id", "version", "title", "authors", "primary_category", "categories", "announced", "url",
                  "doi", "journal_ref", "comment", "abstract"]


def _export_row(paper: Paper, day: str | None) -> dict:
    return {"id": paper.id, "version": paper.version, "title": " ".join(paper.title.split()),
            "authors": paper.authors, "primary_category": paper.primary_category, "categories": paper.categories,
            "announced": day, "url": paper.abs_url, "doi": paper.doi, "journal_ref": paper.journal_ref,
            "comment": paper.comment, "abstract": " ".join(paper.abstract.split())}


def to_csv(papers: list[tuple[Paper, str | None]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for paper, day in papers:
        writer.writerow({k: csv_cell(v) for k, v in _export_row(paper, day).items()})
    return out.getvalue()


def to_json(papers: list[tuple[Paper, str | None]]) -> str:
    return json.dumps([_export_row(p, d) for p, d in papers], indent=2, ensure_ascii=False) + "\n"


# -- stats -----------------------------------------------------------------------------------------

def history_stats(db, days: int = 30) -> dict:
    """The per-day and per-category series `digest stats` draws, over the last ``days`` stored days."""
    per_day = [dict(r) for r in db.query(
        "SELECT announced_on AS day, COUNT(*) AS papers, SUM(kind = 'new') AS new, SUM(kind = 'cross') AS cross, "
        "SUM(kind LIKE 'replace%') AS replaced FROM announcements GROUP BY announced_on "
        "ORDER BY announced_on DESC LIMIT ?", [days])][::-1]
    since = per_day[0]["day"] if per_day else "9999-12-31"
    categories = [dict(r) for r in db.query(
        "SELECT p.primary_category AS category, COUNT(DISTINCT p.id) AS papers FROM announcements a "
        "JOIN papers p ON p.id = a.paper_id WHERE a.announced_on >= ? GROUP BY p.primary_category "
        "ORDER BY papers DESC, category LIMIT 15", [since])]
    tokens = [dict(r) for r in db.query(
        "SELECT day, COUNT(*) AS calls, SUM(prompt_tokens) AS prompt_tokens, "
        "SUM(completion_tokens) AS completion_tokens, SUM(prompt_tokens + completion_tokens) AS tokens, "
        "SUM(status != 'ok') AS failed FROM llm_calls GROUP BY day ORDER BY day DESC LIMIT ?", [days])][::-1]
    sent = outbox.sent_digests_per_profile(db)
    digests = [{**dict(r), "sent": sent.get(r["profile"], 0)} for r in db.query(
        "SELECT profile, COUNT(*) AS digests, MAX(announced_on) AS last_day FROM digests GROUP BY profile "
        "ORDER BY profile")]
    digests = [{k: d[k] for k in ("profile", "digests", "sent", "last_day")} for d in digests]
    failures = outbox.channel_totals(db)
    totals = dict(zip(("papers", "announcements", "embedded", "summarized"), db.execute(
        "SELECT (SELECT COUNT(*) FROM papers), (SELECT COUNT(*) FROM announcements), "
        "(SELECT COUNT(DISTINCT paper_id) FROM embeddings), (SELECT COUNT(DISTINCT paper_id) FROM summaries)"
    ).fetchone()))
    return {"totals": totals, "papers_per_day": per_day, "categories": categories, "tokens_per_day": tokens,
            "digests": digests, "deliveries": failures}


# -- status ----------------------------------------------------------------------------------------

def status(db, settings: Settings, now: dt.datetime | None = None) -> dict:
    """What a user asks when a digest did not arrive: the last run and its stages, the next run, the
    deliveries still waiting or failed, and the most recent error anywhere."""
    now = now or dt.datetime.now(dt.timezone.utc)
    run = db.execute("SELECT id, announced_on, trigger, status, stage, error, started_at, finished_at FROM runs "
                     "ORDER BY id DESC LIMIT 1").fetchone()
    last_run = None
    if run:
        last_run = dict(zip(("id", "day", "trigger", "status", "stage", "error", "started_at", "finished_at"), run))
        last_run["stages"] = [dict(r) for r in db.query(
            "SELECT stage, status, counts, duration, error FROM run_stages WHERE run_id = ? ORDER BY started_at, "
            "rowid", [run[0]])]
        for stage in last_run["stages"]:
            stage["counts"] = json.loads(stage["counts"]) if stage["counts"] else {}
    from .daemon import next_run

    not_sent = outbox.not_sent(db)
    last_digest = db.execute("SELECT announced_on, profile, created_at FROM digests ORDER BY announced_on DESC, "
                             "id DESC LIMIT 1").fetchone()
    return {
        "database": str(settings.database_path()),
        "last_run": last_run,
        "next_run": next_run(settings, now).isoformat(),
        "last_digest": dict(zip(("day", "profile", "created_at"), last_digest)) if last_digest else None,
        "pending": [o for o in not_sent if o["status"] in ("pending", "sending")],
        "failed": [o for o in not_sent if o["status"] == "failed"],
        "waiting_papers": ledger.waiting(db, settings),
        "last_error": last_error(db),
    }


def last_error(db) -> dict | None:
    """The most recent error recorded by a run, a fetch, a delivery or an LLM call."""
    found = db.execute(
        "SELECT at, source, error FROM ("
        " SELECT COALESCE(finished_at, started_at) AS at, 'run ' || id || COALESCE(' (' || stage || ')', '') "
        "  AS source, error FROM runs WHERE error IS NOT NULL"
        " UNION ALL SELECT fetched_at, 'fetch ' || source, error FROM fetches WHERE error IS NOT NULL"
        " UNION ALL SELECT created_at, 'LLM call ' || model, error FROM llm_calls WHERE error IS NOT NULL"
        ") ORDER BY at DESC LIMIT 1").fetchone()
    candidates = [dict(zip(("at", "source", "error"), found))] if found else []
    delivery = outbox.latest_error(db)
    candidates += [delivery] if delivery else []
    return max(candidates, key=lambda c: c["at"]) if candidates else None


# -- terminal views --------------------------------------------------------------------------------

def _highlighted(snippet: str) -> Text:
    text = Text()
    for n, part in enumerate(re.split(f"[{HIT_START}{HIT_END}]", snippet)):
        text.append(part, style="bold yellow" if n % 2 else "")
    return text


def results_view(rows: list[dict], snippets: bool = True) -> Table:
    """Search or related results: rank, id, day, score, then the title with its highlighted snippet."""
    table = Table(header_style="bold")
    for name, justify in (("#", "right"), ("id", "left"), ("announced", "left"), ("score", "right"),
                          ("paper", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "paper")
    for n, row in enumerate(rows, 1):
        paper = Text(row["title"], style="bold")
        authors = row["authors"][:3] + (["et al."] if len(row["authors"]) > 3 else [])
        paper.append("\n" + ", ".join(authors), style="dim")
        if snippets and row.get("snippet"):
            paper.append("\n").append_text(_highlighted(row["snippet"]))
        table.add_row(str(n), row["id"], row["announced"] or "", f"{row['score']:.3f}", paper)
    return table


def paper_view(details: dict) -> Group:
    parts: list = [Text(details["title"], style="bold"), Text(", ".join(details["authors"]))]
    facts = [("id", f"{details['id']}v{details['version']}  {details['url']}"),
             ("categories", ", ".join(details["categories"]))]
    facts += [(k.replace("_", " "), details[k]) for k in ("published", "updated", "comment", "journal_ref", "doi")
              if details.get(k)]
    if details["versions"]:
        facts.append(("versions", ", ".join(f"v{v}" for v in details["versions"])))
    if not details["stored"]:
        facts.append(("stored", "no (fetched from arXiv just now)"))
    facts_table = Table.grid(padding=(0, 2))
    for name, value in facts:
        facts_table.add_row(Text(name, style="dim"), Text(str(value)))
    parts += [facts_table, Text(""), Text(" ".join(details["abstract"].split()))]
    if details["announcements"]:
        parts += [Text(""), _small_table("Announced", details["announcements"], ["day", "kind", "version"])]
    if details["digests"]:
        parts += [Text(""), _small_table("In digests", details["digests"],
                                         ["day", "profile", "rank", "score", "section", "reason"])]
    summary = details["summary"]
    if summary:
        parts += [Text(""), Text(f"Summary ({summary['model']})", style="bold"), Text(summary["tldr"])]
        for qa in summary["faq"]:
            parts += [Text(qa["question"], style="bold"), Text(qa["answer"])]
    if details["feedback"]:
        parts += [Text(""), Text("Feedback: " + "; ".join(f"{f['feedback']} ({f['profile']})"
                                                          for f in details["feedback"]))]
    return Group(*parts)


def _small_table(title: str, rows: list[dict], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text("" if row[c] is None else str(row[c])) for c in columns))
    return table


def rows_view(rows: list[dict], columns: list[str], title: str | None = None) -> Table:
    """A plain listing; cells are Text, so a title with [brackets] is not read as markup."""
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")  # a cut timestamp or error would mislead
    for row in rows:
        table.add_row(*(Text(shown_cell(row.get(c))) for c in columns))
    return table


BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(value: float, largest: float, width: int = 40) -> str:
    """A horizontal bar in eighths of a character, ``width`` characters for ``largest``."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / largest * width * 8))
    return "█" * (eighths // 8) + (BLOCKS[eighths % 8] if eighths % 8 else "")


def bar_chart(title: str, rows: list[dict], label: str, value: str, extra: list[str] = ()) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", box=None, padding=(0, 1))
    table.add_column(label)
    for column in (value, *extra):
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("")
    largest = max((r[value] or 0 for r in rows), default=0)
    for row in rows:
        table.add_row(Text(str(row[label])), *(str(row[c] or 0) for c in (value, *extra)),
                      Text(bar(row[value] or 0, largest), style="cyan"))
    return table


def stats_view(data: dict) -> Group:
    t = data["totals"]
    parts: list = [Text(f"{t['papers']} papers, {t['announcements']} announcements, {t['embedded']} embedded, "
                        f"{t['summarized']} summarized")]
    if data["papers_per_day"]:
        parts += [Text(""), bar_chart("Papers per announcement day", data["papers_per_day"], "day", "papers",
                                      ["new", "cross", "replaced"])]
    if data["categories"]:
        parts += [Text(""), bar_chart("Primary categories", data["categories"], "category", "papers")]
    if data["tokens_per_day"]:
        parts += [Text(""), bar_chart("LLM tokens per day", data["tokens_per_day"], "day", "tokens",
                                      ["calls", "failed"])]
    if data["digests"]:
        parts += [Text(""), rows_view(data["digests"], ["profile", "digests", "sent", "last_day"], "Digests")]
    if data["deliveries"]:
        parts += [Text(""), rows_view(data["deliveries"], ["channel", "sent", "waiting", "failed", "attempts"],
                                      "Deliveries")]
    return Group(*parts)


def status_view(data: dict) -> Group:
    run = data["last_run"]
    lines = [f"Database:    {data['database']}"]
    if run:
        ended = f", finished {run['finished_at']}" if run["finished_at"] else ""
        lines.append(f"Last run:    #{run['id']} {run['status']} for {run['day'] or 'an unknown day'} "
                     f"({run['trigger']}), started {run['started_at']}{ended}")
        if run["error"]:
            lines.append(f"             {run['error']}")
    else:
        lines.append("Last run:    none yet (`digest run` starts one)")
    lines.append(f"Next run:    {data['next_run']}")
    digest = data["last_digest"]
    lines.append(f"Last digest: {digest['day']} ({digest['profile']}), built {digest['created_at']}" if digest
                 else "Last digest: none yet")
    lines.append(f"Deliveries:  {len(data['pending'])} waiting, {len(data['failed'])} failed")
    for profile, count in data["waiting_papers"].items():
        if count:
            lines.append(f"Papers:      {plural(count, 'paper')} waiting for {profile}'s next digest")
    error = data["last_error"]
    lines.append(f"Last error:  {error['at']} {error['source']}: {error['error']}" if error else "Last error:  none")
    parts: list = [Text("\n".join(lines))]
    if run and run["stages"]:
        stages = [{**s, "counts": " ".join(f"{k}={v}" for k, v in s["counts"].items()),
                   "duration": f"{s['duration']:.2f}s" if s["duration"] is not None else ""} for s in run["stages"]]
        parts += [Text(""), rows_view(stages, ["stage", "status", "duration", "counts", "error"], "Last run's stages")]
    waiting = data["failed"] + data["pending"]
    if waiting:
        parts += [Text(""), rows_view(waiting, ["day", "profile", "channel", "target", "status", "attempts",
                                                "next_attempt_at", "last_error"], "Deliveries not sent")]
    return Group(*parts)
