"""The whole schema, in the order it grew: one function per migration, applied in order on every open
(:func:`digest.storage.db.apply_migrations`) and recorded in ``_migrations``. Never edit one that has
shipped: add the next."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .db import Database

MIGRATIONS: list[Callable[[Database], None]] = []


def migration(fn):
    MIGRATIONS.append(fn)
    return fn


# -- the schema -------------------------------------------------------------------------------------

@migration
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE papers (
            id TEXT PRIMARY KEY,             -- arXiv id without version: 2401.01234, hep-th/9901001
            version INTEGER NOT NULL,        -- latest version seen
            title TEXT NOT NULL,
            abstract TEXT NOT NULL,
            authors TEXT NOT NULL,           -- JSON list
            categories TEXT NOT NULL,        -- JSON list, primary first
            primary_category TEXT NOT NULL,
            published TEXT,                  -- first version, ISO 8601
            updated TEXT,                    -- latest version, ISO 8601
            comment TEXT,
            journal_ref TEXT,
            doi TEXT,
            content_hash TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL
        );
        CREATE INDEX papers_primary ON papers(primary_category);

        -- Which paper was announced on which day, and how: one row per (day, paper).
        CREATE TABLE announcements (
            announced_on TEXT NOT NULL,      -- YYYY-MM-DD, arXiv's announcement day (ET)
            paper_id TEXT NOT NULL REFERENCES papers(id),
            version INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('new', 'cross', 'replace', 'replace-cross')),
            position INTEGER NOT NULL,       -- arXiv's listing order
            source TEXT NOT NULL,            -- feed, api, oai, listing
            PRIMARY KEY (announced_on, paper_id)
        );
        CREATE INDEX announcements_paper ON announcements(paper_id);

        -- One row per fetch of a day's announcement: what arXiv said, so an empty day is told apart
        -- from a failed fetch.
        CREATE TABLE fetches (
            id INTEGER PRIMARY KEY,
            announced_on TEXT,               -- NULL when the fetch failed before a day was known
            categories TEXT NOT NULL,
            source TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('announced', 'empty', 'failed')),
            entries INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,  -- malformed entries, logged with their reason
            error TEXT,
            fetched_at TEXT NOT NULL
        );
        CREATE INDEX fetches_day ON fetches(announced_on);

        CREATE TABLE embeddings (
            paper_id TEXT NOT NULL REFERENCES papers(id),
            model TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            dimensions INTEGER NOT NULL,
            vector BLOB NOT NULL,            -- little-endian float32
            created_at TEXT NOT NULL,
            PRIMARY KEY (paper_id, model)
        );

        CREATE TABLE summaries (
            paper_id TEXT NOT NULL REFERENCES papers(id),
            version INTEGER NOT NULL,
            model TEXT NOT NULL,
            prompt_version TEXT NOT NULL,
            language TEXT NOT NULL,
            tldr TEXT NOT NULL,
            faq TEXT NOT NULL,               -- JSON object: problem, related_work, method, ...
            created_at TEXT NOT NULL,
            PRIMARY KEY (paper_id, version, model, prompt_version, language)
        );

        -- Every LLM request, for the daily token budget and `digest stats`.
        CREATE TABLE llm_calls (
            id INTEGER PRIMARY KEY,
            day TEXT NOT NULL,               -- UTC date the tokens count against
            paper_id TEXT,
            model TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL,            -- ok, invalid, error
            error TEXT,
            duration REAL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX llm_calls_day ON llm_calls(day);

        CREATE TABLE digests (
            id INTEGER PRIMARY KEY,
            profile TEXT NOT NULL,
            announced_on TEXT NOT NULL,      -- the (last) announcement day it covers
            days TEXT NOT NULL,              -- JSON list of the days it covers (several for a catch-up)
            categories TEXT NOT NULL,
            announced INTEGER NOT NULL,
            new INTEGER NOT NULL,
            cross INTEGER NOT NULL,
            replaced INTEGER NOT NULL,
            summarized INTEGER NOT NULL DEFAULT 0,
            subject TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (profile, announced_on)
        );

        CREATE TABLE digest_items (
            digest_id INTEGER NOT NULL REFERENCES digests(id) ON DELETE CASCADE,
            paper_id TEXT NOT NULL REFERENCES papers(id),
            rank INTEGER NOT NULL,
            score REAL NOT NULL,
            reason TEXT NOT NULL,
            section TEXT NOT NULL CHECK (section IN ('top', 'rest', 'replaced')),
            kind TEXT NOT NULL,
            PRIMARY KEY (digest_id, paper_id)
        );
        CREATE INDEX digest_items_paper ON digest_items(paper_id);

        -- The outbox: one row per digest and channel target. Claimed atomically; sent exactly once.
        CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            digest_id INTEGER NOT NULL REFERENCES digests(id) ON DELETE CASCADE,
            channel TEXT NOT NULL,           -- email, chat, files
            target TEXT NOT NULL,            -- an address, a chat target's name, '' for files
            status TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            next_attempt_at TEXT,
            claimed_by TEXT,
            claimed_at TEXT,
            sent_at TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (digest_id, channel, target)
        );
        CREATE INDEX deliveries_status ON deliveries(status, next_attempt_at);

        CREATE TABLE feedback (
            paper_id TEXT NOT NULL,
            profile TEXT NOT NULL DEFAULT '',  -- '' applies to every profile
            value INTEGER NOT NULL CHECK (value IN (-1, 1)),
            created_at TEXT NOT NULL,
            PRIMARY KEY (paper_id, profile)
        );

        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            announced_on TEXT,               -- the day this run produces a digest for, once known
            trigger TEXT NOT NULL,           -- cli, schedule, catch-up
            status TEXT NOT NULL CHECK (status IN ('running', 'done', 'empty', 'failed', 'interrupted')),
            stage TEXT,                      -- the stage running or last finished
            error TEXT,
            pid INTEGER,
            started_at TEXT NOT NULL,
            finished_at TEXT
        );

        CREATE TABLE run_stages (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            stage TEXT NOT NULL,             -- fetch, embed, rank, summarize, render, deliver
            status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'skipped')),
            counts TEXT,                     -- JSON object
            error TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration REAL,
            PRIMARY KEY (run_id, stage)
        );
        """
    )
    # What sqlite_utils' db["papers"].enable_fts(["title", "abstract", "authors"], create_triggers=True,
    # tokenize="porter") wrote, spelled out: the same schema, without importing sqlite_utils (and numpy)
    # each time `digest status` migrates a database in memory to compare schemas (foreign_schema).
    db.executescript(
        """
        CREATE VIRTUAL TABLE "papers_fts" USING FTS5 (
            "title", "abstract", "authors",
            tokenize='porter',
            content="papers"
        );
        CREATE TRIGGER "papers_ai" AFTER INSERT ON "papers" BEGIN
          INSERT INTO "papers_fts" (rowid, "title", "abstract", "authors") VALUES (new.rowid, new."title", new."abstract", new."authors");
        END;
        CREATE TRIGGER "papers_ad" AFTER DELETE ON "papers" BEGIN
          INSERT INTO "papers_fts" ("papers_fts", rowid, "title", "abstract", "authors") VALUES('delete', old.rowid, old."title", old."abstract", old."authors");
        END;
        CREATE TRIGGER "papers_au" AFTER UPDATE ON "papers" BEGIN
          INSERT INTO "papers_fts" ("papers_fts", rowid, "title", "abstract", "authors") VALUES('delete', old.rowid, old."title", old."abstract", old."authors");
          INSERT INTO "papers_fts" (rowid, "title", "abstract", "authors") VALUES (new.rowid, new."title", new."abstract", new."authors");
        END;
        """
    )


