"""Opening the database and applying the migrations (:mod:`.schema`), and the queries on the tables it
owns (papers, announcements, fetches) that other modules call by name.

Longer than most modules on purpose, for now: the connection and its three tables' queries are one
module until the queries get their own (issue 25 names it: papers, announcements and fetches)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..records import Announcement, Paper
from .schema import MIGRATIONS

if TYPE_CHECKING:
    import sqlite_utils

BUSY_TIMEOUT_MS = 10_000


class Database:
    """A connection with the three calls digest's queries make (``execute``, ``query``, ``executescript``),
    on plain sqlite3: importing sqlite_utils (which loads numpy) costs a reading command 0.1 s, a third
    of its start. Anything else (``db["papers"].insert``, ``enable_fts`` in a migration) goes to a
    sqlite_utils ``Database`` over the same connection, made the first time it is asked for."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.execute("PRAGMA recursive_triggers = on")  # as sqlite_utils.Database sets it
        self._utils = None

    def execute(self, sql: str, parameters=None) -> sqlite3.Cursor:
        return self.conn.execute(sql, parameters or [])

    def executescript(self, sql: str) -> sqlite3.Cursor:
        """Inside a transaction, statement by statement: sqlite3's own executescript would COMMIT first,
        and a migration is one transaction (as sqlite_utils does it)."""
        if not self.conn.in_transaction:
            return self.conn.executescript(sql)
        cursor = self.conn.cursor()
        for statement in _statements(sql):
            cursor.execute(statement)
        return cursor

    def query(self, sql: str, params=None):
        """Each row as a dict of its columns, as sqlite_utils' ``query`` yields them."""
        cursor = self.conn.execute(sql, params or [])
        keys = [column[0] for column in cursor.description]
        for row in cursor:
            yield dict(zip(keys, row))

    @property
    def utils(self) -> sqlite_utils.Database:
        if self._utils is None:
            import sqlite_utils  # heavy (numpy): only for what plain sqlite3 does not offer

            self._utils = sqlite_utils.Database(self.conn)
        return self._utils

    def __getitem__(self, table: str):
        return self.utils[table]

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not set yet (copy, pickle): never recurse into ``utils``
            raise AttributeError(name)
        return getattr(self.utils, name)


def _statements(sql: str):
    """The complete statements of a script; a statement can only end at a semicolon."""
    pending = ""
    for part in sql.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                yield pending.strip()
            pending = ""


class DatabaseError(Exception):
    """The database could not be opened or written, phrased for the user."""


def describe_sqlite_error(path: str | Path, exc: sqlite3.Error) -> str:
    """One line for a database that cannot be written, saying what the user can do about it. Every
    write is a transaction, so whatever was stored before the failure is still there."""
    text = str(exc)
    code = getattr(exc, "sqlite_errorname", "") or ""
    folder = Path(path).parent
    if ("unable to open" in text or "readonly" in text) and folder.is_dir() and not os.access(folder, os.W_OK):
        return (f"{path}: cannot open the database: its folder {folder} is not writable, and SQLite keeps its "
                f"write-ahead log beside the database; run digest as the folder's owner or make it writable")
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return f"{path}: the database is locked by another process; run again when it has finished"
    if code.startswith("SQLITE_READONLY") or "readonly" in text:
        return (f"{path}: the database is read-only ({text}); digest must be able to write it: "
                f"check the file's owner and permissions")
    if code.startswith("SQLITE_FULL") or "full" in text:
        return f"{path}: the disk is full ({text}); nothing stored was lost: free some space and run digest again"
    if code.startswith("SQLITE_IOERR"):  # a write refused by the system (EFBIG, EIO): full quota, failing disk
        return (f"{path}: writing to the disk failed ({text}); is it full? Nothing stored was lost: "
                f"free some space and run digest again")
    return f"{path}: {text}"


def open_db(path: str | Path, migrate: bool = True) -> Database:
    """Open (creating when missing) with WAL and a busy timeout, then apply pending migrations."""
    path = Path(path)
    if str(path) != ":memory:":
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in [path.parent, *path.parent.parents] if p.is_file()), None)
            reason = f"{blocker} is a file, not a folder" if blocker else exc.strerror
            raise DatabaseError(f"{path.parent}: cannot create the database directory: {reason}") from None
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if str(path) != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        db = Database(conn)
        if migrate:
            apply_migrations(db, label=path.name)
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(describe_sqlite_error(path, exc)) from None
    return db


