"""What `digest status` and `digest stats` tell: the last run and its stages, the next run, what waits
(deliveries, and papers no digest covers yet), the last error anywhere, and the history's numbers."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ..records import replacement_sql
from ..schedule import next_run
from ..storage import ledger, outbox, runs
from ..storage.papers import latest_fetch_error
from ..storage.summaries import latest_call_error, tokens_by_day
from . import health

if TYPE_CHECKING:
    from ..config import Settings  # annotations only: pydantic is for validating
    from ..storage.db import Database

# -- stats -----------------------------------------------------------------------------------------

def history_stats(db, days: int = 30) -> dict:
    """The per-day and per-category series `digest stats` draws, over the last ``days`` stored days."""
    per_day = announced_per_day(db, days)
    categories = primary_categories(db, per_day[0]["day"] if per_day else "9999-12-31")
    tokens = tokens_by_day(db, days)
    sent = outbox.sent_digests_per_profile(db)
    digests = [{"profile": d["profile"], "digests": d["digests"], "sent": sent.get(d["profile"], 0),
                "last_day": d["last_day"]} for d in ledger.per_profile(db)]
    failures = outbox.channel_totals(db)
    return {"totals": totals(db), "papers_per_day": per_day, "categories": categories, "tokens_per_day": tokens,
            "digests": digests, "deliveries": failures, "storage": storage(db)}


def storage(db) -> dict:
    """The database's size (without its WAL) and what takes the space, largest first, in KiB per table
    (with its indexes) and per paper: how a years-long history grows (docs/operations.md, "Growth")."""
    page = db.execute("PRAGMA page_size").fetchone()[0]
    size = db.execute("PRAGMA page_count").fetchone()[0] * page
    space = space_by_table(db)
    space["(free pages, reused before the file grows)"] = db.execute("PRAGMA freelist_count").fetchone()[0] * page
    papers = totals(db)["papers"] or 1
    tables = [{"table": name, "kib": round(used / 1024), "bytes_per_paper": round(used / papers)}
              for name, used in sorted(space.items(), key=lambda kv: -kv[1]) if used]
    return {"bytes": size, "tables": tables}


# -- status ----------------------------------------------------------------------------------------

def status(db, settings: Settings, now: dt.datetime | None = None, database_exists: bool = True) -> dict:
    """What a user asks when a digest did not arrive: the last run and its stages, the next run, the
    deliveries still waiting or failed, and the most recent error anywhere. ``database_exists`` False:
    ``db`` stands in for a database that is not there (health says so)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    not_sent = outbox.not_sent(db)
    return {
        "database": str(settings.database_path()),
        "last_run": runs.last_run(db),
        "next_run": next_run(settings, now).isoformat(),
        "last_digest": ledger.latest(db),
        "pending": [o for o in not_sent if o["status"] in ("pending", "sending")],
        "failed": [o for o in not_sent if o["status"] == "failed"],
        "waiting_papers": ledger.waiting(db, settings),
        "last_error": last_error(db),
        "health": health.assess(db, settings, database_exists),
    }


def last_error(db) -> dict | None:
    """The most recent error recorded by a run, a fetch, a delivery or an LLM call."""
    found = [e for e in (runs.latest_error(db), latest_fetch_error(db), outbox.latest_error(db),
                         latest_call_error(db)) if e]
    return max(found, key=lambda e: e["at"]) if found else None


# -- what the papers table holds, for `digest stats` ---------------------------------------------------

def announced_per_day(db: Database, days: int) -> list[dict]:
    """The last ``days`` stored days, oldest first: papers, new, cross-lists, replacements."""
    return [dict(r) for r in db.query(
        "SELECT announced_on AS day, COUNT(*) AS papers, SUM(kind = 'new') AS new, SUM(kind = 'cross') AS cross, "
        f"SUM({replacement_sql('kind')}) AS replaced FROM announcements GROUP BY announced_on "
        "ORDER BY announced_on DESC LIMIT ?", [days])][::-1]


def primary_categories(db: Database, since: str, most: int = 15) -> list[dict]:
    """The ``most`` commonest primary categories of the papers announced since ``since``."""
    return [dict(r) for r in db.query(
        "SELECT p.primary_category AS category, COUNT(DISTINCT p.id) AS papers FROM announcements a "
        "JOIN papers p ON p.id = a.paper_id WHERE a.announced_on >= ? GROUP BY p.primary_category "
        "ORDER BY papers DESC, category LIMIT ?", [since, most])]


def totals(db: Database) -> dict[str, int]:
    """How many papers, announcements, embedded and summarized papers the history holds."""
    return dict(zip(("papers", "announcements", "embedded", "summarized"), db.execute(
        "SELECT (SELECT COUNT(*) FROM papers), (SELECT COUNT(*) FROM announcements), "
        "(SELECT COUNT(DISTINCT paper_id) FROM embeddings), (SELECT COUNT(DISTINCT paper_id) FROM summaries)"
    ).fetchone()))


def space_by_table(db: Database) -> dict[str, int]:
    """Bytes each table takes with its indexes (SQLite's dbstat), the full-text index's shadow tables
    counted as one ``papers_fts``; empty where SQLite was built without dbstat."""
    try:
        rows = db.execute("SELECT COALESCE(m.tbl_name, s.name), SUM(s.pgsize) FROM dbstat s "
                          "LEFT JOIN sqlite_master m ON m.name = s.name GROUP BY 1").fetchall()
    except sqlite3.OperationalError:
        return {}
    space: dict[str, int] = {}
    for name, size in rows:
        name = "papers_fts" if name.startswith("papers_fts") else name
        space[name] = space.get(name, 0) + size
    return space
