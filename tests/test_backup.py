"""Issue 19: `digest backup` while a real `digest run` process writes, and `digest restore` that checks a
file before it replaces anything."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT
from world import integrity

from digest.cli import cli
from digest.storage import db as dbm
from digest.storage.schema import MIGRATIONS

pytestmark = pytest.mark.slow




@pytest.fixture(autouse=True)
def configured(world):
    """Every test here starts from a World whose config file is written."""
    world.configure()


def digest(world, *args: str):
    return CliRunner().invoke(cli, ["--config", world.settings.source, *args])


def rows(path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_a_backup_taken_while_a_run_writes_restores_and_passes_the_coverage_check(world, smtp, tmp_path):
    run = subprocess.Popen([sys.executable, "-m", "digest", "--config", world.settings.source, "run"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    backups = []
    while run.poll() is None and len(backups) < 200:
        target = tmp_path / f"backup-{len(backups)}.db"
        made = digest(world, "backup", str(target))
        assert made.exit_code == 0, made.output
        assert made.stdout.startswith(f"Wrote {target} (")
        backups.append(target)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert len(smtp.messages) == 1
    assert all(integrity(b) == "ok" for b in backups)
    # Some copies caught the run in the middle (its row still `running`), and some of those after its
    # digest was stored: each is the database as one commit left it.
    mid_run = [b for b in backups if rows(b, "SELECT status FROM runs") == [("running",)]]
    assert mid_run, f"no backup of {len(backups)} was taken while the run was writing"
    with_digest = [b for b in mid_run if rows(b, "SELECT COUNT(*) FROM digests") == [(1,)]]
    chosen = (with_digest or mid_run)[-1]

    restored = digest(world, "restore", str(chosen))
    assert restored.exit_code == 0, restored.output
    (kept,) = world.db_path.parent.glob("digest.db.before-restore-*")
    assert restored.stdout.endswith(f"Restored {chosen} into {world.db_path} (the one it replaced: "
                                    f"{kept.name}).\n")
    assert rows(world.db_path, "SELECT status FROM runs") == [("running",)]
    doctor = digest(world, "doctor")
    assert doctor.exit_code == 0, doctor.output
    # the database it replaced is kept, complete
    assert rows(kept, "SELECT status FROM runs") == [("done",)]


def test_a_backup_is_written_whole_or_not_at_all(world, tmp_path):
    target = tmp_path / "nowhere" / "backup.db"
    made = digest(world, "backup", str(target))
    assert made.exit_code == 1
    assert made.output.startswith(f"Error: {target}: cannot write the backup: ")
    assert list(tmp_path.glob("nowhere*")) == []
    same = digest(world, "backup", str(world.db_path))
    assert same.exit_code == 2 and "that is the database itself" in same.output


def _damage(path):
    data = bytearray(path.read_bytes())
    data[4096 * 2: 4096 * 2 + 512] = b"\xff" * 512  # a page in the middle
    path.write_bytes(bytes(data))


def _from_the_future(path):
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_future', '2030-01-01')")


def _a_paper_in_two_digests(path):
    """A second digest listing one paper of the first: what the ledger makes impossible, written by hand."""
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TEMP TABLE d AS SELECT * FROM digests;
            UPDATE d SET id = id + 100, announced_on = '2026-06-29';
            INSERT INTO digests SELECT * FROM d;
            CREATE TEMP TABLE i AS SELECT * FROM digest_items LIMIT 1;
            UPDATE i SET digest_id = digest_id + 100;
            INSERT INTO digest_items SELECT * FROM i;
        """)


def _not_a_database(path):
    path.write_text("hello\n")


def _a_trigger_that_resends_every_email(path):
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TRIGGER resend AFTER UPDATE OF status ON deliveries WHEN NEW.status = 'sent' "
                     "BEGIN UPDATE deliveries SET status = 'pending', attempts = 0 WHERE id = NEW.id; END")


def _a_view(path):
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE VIEW everything AS SELECT * FROM papers")


