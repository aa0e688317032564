"""The one writer of papers, announcements and fetches: every paper arXiv sent (upserted by id, its
highest version kept), the day each was announced on, and what arXiv answered each time it was asked
about a day, so that a day it announced nothing on differs from one it could not be fetched for."""

from __future__ import annotations

import datetime as dt
import json
from typing import Iterable

from ..records import Announcement, Paper
from .db import Database, chunks, now_iso, transaction


# -- papers and announcements ---------------------------------------------------------------------

def save_papers(db: Database, papers: Iterable[Paper]) -> int:
    """Upsert by id, keeping the highest version's metadata. Returns how many rows changed."""
    changed = 0
    stamp = now_iso()
    with transaction(db):
        for paper in papers:
            existing = db.execute("SELECT version, content_hash FROM papers WHERE id = ?", [paper.id]).fetchone()
            if existing and existing[0] > paper.version:
                continue
            if existing and existing[0] == paper.version and existing[1] == paper.content_hash:
                db.execute("UPDATE papers SET last_seen = ? WHERE id = ?", [stamp, paper.id])
                continue
            row = paper_row(paper)
            if existing:
                db.execute(
                    "UPDATE papers SET version=:version, title=:title, abstract=:abstract, authors=:authors, "
                    "categories=:categories, primary_category=:primary_category, "
                    "published=COALESCE(published, :published), updated=:updated, comment=:comment, "
                    "journal_ref=:journal_ref, doi=:doi, content_hash=:content_hash, last_seen=:last_seen "
                    "WHERE id=:id",
                    {**row, "last_seen": stamp},
                )
            else:
                row = {**row, "first_seen": stamp, "last_seen": stamp}
                db.execute(f"INSERT INTO papers ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row)
            changed += 1
    return changed


def save_announcements(db: Database, announcements: Iterable[Announcement], source: str) -> int:
    """Store papers and the day they were announced on. Idempotent: the same day twice changes nothing."""
    announcements = list(announcements)
    save_papers(db, [a.paper for a in announcements])
    inserted = 0
    with transaction(db):
        for a in announcements:
            cursor = db.execute(
                "INSERT OR IGNORE INTO announcements (announced_on, paper_id, version, kind, position, source) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [a.announced_on.isoformat(), a.paper.id, a.paper.version, a.kind, a.position, source],
            )
            inserted += cursor.rowcount
    return inserted


def paper_row(paper: Paper) -> dict:
    return {
        "id": paper.id,
        "version": paper.version,
        "title": paper.title,
        "abstract": paper.abstract,
        "authors": json.dumps(paper.authors, ensure_ascii=False),
        "categories": json.dumps(paper.categories),
        "primary_category": paper.primary_category,
        "published": paper.published,
        "updated": paper.updated,
        "comment": paper.comment,
        "journal_ref": paper.journal_ref,
        "doi": paper.doi,
        "content_hash": paper.content_hash,
    }


def paper_from_row(row: dict) -> Paper:
    return Paper(
        id=row["id"],
        version=row["version"],
        title=row["title"],
        abstract=row["abstract"],
        authors=json.loads(row["authors"]),
        categories=json.loads(row["categories"]),
        primary_category=row["primary_category"],
        published=row.get("published"),
        updated=row.get("updated"),
        comment=row.get("comment"),
        journal_ref=row.get("journal_ref"),
        doi=row.get("doi"),
    )


def get_paper(db: Database, paper_id: str) -> Paper | None:
    rows = list(db.query("SELECT * FROM papers WHERE id = ?", [paper_id]))
    return paper_from_row(rows[0]) if rows else None


def get_papers(db: Database, paper_ids: Iterable[str]) -> dict[str, Paper]:
    found: dict[str, Paper] = {}
    for chunk in chunks(list(dict.fromkeys(paper_ids))):
        marks = ",".join("?" * len(chunk))
        for row in db.query(f"SELECT * FROM papers WHERE id IN ({marks})", chunk):
            found[row["id"]] = paper_from_row(row)
    return found


def first_announced(db: Database, ids: list[str]) -> dict[str, str]:
    """The first day each of ``ids`` was announced on (ISO dates), for those announced at all."""
    found: dict[str, str] = {}
    for chunk in chunks(list(ids)):
        marks = ",".join("?" * len(chunk))
        found.update(db.execute(f"SELECT paper_id, MIN(announced_on) FROM announcements WHERE paper_id IN ({marks}) "
                                f"GROUP BY paper_id", chunk).fetchall())
    return found


def latest_day(db: Database) -> dt.date | None:
    """The latest announcement day stored."""
    row = db.execute("SELECT MAX(announced_on) FROM announcements").fetchone()
    return dt.date.fromisoformat(row[0]) if row and row[0] else None


def announcements_of(db: Database, paper_id: str) -> list[dict]:
    """Every day a paper was announced: day, kind, version, source."""
    return [dict(r) for r in db.query("SELECT announced_on AS day, kind, version, source FROM announcements "
                                      "WHERE paper_id = ? ORDER BY announced_on", [paper_id])]


def announced_on(db: Database, day: dt.date) -> list[Announcement]:
    """A day's announcements in arXiv's listing order."""
    rows = list(db.query(
        "SELECT a.kind, a.position, a.announced_on, p.* FROM announcements a JOIN papers p ON p.id = a.paper_id "
        "WHERE a.announced_on = ? ORDER BY a.position, a.paper_id",
        [day.isoformat()],
    ))
    return [
        Announcement(paper=paper_from_row(r), announced_on=day, kind=r["kind"], position=r["position"])
        for r in rows
    ]


# -- fetches: what arXiv said about each day ----------------------------------------------------------

def has_announcements(db: Database, day: dt.date) -> bool:
    return db.execute("SELECT 1 FROM announcements WHERE announced_on = ? LIMIT 1", [day.isoformat()]).fetchone() \
        is not None


def record_fetch(db: Database, *, announced_on: dt.date | None, categories: str, source: str,
                 status: str, entries: int = 0, skipped: int = 0, error: str | None = None,
                 detail: str | None = None) -> int:
    with transaction(db):
        cursor = db.execute(
            "INSERT INTO fetches (announced_on, categories, source, status, entries, skipped, error, detail, "
            "fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [announced_on.isoformat() if announced_on else None, categories, source, status, entries, skipped,
             error, detail, now_iso()],
        )
    return cursor.lastrowid


