import datetime as dt

import pytest

from digest.records import Announcement, Paper
from digest.storage import db as dbm
from digest.storage import papers as paper_rows
from digest.storage.schema import MIGRATIONS

EXPECTED_COLUMNS = {
    "papers": ["id", "version", "title", "abstract", "authors", "categories", "primary_category", "published",
               "updated", "comment", "journal_ref", "doi", "content_hash", "first_seen", "last_seen"],
    "announcements": ["announced_on", "paper_id", "version", "kind", "position", "source"],
    "fetches": ["id", "announced_on", "categories", "source", "status", "entries", "skipped", "error", "fetched_at"],
    "embeddings": ["paper_id", "model", "content_hash", "dimensions", "vector", "created_at"],
    "summaries": ["paper_id", "version", "model", "prompt_version", "language", "tldr", "faq", "created_at"],
    "digests": ["id", "profile", "announced_on", "days", "categories", "announced", "new", "cross", "replaced",
                "summarized", "subject", "created_at"],
    "digest_items": ["digest_id", "paper_id", "rank", "score", "reason", "section", "kind"],
    "deliveries": ["id", "digest_id", "channel", "target", "status", "attempts", "last_error", "next_attempt_at",
                   "claimed_by", "claimed_at", "sent_at", "created_at"],
    "feedback": ["paper_id", "profile", "value", "created_at"],
    "runs": ["id", "announced_on", "trigger", "status", "stage", "error", "pid", "started_at", "finished_at"],
    "notices": ["problem", "day", "summary", "sent_to", "error", "created_at", "reported_at"],
}


def paper(pid="2401.01234", version=1, title="A title", abstract="An abstract.") -> Paper:
    return Paper(id=pid, version=version, title=title, abstract=abstract, authors=["Ada Lovelace", "Alan Turing"],
                 categories=["cs.AI", "cs.LG"], primary_category="cs.AI")


def test_schema_columns(tmp_path):
    db = dbm.open_db(tmp_path / "d.db")
    columns = {t.name: [c.name for c in t.columns] for t in db.tables}
    for table, expected in EXPECTED_COLUMNS.items():
        assert columns[table][: len(expected)] == expected, table
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == dbm.BUSY_TIMEOUT_MS


def test_migrations_are_recorded_and_applied_once(tmp_path):
    path = tmp_path / "d.db"
    dbm.open_db(path)
    db = dbm.open_db(path)
    names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [fn.__name__ for fn in MIGRATIONS]


@pytest.mark.parametrize("earlier", range(1, len(MIGRATIONS) + 1))
def test_upgrading_from_each_earlier_schema_keeps_data(tmp_path, earlier):
    path = tmp_path / "d.db"
    db = dbm.open_db(path, migrate=False)
    dbm.apply_migrations(db, upto=earlier)
    paper_rows.save_announcements(db, [Announcement(paper(), dt.date(2026, 6, 22), "new", 0)], source="feed")
    db.conn.close()
    db = dbm.open_db(path)
    assert paper_rows.get_paper(db, "2401.01234").title == "A title"
    assert [a.paper.id for a in paper_rows.announced_on(db, dt.date(2026, 6, 22))] == ["2401.01234"]
    assert db["notices"].columns_dict.keys() == set(EXPECTED_COLUMNS["notices"])  # the latest migration too


def test_save_is_idempotent_and_keeps_the_latest_version(tmp_path):
    db = dbm.open_db(tmp_path / "d.db")
    day = dt.date(2026, 6, 22)
    assert paper_rows.save_announcements(db, [Announcement(paper(), day, "new", 0)], "feed") == 1
    assert paper_rows.save_announcements(db, [Announcement(paper(), day, "new", 0)], "feed") == 0
    paper_rows.save_papers(db, [paper(version=3, title="Revised")])
    paper_rows.save_papers(db, [paper(version=2, title="Older")])
    stored = paper_rows.get_paper(db, "2401.01234")
    assert (stored.version, stored.title) == (3, "Revised")
    assert db["papers"].count == 1


def test_full_text_search_covers_title_abstract_authors(tmp_path):
    db = dbm.open_db(tmp_path / "d.db")
    paper_rows.save_papers(db, [paper(title="Graph neural networks", abstract="We study message passing.")])
    hits = lambda q: [r["id"] for r in db.query(
        "SELECT papers.id FROM papers_fts JOIN papers ON papers.rowid = papers_fts.rowid WHERE papers_fts MATCH ?", [q])]
    assert hits("graph") == ["2401.01234"]
    assert hits("passing") == ["2401.01234"]
    assert hits("turing") == ["2401.01234"]
    paper_rows.save_papers(db, [paper(version=2, title="Transformers", abstract="Attention.")])
    assert hits("graph") == []


def test_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(dbm.DatabaseError, match="cannot create the database directory"):
        dbm.open_db(blocker / "sub" / "d.db")


def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path):
    # The daemon, a timer's run and a person's `digest status` may all create the database at the same moment:
    # the one that waited for the lock must find the migration done, not run it again ("already exists").
    import subprocess
    import sys

    for attempt in range(4):
        path = tmp_path / f"race{attempt}" / "digest.db"
        code = f"from digest.storage.db import open_db; open_db({str(path)!r})"
        racers = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errors = [racer.communicate(timeout=60)[1] for racer in racers]
        assert [racer.returncode for racer in racers] == [0, 0, 0, 0], errors
