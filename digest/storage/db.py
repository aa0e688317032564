"""Opening the database and applying the migrations (:mod:`.schema`): the connection every table's owner
writes through, its transactions, the checks that a file's schema is the one digest writes, and the
small rules the owners share (how a time is stored, ``IN (...)`` lists in chunks, where the vector index
lives). The queries on the tables live with their owners (:mod:`.papers`, :mod:`.ledger`, ...)."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

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


def chunks(items: list, size: int = 500):
    """``items`` in slices short enough for one ``IN (...)`` (SQLite's variable limit)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
