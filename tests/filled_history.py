"""The history the reading commands read (test_history, test_commands): the real papers of the listing in
tests/data/ on their days, and the digests, deliveries, summaries, LLM calls and run the pipeline would
have written around them. The database is filled once per session; each test reads or changes a copy.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from feeds import listing_papers

from digest.records import Announcement, Paper
from digest.storage import db as dbm
from digest.storage import papers as paper_rows

PROFILES = ('[profiles.me]\ninterests = ["spiking neural networks"]\n'
            '[profiles.vision]\ninterests = ["image segmentation"]\n')


def paper_of(row: dict, version: int = 1) -> Paper:
    return Paper(id=row["id"], version=version, title=row["title"], abstract=row["abstract"], authors=row["authors"],
                 categories=row["categories"], primary_category=row["primary_category"], comment=row.get("comment"))


def _fill(db) -> None:
    """Every real paper on its day; two digests of profile "me"; what a run, the LLM and delivery leave."""
    rows = listing_papers()
    by_id = {r["id"]: r for r in rows}
    announcements = [Announcement(paper_of(r), dt.date.fromisoformat(r["announced_date_et"]),
                                  "new" if r["primary_category"] in ("cs.CL", "cs.CV", "cs.AI") else "cross", n)
                     for n, r in enumerate(rows)]
    paper_rows.save_announcements(db, announcements, "listing")
    # 2606.27538 was replaced by a v2 two days later.
    paper_rows.save_announcements(
        db, [Announcement(paper_of(by_id["2606.27538"], 2), dt.date(2026, 6, 30), "replace", 999)], "feed")
    stamp = "2026-06-29T12:00:00+00:00"
    db.execute("INSERT INTO digests (id, profile, announced_on, days, categories, announced, new, cross, replaced, "
               "summarized, subject, created_at) VALUES (1, 'me', '2026-06-29', '[\"2026-06-29\"]', 'cs.CL', 3, 2, 1, "
               "0, 1, 'arXiv cs.CL, 29 June: 3 papers', ?)", [stamp])
    db.execute("INSERT INTO digests (id, profile, announced_on, days, categories, announced, new, cross, replaced, "
               "summarized, subject, created_at) VALUES (2, 'me', '2026-06-30', '[\"2026-06-30\"]', 'cs.CL', 2, 2, 0, "
               "0, 0, 'arXiv cs.CL, 30 June: 2 papers', '2026-06-30T12:00:00+00:00')")
    items = [(1, "2606.29847", 1, 0.71234, "close to your interest \"spiking networks\"", "top", "new"),
             (1, "2606.24075", 2, 0.5, "mentions your keyword \"spiking\"", "top", "new"),
             (1, "2606.29748", 3, 0.12, "far from your interests", "rest", "cross"),
             (2, "2606.31781", 1, 0.66, "close to your interest \"spiking networks\"", "top", "new"),
             (2, "2606.31166", 2, 0.2, "far from your interests", "rest", "new")]
    db.conn.executemany("INSERT INTO digest_items VALUES (?, ?, ?, ?, ?, ?, ?)", items)
    db.execute("INSERT INTO renders VALUES (1, 'text', ?)", ["arXiv cs.CL, 29 June: 3 papers\n\n1. Spiking ...\n"])
    db.execute("INSERT INTO deliveries (digest_id, channel, target, status, attempts, sent_at, created_at) "
               "VALUES (1, 'email', 'me@example.org', 'sent', 1, ?, ?)", [stamp, stamp])
    db.execute("INSERT INTO deliveries (digest_id, channel, target, status, attempts, last_error, next_attempt_at, "
               "created_at, claimed_at) VALUES (2, 'email', 'me@example.org', 'pending', 2, "
               "'SMTP 451: try again later', '2026-06-30T13:00:00+00:00', ?, '2026-06-30T12:30:00+00:00')",
               ["2026-06-30T12:00:00+00:00"])
    faq = {"problem": "Spiking nets are hard to train.", "method": "A surrogate gradient.", "summary": "It works."}
    db.execute("INSERT INTO summaries VALUES ('2606.29847', 1, 'gpt-test', 'v1', 'English', 'Trains SNNs well.', ?, ?)",
               [json.dumps(faq), stamp])
    db.conn.executemany(
        "INSERT INTO llm_calls (day, paper_id, model, prompt_tokens, completion_tokens, status, error, created_at) "
        "VALUES (?, ?, 'gpt-test', ?, ?, ?, ?, ?)",
        [("2026-06-29", "2606.29847", 1200, 300, "ok", None, stamp),
         ("2026-06-29", "2606.24075", 1000, 0, "error", "timeout after 60s", stamp),
         ("2026-06-30", "2606.31781", 600, 150, "ok", None, "2026-06-30T12:00:00+00:00")])
    db.execute("INSERT INTO runs (id, announced_on, trigger, status, stage, error, started_at, finished_at) VALUES "
               "(1, '2026-06-30', 'schedule', 'done', 'deliver', NULL, '2026-06-30T11:59:00+00:00', "
               "'2026-06-30T12:01:00+00:00')")
    db.conn.executemany(
        "INSERT INTO run_stages (run_id, stage, status, counts, started_at, duration) VALUES (1, ?, ?, ?, ?, ?)",
        [("fetch", "done", '{"papers": 300}', "2026-06-30T11:59:00+00:00", 3.5),
         ("deliver", "done", '{"queued": 1, "sent": 0}', "2026-06-30T12:00:30+00:00", 0.25)])


def filled_database(folder) -> Path:
    """A database of real papers, two digests, deliveries, summaries, LLM calls and a run, in ``folder``."""
    path = folder / "digest.db"
    db = dbm.open_db(path)
    _fill(db)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    return path


@dataclass
class FilledHistory:
    config: Path  # the config file at the default path, naming the database and PROFILES
    db_path: Path


@pytest.fixture(scope="session")
def filled_template(tmp_path_factory) -> Path:
    return filled_database(tmp_path_factory.mktemp("filled"))


@pytest.fixture
def filled_history(filled_template, tmp_path, write_config) -> FilledHistory:
    """A copy of the filled database where a user's state would be, and the config file that names it."""
    path = tmp_path / "state" / "digest.db"
    path.parent.mkdir()
    shutil.copy(filled_template, path)
    return FilledHistory(write_config(f'[storage]\npath = "{path}"\n' + PROFILES), path)