@migration
def m002_renders(db: Database) -> None:
    """The rendered digest, stored once, so a delivery retried days later sends exactly what was built."""
    db.executescript(
        """
        CREATE TABLE renders (
            digest_id INTEGER NOT NULL REFERENCES digests(id) ON DELETE CASCADE,
            format TEXT NOT NULL,            -- subject, html, text, markdown, json
            body TEXT NOT NULL,
            PRIMARY KEY (digest_id, format)
        );
        """
    )


@migration
def m003_delivery_progress(db: Database) -> None:
    """How many parts of a split chat delivery went out, so a retry sends only the rest."""
    db.execute("ALTER TABLE deliveries ADD COLUMN parts_sent INTEGER NOT NULL DEFAULT 0")


@migration
def m004_coverage_ledger(db: Database) -> None:
    """The ledger: which digest of each profile covers each announced paper, one row per paper, so
    "every paper in exactly one digest" is a constraint rather than a property of how days are counted.
    Filled from the digests already built (the earliest digest wins where older versions sent a paper
    twice). And ``fetches.detail``: how a day recorded "empty" is known to be empty."""
    db.executescript(
        """
        CREATE TABLE coverage (
            profile TEXT NOT NULL,
            paper_id TEXT NOT NULL REFERENCES papers(id),
            replacement INTEGER NOT NULL DEFAULT 0,  -- 0: the submission (new or cross-list); N: the
                                                     -- replacement that announced version N
            digest_id INTEGER NOT NULL REFERENCES digests(id) ON DELETE CASCADE,
            announced_on TEXT NOT NULL,              -- the day arXiv announced it; a late paper is in a later digest
            PRIMARY KEY (profile, paper_id, replacement)
        );
        CREATE INDEX coverage_digest ON coverage(digest_id);
        ALTER TABLE fetches ADD COLUMN detail TEXT;
        INSERT OR IGNORE INTO coverage (profile, paper_id, replacement, digest_id, announced_on)
        SELECT d.profile, i.paper_id,
               CASE WHEN i.section = 'replaced' THEN COALESCE(
                   (SELECT a.version FROM announcements a WHERE a.paper_id = i.paper_id AND a.kind LIKE 'replace%'
                    AND a.announced_on IN (SELECT value FROM json_each(d.days)) ORDER BY a.announced_on DESC
                    LIMIT 1), p.version) ELSE 0 END,
               d.id,
               COALESCE((SELECT MIN(a.announced_on) FROM announcements a WHERE a.paper_id = i.paper_id
                         AND a.announced_on IN (SELECT value FROM json_each(d.days))), d.announced_on)
        FROM digests d JOIN digest_items i ON i.digest_id = d.id JOIN papers p ON p.id = i.paper_id
        ORDER BY d.id, i.rank;
        """
    )