def open_for_reading(path: str | Path) -> Database:
    """For the commands that only read (status, search, show, export...): a database that does not
    exist yet is an empty one in memory (nothing is created on a mistyped path), and one in a folder
    this user cannot write (SQLite's WAL needs its -shm file beside the database) is opened read-only."""
    path = Path(path)
    if not path.exists():
        return open_db(":memory:")
    if os.access(path.parent, os.W_OK) and os.access(path, os.W_OK):
        return open_db(path)  # the usual case, which also upgrades an older schema
    try:
        # mode=ro reads a WAL database only when its -shm file exists or can be made; immutable=1
        # reads the file as it is, which is what a reader without write access can have.
        for query in ("mode=ro", "immutable=1"):
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                break
            except sqlite3.OperationalError:
                conn.close()
                if query == "immutable=1":  # neither way reads it: say why, not "closed database"
                    raise
        db = Database(conn)
        pending = [fn.__name__ for fn in MIGRATIONS if fn.__name__ not in recorded_migrations(db)]
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(describe_sqlite_error(path, exc)) from None
    unknown = recorded_migrations(db) - {fn.__name__ for fn in MIGRATIONS}
    if unknown:
        raise DatabaseError(f"{path.name} was written by a newer digest (migration {sorted(unknown)[-1]}); "
                            "upgrade digest")
    if pending:
        raise DatabaseError(f"{path}: written by an older digest, and this user cannot write {path.parent} "
                            "to upgrade it; run digest once as the database's owner")
    return db


def vectors_folder(database: str | Path) -> Path:
    """Where the memory-mapped copy of a database's embeddings lives (:mod:`digest.history.vectors`):
    beside the database, ``digest.db.vectors/``; a restore removes it with the database it describes."""
    return Path(f"{database}.vectors")


def apply_migrations(db: Database, upto: int | None = None, label: str = "the database") -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction. Returns the names applied.

    A database that records a migration this version does not know was written by a newer digest:
    it is refused before anything is written, since this version would misread what it does not know.
    """
    done = recorded_migrations(db)
    unknown = sorted(done - {fn.__name__ for fn in MIGRATIONS})
    if unknown:
        raise DatabaseError(f"{label} was written by a newer digest (migration {unknown[-1]}); upgrade digest")
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied = []
    for fn in MIGRATIONS[:upto]:
        if fn.__name__ in done:
            continue
        with transaction(db):
            if fn.__name__ in recorded_migrations(db):  # another process applied it while we waited for the lock
                continue
            fn(db)
            db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", [fn.__name__, now_iso()])
        applied.append(fn.__name__)
    return applied


def recorded_migrations(db: Database) -> set[str]:
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone():
        return set()
    return {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()}


def schema_entries(db: Database) -> dict[tuple[str, str], str]:
    """Every table, index, trigger and view of ``db`` by (type, name), with its SQL in one line (SQLite's
    own ``sqlite_*`` tables, made on demand, left out)."""
    return {(kind, name): " ".join((sql or "").split()) for kind, name, sql in db.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")}


def _written_by_digest() -> dict[tuple[str, str], str]:
    """The schema this digest's migrations write, read from a database freshly migrated in memory."""
    fresh = open_db(":memory:")
    try:
        return schema_entries(fresh)
    finally:
        fresh.conn.close()


def foreign_schema(db: Database) -> list[str]:
    """One line per table, index, trigger or view in ``db`` that digest's migrations did not write, or
    wrote otherwise: a trigger added to a database (by hand, or in a restored file) acts on every write
    digest makes, so a file holding one is not digest's, whatever else it passes. Empty when the schema
    is exactly digest's. Call on a database whose migrations are all applied."""
    expected = _written_by_digest()
    found = schema_entries(db)
    lines = [f"a {kind} digest does not write: {name}" for kind, name in sorted(found.keys() - expected.keys())]
    lines += [f"the {kind} {name} differs from the one digest writes" for (kind, name), sql in sorted(found.items())
              if (kind, name) in expected and expected[kind, name] != sql]
    lines += [f"the {kind} {name} that digest writes is missing" for kind, name in sorted(expected.keys() - found.keys())]
    return lines


class transaction:
    """BEGIN IMMEDIATE ... COMMIT, so a writer takes the lock up front and never deadlocks on upgrade."""

    def __init__(self, db: Database):
        self.conn = db.conn

    def __enter__(self):
        self.nested = self.conn.in_transaction
        if not self.nested:
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if self.nested:
            return False
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def iso(moment: dt.datetime) -> str:
    """How the database stores a time: UTC, to the second, ISO 8601 (``2026-06-30T20:05:00+00:00``),
    every column alike, so stored times compare as strings."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def now_iso() -> str:
    return iso(dt.datetime.now(dt.timezone.utc))


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


def chunks(items: list, size: int = 500):
    """``items`` in slices short enough for one ``IN (...)`` (SQLite's variable limit)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
