"""The ``feedback`` table (likes and dislikes, for one profile or, with profile ``''``, for every profile)
and the ``arxiv_missing`` table (ids arXiv said it has no paper for). The only module that writes them.

A profile's feedback is its own rows and those for every profile (:func:`applies_sql`, which every query of
it uses), its own winning: :func:`feedback_values`."""

from __future__ import annotations

import datetime as dt
from typing import Iterable

from ..arxiv.ids import normalize_id
from .db import iso, now_iso, transaction
from .papers import get_paper

MISSING_DAYS = 30  # an id arXiv has no paper for is asked again after this long (it may have been announced since)


# -- feedback --------------------------------------------------------------------------------------

def applies_sql(column: str = "profile") -> str:
    """A WHERE condition on a feedback row's profile ``column``: it applies to the profile given as the
    condition's two parameters (the name twice), its own rows and those for every profile (''); with
    None, every row applies."""
    return f"(? IS NULL OR {column} IN ('', ?))"


def liked_sql(alias: str) -> str:
    """A WHERE condition on papers ``alias``: liked for the profile given as its two parameters (as in
    :func:`applies_sql`), or by anyone with None."""
    return (f"EXISTS (SELECT 1 FROM feedback f WHERE f.paper_id = {alias}.id AND f.value = 1 "
            f"AND {applies_sql('f.profile')})")


def set_feedback(db, paper_id: str, value: int, profile: str = "") -> dict:
    """Like (+1) or dislike (-1) a paper, for one profile or ('') all; the latest word wins."""
    paper_id = _paper_id(paper_id)
    with transaction(db):
        db.execute("INSERT INTO feedback (paper_id, profile, value, created_at) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (paper_id, profile) DO UPDATE SET value = excluded.value, "
                   "created_at = excluded.created_at", [paper_id, profile, value, now_iso()])
    paper = get_paper(db, paper_id)
    return {"id": paper_id, "profile": profile, "value": value, "title": paper.title if paper else None}


def list_feedback(db, profile: str | None = None) -> list[dict]:
    """Likes and dislikes, newest first; for ``profile``, those that apply to it: its own and those given
    for every profile (``profile`` None in the rows)."""
    return [dict(r) for r in db.query(
        "SELECT f.paper_id AS id, CASE f.value WHEN 1 THEN 'like' ELSE 'dislike' END AS feedback, "
        "NULLIF(f.profile, '') AS profile, COALESCE(p.title, '') AS title, f.created_at FROM feedback f "
        f"LEFT JOIN papers p ON p.id = f.paper_id WHERE {applies_sql('f.profile')} "
        "ORDER BY f.created_at DESC, f.paper_id", [profile, profile])]


def clear_feedback(db, paper_ids: Iterable[str] = (), profile: str | None = None, everything: bool = False) -> int:
    """Forget feedback on ``paper_ids`` (or on every paper with ``everything``). Returns rows removed."""
    ids = [_paper_id(i) for i in paper_ids]
    with transaction(db):
        if everything:
            cursor = db.execute("DELETE FROM feedback WHERE (? IS NULL OR profile = ?)", [profile, profile])
            return cursor.rowcount
        removed = 0
        for paper_id in ids:
            removed += db.execute("DELETE FROM feedback WHERE paper_id = ? AND (? IS NULL OR profile = ?)",
                                  [paper_id, profile, profile]).rowcount
    return removed


def _paper_id(text: str) -> str:
    """An arXiv id without its version; InvalidArxivId (phrased for the user) when it is none."""
    return normalize_id(text)[0]


def liked_ids(db, profile: str | None = None) -> list[str]:
    """The papers liked for ``profile`` (its own likes and those for every profile), or by anyone."""
    return [r[0] for r in db.execute(
        f"SELECT DISTINCT paper_id FROM feedback WHERE value = 1 AND {applies_sql()} ORDER BY paper_id", [profile, profile])]


def feedback_on(db, paper_id: str) -> list[dict]:
    """Every like or dislike of one paper: for which profile (None: every profile), which, when."""
    return [dict(r) for r in db.query(
        "SELECT NULLIF(profile, '') AS profile, CASE value WHEN 1 THEN 'like' ELSE 'dislike' END AS feedback, "
        "created_at FROM feedback WHERE paper_id = ? ORDER BY profile", [paper_id])]


def own_vote(db, paper_id: str, profile: str) -> int | None:
    """The profile's own like (1) or dislike (-1) of the paper, rows for every profile left out: what a
    feedback link's page says was already noted."""
    row = db.execute("SELECT value FROM feedback WHERE paper_id = ? AND profile = ?", [paper_id, profile]).fetchone()
    return row[0] if row else None


def feedback_values(db, profile: str) -> dict[str, int]:
    """Each paper liked (1) or disliked (-1) for ``profile``: rows for every profile ('') and for this one,
    this one's winning."""
    rows = db.execute(f"SELECT paper_id, value FROM feedback WHERE {applies_sql()} "
                      "ORDER BY profile = ?, created_at, paper_id", [profile, profile, profile]).fetchall()
    return {paper_id: value for paper_id, value in rows}  # later rows (this profile's) overwrite


# -- ids arXiv has no paper for (the arxiv_missing table) ---------------------------------------------

def not_known_missing(db, ids: list[str]) -> list[str]:
    """``ids`` but those arXiv said it lacks within MISSING_DAYS: a forged reply or a library of 2,000
    unknown ids would otherwise be asked for at every run."""
    since = iso(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=MISSING_DAYS))
    known = {row[0] for row in db.execute("SELECT paper_id FROM arxiv_missing WHERE asked_at >= ?", [since])}
    return [paper_id for paper_id in ids if paper_id not in known]


def remember_missing(db, ids: list[str]) -> None:
    with transaction(db):
        db.conn.executemany("INSERT OR REPLACE INTO arxiv_missing (paper_id, asked_at) VALUES (?, ?)",
                            [(paper_id, now_iso()) for paper_id in ids])