@migration
def m005_notices(db: Database) -> None:
    """Failure notices (digest/notices.py): one row per problem and announcement day, claimed before the
    notice is sent, so a notice goes out at most once and a failed notice is never retried in a loop;
    ``reported_at``: when the next digest's header said what was caught up."""
    db.executescript(
        """
        CREATE TABLE notices (
            problem TEXT NOT NULL,          -- what failed: "gave up", "delivery email to a@b", "llm"
            day TEXT NOT NULL,              -- the announcement day it is about
            summary TEXT NOT NULL,          -- one line: what failed
            sent_to TEXT NOT NULL DEFAULT '[]',  -- JSON list: where the notice went
            error TEXT,                     -- why a notice channel failed (logged, not retried)
            created_at TEXT NOT NULL,
            reported_at TEXT,               -- when a digest's header reported it
            PRIMARY KEY (problem, day)
        );
        """
    )


@migration
def m006_library_titles(db: Database) -> None:
    """What the arXiv API answered for a library entry's title (library.py), so each title is asked once."""
    db.executescript(
        """
        CREATE TABLE library_titles (
            title TEXT PRIMARY KEY,          -- lower case, words only (library.title_key)
            paper_id TEXT,                   -- NULL: arXiv has no paper of exactly this title
            looked_up_at TEXT NOT NULL
        );
        """
    )


@migration
def m007_arxiv_missing_and_library_files(db: Database) -> None:
    """Ids arXiv has no paper for (profiles.py), so each is asked again only after a while; and each library
    file as last read (library.py), so a large export is parsed again only when it changes."""
    db.executescript(
        """
        CREATE TABLE arxiv_missing (
            paper_id TEXT PRIMARY KEY,       -- as normalised, without version
            asked_at TEXT NOT NULL           -- when arXiv's API last answered that it has no such paper
        );
        CREATE TABLE library_files (
            path TEXT PRIMARY KEY,           -- as configured, ~ expanded
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            entries TEXT NOT NULL,           -- JSON: [[arXiv id or null, title], ...] in the file's order
            read_at TEXT NOT NULL
        );
        """
    )
