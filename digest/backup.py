"""`digest backup` and `digest restore`: a consistent copy of the database taken while the daemon runs,
and a copy put back only after it proved itself.

A backup is SQLite's ``VACUUM INTO``: one read transaction, so the copy is the database as one commit
left it (a run writing meanwhile is not in it, or is in it up to a commit), compacted, and without the
WAL. Readers never block writers in WAL mode, so a run goes on while the copy is written. The copy goes
to a temporary name beside the target and is renamed when complete: a backup cut short never replaces
the previous one.

A backup never replaces a file that is not itself a digest database (a mistyped name would otherwise
lose it), and is written 0600 whatever the umask: it holds the reader's feedback and reading habits.

A restore checks the file before anything is replaced (it opens, passes ``integrity_check``, records no
migration this digest does not know, upgrades to the current schema, holds exactly the tables, indexes,
triggers and views digest's migrations write (a trigger in a restored file would act on every write
digest makes: resend every sent email, rewrite titles), and passes the coverage proof of `digest
doctor`), keeps the current database as ``<db>.before-restore-<UTC time>`` (every earlier one stays),
and then copies the checked file into the live database through SQLite's backup API, under the run
lock, so no run writes meanwhile and no open connection ever sees a half-replaced file.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import sqlite_utils

from .config import Settings
from .locks import run_lock
from .storage import ledger
from .storage.db import DatabaseError, apply_migrations, foreign_schema, open_db, recorded_migrations, vectors_folder
from .storage.schema import MIGRATIONS


class BackupError(Exception):
    """A backup that could not be written, or a file that is not fit to restore, phrased for the user."""


class NotABackup(BackupError):
    """A backup's target that exists and is not a digest database: the user's mistake, never overwritten."""


def backup(db, target: Path) -> int:
    """Write a consistent copy of ``db`` to ``target`` (replaced atomically, mode 0600). Returns its size
    in bytes. A ``target`` that exists and is not a digest database is refused, never replaced."""
    target = Path(target)
    if target.exists() or target.is_symlink():
        _refuse_to_replace(target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        partial.unlink(missing_ok=True)
        # Made empty and 0600 first: VACUUM INTO fills an empty file, and the copy is never readable by others.
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        db.execute("VACUUM INTO ?", [str(partial)])
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"{target}: cannot write the backup: {getattr(exc, 'strerror', None) or exc}") from None
    return target.stat().st_size


def _refuse_to_replace(target: Path) -> None:
    """Raise unless ``target`` is a regular file holding a digest database (an earlier backup)."""
    refusal = NotABackup(f"{target}: exists and is not a digest backup; name a new file (or remove it first)")
    if target.is_symlink() or not target.is_file():
        raise refusal
    with open(target, "rb") as handle:
        if handle.read(16) != b"SQLite format 3\0":
            raise refusal
    try:
        with closing(sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            digest_wrote_it = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                           "AND name = '_migrations'").fetchone()
    except sqlite3.Error:
        raise refusal from None
    if not digest_wrote_it:
        raise refusal


def verify(source: Path, settings: Settings, workdir: Path) -> tuple[Path, list[str]]:
    """Check ``source`` on a copy in ``workdir`` (the file itself is never written) and upgrade the copy
    to this digest's schema. Returns the checked copy and one line per profile from the coverage proof.
    Raises :class:`BackupError` naming the first thing wrong."""
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"{source}: no such file")
    copy = workdir / f".{source.name}.{os.getpid()}.restoring"
    shutil.copyfile(source, copy)
    try:
        return copy, _check(copy, source, settings)
    except BaseException:
        _remove(copy)
        raise


def _check(copy: Path, source: Path, settings: Settings) -> list[str]:
    try:
        with closing(sqlite3.connect(copy)) as conn:
            found = [line for row in conn.execute("PRAGMA integrity_check") for line in row[0].splitlines()
                     if not line.startswith("***")]
    except sqlite3.DatabaseError as exc:
        what = "damaged" if "malformed" in str(exc) else "not a digest database"
        raise BackupError(f"{source}: {what} ({exc})") from None
    if found != ["ok"]:  # one line, however many integrity_check wrote
        more = f" (and {len(found) - 1} more problems)" if len(found) > 1 else ""
        raise BackupError(f"{source}: damaged: integrity_check says {found[0] if found else 'nothing'}{more}")
    try:
        with closing(open_db(copy, migrate=False).conn) as conn:
            checked = sqlite_utils.Database(conn)
            _check_schema(checked, source)
            apply_migrations(checked, label=source.name)
            _check_exact_schema(checked, source)
            reports = ledger.check(checked, settings)
            checked.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except (DatabaseError, sqlite3.DatabaseError) as exc:
        raise BackupError(f"{source}: {exc}" if isinstance(exc, sqlite3.DatabaseError) else str(exc)) from None
    bad = [r for r in reports if not r.ok]
    if bad:
        raise BackupError(f"{source}: fails the coverage check: " + " ".join(bad[0].describe()))
    return [line for r in reports for line in r.describe()]


def _remove(copy: Path) -> None:
    """The checked copy and the WAL files SQLite made beside it."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)


def _check_schema(db, source: Path) -> None:
    done = recorded_migrations(db)
    if not done:
        raise BackupError(f"{source}: not a digest database (it records no migration)")
    unknown = sorted(done - {fn.__name__ for fn in MIGRATIONS})
    if unknown:
        raise BackupError(f"{source} was written by a newer digest (migration {unknown[-1]}); upgrade digest "
                          f"before restoring it")


def _check_exact_schema(db, source: Path) -> None:
    foreign = foreign_schema(db)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise BackupError(f"{source}: not the schema digest writes: {foreign[0]}{more}; refused")


def kept_name(path: Path, now: dt.datetime | None = None) -> Path:
    """Where a restore keeps the database it replaces: a name no earlier restore used."""
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.before-restore-{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.name}.before-restore-{stamp}-{n}")
    return kept


def restore(source: Path, settings: Settings) -> tuple[list[str], Path | None]:
    """Replace the database with ``source`` once it passed :func:`verify`; the database it replaces is
    kept as ``<db>.before-restore-<UTC time>``, beside every earlier one. Returns the coverage proof's
    lines and where the replaced database was kept (None when there was none)."""
    path = settings.database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    copy, proof = verify(source, settings, path.parent)
    try:
        with run_lock(settings), closing(sqlite3.connect(copy)) as checked:
            live = open_db(path, migrate=False)
            try:
                kept = kept_name(path) if recorded_migrations(live) else None
                if kept:
                    backup(live, kept)
                checked.backup(live.conn)
            finally:
                live.conn.close()
    finally:
        _remove(copy)
    # The memory-mapped vectors beside the database describe the old rows: rebuilt on next use.
    shutil.rmtree(vectors_folder(path), ignore_errors=True)
    return proof, kept
