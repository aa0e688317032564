"""Searching the history: filters, full-text search (FTS5, bm25), semantic search and related papers
(through :mod:`digest.history.vectors`), one paper's details, and the digests as they were sent.

Library functions behind `digest search`, `show`, `related`, `digests` and `digest`. Each takes ``db``
(and ``settings`` where it needs them) and returns plain data; :mod:`digest.history.views` draws it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..arxiv.ids import InvalidArxivId, normalize_id
from ..records import Paper
from ..storage.db import chunks
from ..storage.feedback import feedback_on, liked_sql
from ..storage.papers import announcements_of, first_announced, get_paper, save_papers
from ..taxonomy import is_known
from ..text import HIT_END, HIT_START

if TYPE_CHECKING:  # numpy: for the semantic commands only, imported where they run
    from ..config import Settings  # annotations only: pydantic is for validating
    import numpy as np

    from .vectors import VectorIndex

EmbedText = Callable[[str], "np.ndarray"]

# bm25 column weights for title, abstract, authors: a word in the title says more than one in the abstract.
BM25_WEIGHTS = (5.0, 1.0, 3.0)


class HistoryError(ValueError):
    """A user's mistake (bad id, bad query, unknown day), phrased as the one line they see."""


# -- arXiv ids --------------------------------------------------------------------------------------

def normalize_paper_id(text: str) -> str:
    """An arXiv id without version (a version, URL or arXiv: prefix is accepted and dropped)."""
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
            from ..storage.ledger import in_profile_sql  # logging, socket: only when asked

            where.append(in_profile_sql(alias))
            params.append(self.profile)
        if self.liked:
            where.append(liked_sql(alias))
            params += [self.profile, self.profile]
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
    first_days = first_announced(db, [r["id"] for r in rows])
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


def plain_snippet(snippet: str, start: str = "**", end: str = "**") -> str:
    """A snippet for JSON and CSV: hits marked the Markdown way."""
    return snippet.replace(HIT_START, start).replace(HIT_END, end)


def embed_query(settings: Settings) -> EmbedText:
    """Text -> vector with the configured model, loaded once per process as for the run's own stages."""
    from ..embed import shared_embedder

    embedder = shared_embedder(settings.embedding)
    return lambda text: embedder.embed_texts([text])[0]


def semantic_search(db, settings: Settings, query: str, filters: Filters | None = None, limit: int = 20,
                    embed: EmbedText | None = None, index: VectorIndex | None = None) -> list[dict]:
    """Papers nearest in meaning to ``query``, by cosine similarity of embeddings."""
    filters = filters or Filters()
    filters.check()
    if not query.strip():
        raise HistoryError("empty query: give words to search for")
    from .vectors import VectorIndex  # numpy: only the semantic commands pay for it

    index = index or VectorIndex(db, settings.embedding.vectors_key).open()
    vector = (embed or embed_query(settings))(query)
    return _nearest_papers(db, index, vector, filters, limit, exclude=None)


def related(db, settings: Settings, paper_id: str, limit: int = 10, embed: EmbedText | None = None,
            index: VectorIndex | None = None) -> list[dict]:
    """The papers in the history nearest to ``paper_id`` by embedding."""
    paper_id = normalize_paper_id(paper_id)
    from .vectors import VectorIndex  # numpy: only the semantic commands pay for it

    index = index or VectorIndex(db, settings.embedding.vectors_key).open()
    vector = index.vector(paper_id)
    if vector is None:
        paper = get_paper(db, paper_id)
        if paper is None:
            raise HistoryError(f"{paper_id} is not in your history; `digest show {paper_id}` fetches it")
        vector = (embed or embed_query(settings))(paper.text)
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
    first_days = first_announced(db, list(rows))
    return [_result(rows[i], first_days, score=round(score, 4)) for i, score in chosen if i in rows]


def _passing(db, ids: list[str], where: str, params: list) -> set[str]:
    """Which of ``ids`` are stored papers matching the filter fragment."""
    kept: set[str] = set()
    for chunk in chunks(ids):
        marks = ",".join("?" * len(chunk))
        kept.update(r[0] for r in db.execute(f"SELECT p.id FROM papers p WHERE p.id IN ({marks}){where}",
                                             [*chunk, *params]))
    return kept


# -- one paper -------------------------------------------------------------------------------------

