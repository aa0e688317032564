"""`digest backup` and `digest restore`: a consistent copy of the database taken while the daemon runs,
and a copy put back only after it proved itself.

A backup is SQLite's ``VACUUM INTO``: one read transaction, so the copy is the database as one commit
left it (a run writing meanwhile is not in it, or is in it up to a commit), compacted, and without the
WAL. Readers never block writers in WAL mode, so a run goes on while the copy is written. The copy goes
to a temporary name beside the target and is renamed when complete: a backup cut short never replaces
the previous one.

A restore checks the file before anything is replaced (it opens, passes ``integrity_check``, records no
migration this digest does not know, upgrades to the current schema, and passes the coverage proof of
`digest doctor`), keeps the current database as ``<db>.before-restore``, and then copies the checked
file into the live database through SQLite's backup API, under the run lock, so no run writes meanwhile
and no open connection ever sees a half-replaced file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import sqlite_utils

from . import ledger
from .config import Settings
from .db import MIGRATIONS, DatabaseError, apply_migrations, open_db, recorded_migrations


class BackupError(Exception):
    """A backup that could not be written, or a file that is not fit to restore, phrased for the user."""


def backup(db, target: Path) -> int:
    """Write a consistent copy of ``db`` to ``target`` (replaced atomically). Returns its size in bytes."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        partial.unlink(missing_ok=True)
        db.execute("VACUUM INTO ?", [str(partial)])
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"{target}: cannot write the backup: {getattr(exc, 'strerror', None) or exc}") from None
    return target.stat().st_size


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
            found = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        what = "damaged" if "malformed" in str(exc) else "not a digest database"
        raise BackupError(f"{source}: {what} ({exc})") from None
    if found != "ok":
        raise BackupError(f"{source}: damaged: integrity_check says {found}")
    try:
        with closing(open_db(copy, migrate=False).conn) as conn:
            checked = sqlite_utils.Database(conn)
            _check_schema(checked, source)
            apply_migrations(checked, label=source.name)
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


def restore(source: Path, settings: Settings) -> list[str]:
    """Replace the database with ``source`` once it passed :func:`verify`; the database it replaces is
    kept as ``<db>.before-restore``. Returns the coverage proof's lines."""
    from .pipeline import run_lock  # the pipeline's lock: a run waits for the restore, and the other way round

    path = settings.database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    copy, proof = verify(source, settings, path.parent)
    try:
        with run_lock(settings), closing(sqlite3.connect(copy)) as checked:
            live = open_db(path, migrate=False)
            try:
                if recorded_migrations(live):
                    backup(live, path.with_name(path.name + ".before-restore"))
                checked.backup(live.conn)
            finally:
                live.conn.close()
    finally:
        _remove(copy)
    # The memory-mapped vectors beside the database describe the old rows: rebuilt on next use.
    shutil.rmtree(path.with_name(path.name + ".vectors"), ignore_errors=True)
    return proof