def day_fetched(db: Database, day: dt.date, categories: list[str]) -> str | None:
    """What arXiv said about ``day`` for (at least) ``categories``: "announced" (its papers are stored),
    "empty" (arXiv positively announced nothing), or None (never fetched, or only failed fetches).
    A fetch made for fewer categories (before the configuration grew) does not count."""
    wanted = set(categories)
    found = set()
    for status, fetched_for in db.execute("SELECT status, categories FROM fetches WHERE announced_on = ? "
                                          "AND status IN ('announced', 'empty')", [day.isoformat()]):
        if wanted <= set(fetched_for.split("+")):
            found.add(status)
    return "announced" if "announced" in found else ("empty" if found else None)


def latest_feed_fetch(db: Database) -> tuple[str, str | None, str | None] | None:
    """(status, day, error) of the latest fetch of the feed, or None before the first."""
    row = db.execute("SELECT status, announced_on, error FROM fetches WHERE source = 'feed' ORDER BY id DESC LIMIT 1"
                     ).fetchone()
    return tuple(row) if row else None


def latest_fetch_error(db: Database) -> dict | None:
    """The most recent error a fetch recorded: when, from where, what."""
    row = db.execute("SELECT fetched_at, 'fetch ' || source, error FROM fetches WHERE error IS NOT NULL "
                     "ORDER BY fetched_at DESC LIMIT 1").fetchone()
    return dict(zip(("at", "source", "error"), row)) if row else None


def empty_detail(db: Database, day: dt.date) -> str | None:
    """How we know ``day`` announced nothing, as recorded with its latest "empty" fetch."""
    row = db.execute("SELECT detail FROM fetches WHERE announced_on = ? AND status = 'empty' "
                     "ORDER BY id DESC LIMIT 1", [day.isoformat()]).fetchone()
    return row[0] if row else None


def later_feed_days(db: Database, paper_ids: list[str], day: dt.date) -> dict[str, dt.date]:
    """For each of ``paper_ids`` that arXiv's feed announced after ``day``: the first such day."""
    found: dict[str, dt.date] = {}
    for chunk in chunks(paper_ids):
        marks = ",".join("?" * len(chunk))
        for paper_id, later in db.execute(
                f"SELECT paper_id, MIN(announced_on) FROM announcements WHERE source = 'feed' AND announced_on > ? "
                f"AND paper_id IN ({marks}) GROUP BY paper_id", [day.isoformat(), *chunk]):
            found[paper_id] = dt.date.fromisoformat(later)
    return found


def previous_feed_day(db: Database, day: dt.date) -> dt.date | None:
    """The latest day before ``day`` that arXiv's feed announced papers on."""
    row = db.execute("SELECT MAX(announced_on) FROM announcements WHERE source = 'feed' AND announced_on < ?",
                     [day.isoformat()]).fetchone()
    return dt.date.fromisoformat(row[0]) if row and row[0] else None