def paper_details(db, settings: Settings, paper_id: str, fetch=None) -> dict:
    """Everything known about a paper. One not stored is fetched from the arXiv API (``fetch`` is
    arxiv.fetch_papers), shown, and not stored: `show` only reads."""
    paper_id = normalize_paper_id(paper_id)
    paper = get_paper(db, paper_id)
    if paper is None:
        return {**_paper_fields(_fetch_one(settings, paper_id, fetch)), "stored": False, "versions": [],
                "announcements": [], "digests": [], "summary": None, "feedback": []}
    # Here, not at the top: the ledger (logging, socket) and the summarizer (concurrent.futures, email)
    # cost a cold `digest search` more than the query itself.
    from ..storage.ledger import appearances
    from ..storage.summaries import latest_summary

    announcements = announcements_of(db, paper_id)
    digests = appearances(db, paper_id)
    versions = sorted({a["version"] for a in announcements} | {paper.version})
    return {**_paper_fields(paper), "stored": True, "versions": versions, "announcements": announcements,
            "digests": digests, "summary": latest_summary(db, paper_id), "feedback": feedback_on(db, paper_id)}


def _fetch_one(settings: Settings, paper_id: str, fetch) -> Paper:
    return _from_arxiv(settings, [paper_id], fetch)[0]


def _from_arxiv(settings: Settings, paper_ids: list[str], fetch, after: str = "") -> list[Paper]:
    """``paper_ids`` (none of them in the history) from the arXiv API, in order. arXiv lacking one is the
    user's mistake (HistoryError); arXiv unreachable is an ArxivError (exit 1). Each message starts with
    the id and "not in your history", whatever failed, never a bare "connection refused"."""
    from ..arxiv.http import ArxivError

    if fetch is None:
        from ..arxiv.api import fetch_papers

        fetch = functools.partial(fetch_papers, raise_errors=True)
    try:
        papers, _ = fetch(settings, paper_ids)
    except ArxivError as exc:
        raise ArxivError(f"{paper_ids[0]}: not in your history, and arXiv cannot be reached to look it up "
                         f"({exc}){after}") from None
    found = {p.id: p for p in papers}
    gone = [i for i in paper_ids if i not in found]
    if gone:
        raise HistoryError(f"{gone[0]}: not in your history, and arXiv has no such paper{after}")
    return [found[i] for i in paper_ids]


def papers_to_judge(db, settings: Settings, paper_ids: list[str], fetch=None) -> None:
    """Before `digest like` records anything: every paper of ``paper_ids`` in the history, those it lacks
    fetched from arXiv and stored (a like counts only for a paper that can be embedded). One arXiv does
    not have, or arXiv unreachable, refuses the whole command: nothing is recorded."""
    missing = [i for i in dict.fromkeys(paper_ids) if get_paper(db, i) is None]
    if missing:
        save_papers(db, _from_arxiv(settings, missing, fetch, after="; nothing recorded"))


def _paper_fields(paper: Paper) -> dict:
    return {
        "id": paper.id, "version": paper.version, "title": " ".join(paper.title.split()),
        "authors": paper.authors, "categories": paper.categories, "primary_category": paper.primary_category,
        "published": paper.published, "updated": paper.updated, "comment": paper.comment,
        "journal_ref": paper.journal_ref, "doi": paper.doi, "url": paper.abs_url, "abstract": paper.abstract,
    }


# -- digests ---------------------------------------------------------------------------------------

def list_digests(db, profile: str | None = None, limit: int | None = None) -> list[dict]:
    """The digests built, newest first, with each channel's delivery status."""
    from ..storage import outbox  # here, as in paper_details: logging and socket
    from ..storage.ledger import listing

    rows = listing(db, profile, limit)
    for row in rows:
        row["deliveries"] = [{k: d[k] for k in ("channel", "target", "status", "attempts", "sent_at", "last_error")}
                             for d in outbox.for_digests(db, [row["id"]])]
        row["delivery"] = "; ".join(f"{outbox.where(d)}: {d['status']}" for d in row["deliveries"]) or "not queued"
    return rows


def day_digests(db, day: dt.date, profile: str | None = None) -> list[dict]:
    """One day's digests as the email had them: the text render stored with each."""
    from ..storage import outbox  # here, as in paper_details: logging and socket
    from ..storage.ledger import of_day

    digests = of_day(db, day, profile)
    if not digests:
        raise HistoryError(f"no digest for {day}{' and profile ' + profile if profile else ''}; "
                           f"`digest digests` lists the days there are")
    for digest in digests:
        digest["text"] = (outbox.stored_text(db, digest["id"])
                          or f"digest {digest['id']}: no text was stored with it\n")
    return digests