def _a_changed_table(path):
    """A table of digest's name whose definition differs (its CHECK removed), same columns."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET sql = replace(sql, \"CHECK (value IN (-1, 1))\", '') "
                     "WHERE name = 'feedback'")


def _many_damaged_pages(path):
    data = bytearray(path.read_bytes())
    for page in range(2, len(data) // 4096 - 1, 2):
        data[4096 * page + 8: 4096 * page + 40] = b"\x07" * 32  # cell pointers of every other page
    path.write_bytes(bytes(data))


REFUSALS = {
    "a trigger": (_a_trigger_that_resends_every_email, "not the schema digest writes: a trigger digest does not "
                                                       "write: resend; refused"),
    "a view": (_a_view, "not the schema digest writes: a view digest does not write: everything; refused"),
    "a changed table": (_a_changed_table, "the table feedback differs from the one digest writes"),
    "many damaged pages": (_many_damaged_pages, "damaged"),
    "damaged": (_damage, "damaged"),
    "newer schema": (_from_the_future, "was written by a newer digest (migration m999_future); upgrade digest"),
    "fails the coverage check": (_a_paper_in_two_digests, "fails the coverage check: me:"),
    "not a database": (_not_a_database, "not a digest database"),
}


@pytest.mark.parametrize("fault", list(REFUSALS))
def test_restore_refuses_a_bad_file_in_one_line_and_changes_nothing(world, smtp, tmp_path, fault):
    world.run()
    spoil, words = REFUSALS[fault]
    bad = tmp_path / "bad.db"
    assert digest(world, "backup", str(bad)).exit_code == 0
    spoil(bad)
    before = rows(world.db_path, "SELECT COUNT(*), MAX(id) FROM runs") + rows(world.db_path,
                                                                              "SELECT COUNT(*) FROM coverage")
    refused = digest(world, "restore", str(bad))
    assert refused.exit_code == 2, refused.output
    assert refused.output.startswith(f"Error: {bad}") and words in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert list(world.db_path.parent.glob("*before-restore*")) == []
    assert rows(world.db_path, "SELECT COUNT(*), MAX(id) FROM runs") + rows(
        world.db_path, "SELECT COUNT(*) FROM coverage") == before
    assert sorted(p.name for p in world.db_path.parent.iterdir() if "restoring" in p.name) == []


def test_a_backup_made_by_an_older_schema_is_upgraded_as_it_is_restored(world, tmp_path):
    old = tmp_path / "old.db"
    conn = dbm.open_db(old, migrate=False)
    dbm.apply_migrations(conn, upto=1)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.conn.close()
    restored = digest(world, "restore", str(old))
    assert restored.exit_code == 0, restored.output
    names = {r[0] for r in rows(world.db_path, "SELECT name FROM _migrations")}
    assert names == {fn.__name__ for fn in MIGRATIONS}


# -- issue 24 ------------------------------------------------------------------------------------------

def test_every_restore_keeps_the_database_it_replaced_under_its_own_name(world, tmp_path):
    world.run()
    first = tmp_path / "first.db"
    assert digest(world, "backup", str(first)).exit_code == 0
    kept = []
    for n in range(3):
        with sqlite3.connect(world.db_path) as conn:  # each database replaced is told apart by this row
            conn.execute("INSERT INTO notices (problem, day, summary, created_at) VALUES (?, '2026-06-23', 'x', 'y')",
                         [f"before restore {n}"])
        restored = digest(world, "restore", str(first))
        assert restored.exit_code == 0, restored.output
        kept.append(restored.stdout.rsplit("(the one it replaced: ", 1)[1].rstrip(").\n"))
    assert len(set(kept)) == 3
    assert sorted(p.name for p in world.db_path.parent.glob("digest.db.before-restore*")) == sorted(kept)
    for n, name in enumerate(kept):
        problems = {p for (p,) in rows(world.db_path.with_name(name), "SELECT problem FROM notices")}
        assert f"before restore {n}" in problems


def test_backup_refuses_to_overwrite_a_file_that_is_not_a_digest_backup(world, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my thesis notes\n")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    for precious in (notes, other):
        before = precious.read_bytes()
        refused = digest(world, "backup", str(precious))
        assert (refused.exit_code, refused.output) == (
            2, f"Error: {precious}: exists and is not a digest backup; name a new file (or remove it first)\n")
        assert precious.read_bytes() == before
    earlier = tmp_path / "digest-backup.db"
    assert digest(world, "backup", str(earlier)).exit_code == 0
    assert digest(world, "backup", str(earlier)).exit_code == 0  # an earlier backup is replaced


def test_a_backup_is_readable_by_its_owner_alone_whatever_the_umask(world, tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "backup.db"
        assert digest(world, "backup", str(target)).exit_code == 0
    finally:
        os.umask(old)
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_doctor_and_status_check_name_a_trigger_digest_did_not_write(world):
    world.run()
    _a_trigger_that_resends_every_email(world.db_path)
    doctor = digest(world, "doctor")
    assert doctor.exit_code == 1
    assert "schema: a trigger digest does not write: resend" in doctor.output
    check = digest(world, "status", "--check")
    assert check.exit_code == 2
    assert check.output.splitlines()[0] == "Health:      failing"
    assert "the database's schema is not digest's: a trigger digest does not write: resend" in check.output
