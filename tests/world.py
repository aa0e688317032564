"""A whole digest on loopback for the reliability tests (test_faults, test_secrets, test_untrusted): arXiv's feed,
a real SMTP server with STARTTLS and AUTH, the real embedding model, and the two promises every fault
must leave standing, checked by :func:`assert_invariants`:

- no announced paper missing: the digest stored for the day lists every paper the feed announced in the
  profile's categories, and so does every copy that went out or waits in the outbox;
- nothing sent twice: each recipient got at most one message per digest.

Embedding the day's papers takes most of a run's time, so :func:`template_database` embeds them once per
test session and each test starts from a copy of that database: papers and their vectors, nothing else
(no announcement, fetch, digest or run), so every run still fetches, ranks, renders and delivers.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT
from feeds import arxiv_section, feed_xml, serve_feeds
from smtp_server import SMTPServer

from digest import embed, pipeline
from digest.arxiv.feed import parse_feed
from digest.config import parse_settings
from digest.storage import db as dbm
from digest.storage import papers as paper_rows
from digest.storage import ledger

DAY = dt.date(2026, 6, 26)  # a Friday of the listing in tests/data/: 79 papers in cs.CL
CATEGORIES = ["cs.CL"]
PROFILE = '[profiles.me]\ninterests = ["speech recognition for low-resource languages"]\n'
READER = "reader@example.org"
SMTP_USER, SMTP_PASSWORD = "digest", "smtp-pass-4711"

ABS_LINK = re.compile(r"https://arxiv\.org/abs/(\d{4}\.\d{4,5})\b")


def day_feed(rows: list[dict] | None = None) -> bytes:
    return feed_xml(DAY, CATEGORIES, rows)


def feed_paper_ids(feed: bytes) -> list[str]:
    """The ids a feed announces, as digest's own parser reads them."""
    return [a.paper.id for a in parse_feed(feed).announcements]


def template_database(folder: Path) -> Path:
    """A database holding DAY's papers and their embeddings, built once and copied by :func:`copy_database`."""
    path = folder / "template.db"
    if path.exists():  # another test module of this session built it
        return path
    # Built under a name of its own and renamed when complete, so that a build cut short never leaves a
    # half-made template for the next module. Under pytest-xdist each worker has its own basetemp, so two
    # workers never build into the same folder.
    building = folder / f"template.{os.getpid()}.db"
    settings = parse_settings(PROFILE, environ={})
    db = dbm.open_db(building)
    papers = [a.paper for a in parse_feed(day_feed()).announcements]
    paper_rows.save_papers(db, papers)
    embed.embed_papers(db, papers, settings, progress=False)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    os.replace(building, path)
    return path


def copy_database(template: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    return target


@dataclass
class World:
    """One configured digest: ``configure()`` writes config.toml and returns its Settings; ``run()`` is
    one whole pipeline run on a fresh connection, as a new process would make it."""

    tmp: Path
    arxiv_url: str
    smtp: object
    write_config: object
    email: str = ""
    llm: str = ""
    chat: str = ""
    extra: str = ""
    arxiv_timeout: float = 5.0
    profile: str = PROFILE + f'email_to = ["{READER}"]\n'
    settings: object = None
    connections: list = field(default_factory=list)

    @property
    def db_path(self) -> Path:
        return self.tmp / "state" / "digest.db"

    @property
    def files_dir(self) -> Path:
        return self.tmp / "files"

    def toml(self) -> str:
        email = self.email if self.email else self.smtp.settings_toml(user=SMTP_USER, password=SMTP_PASSWORD)
        return (arxiv_section(self.arxiv_url, categories="+".join(CATEGORIES), timeout=self.arxiv_timeout)
                + email
                + f'[storage]\npath = "{self.db_path}"\n'
                + f'[files]\ndir = "{self.files_dir}"\n'
                + self.llm + self.chat + self.extra + self.profile)

    def configure(self, environ: dict | None = None, **changes):
        for key, value in changes.items():
            setattr(self, key, value)
        body = self.toml()
        path = self.write_config(body)
        self.settings = parse_settings(body, environ=environ or {}, source=str(path))
        return self.settings

    def open(self):
        db = dbm.open_db(self.db_path)
        self.connections.append(db)
        return db

    def run(self, **kwargs):
        """One whole run; the ledger is proved on the whole database after it, whatever happened."""
        if self.settings is None:
            self.configure()
        db = self.open()
        try:
            return db, pipeline.run_day(db, self.settings, **kwargs)
        finally:
            assert_ledger(db, self.settings)

    def resend(self, *args: str):
        """`digest resend ARGS` in this process, as the user types it after fixing a cause; the click result."""
        from click.testing import CliRunner

        from digest.cli import cli

        return CliRunner().invoke(cli, ["--config", self.settings.source, "resend", *args])

    def close(self) -> None:
        for db in self.connections:
            db.conn.close()


def ids_in(text: str) -> list[str]:
    """Every paper id a digest's text part links to (the abstract link, once per paper)."""
    return ABS_LINK.findall(text)


def stored_digest_ids(db, profile: str = "me") -> list[str]:
    return [r[0] for r in db.execute(
        "SELECT i.paper_id FROM digest_items i JOIN digests d ON d.id = i.digest_id "
        "WHERE d.profile = ? AND d.announced_on = ? ORDER BY i.rank", [profile, DAY.isoformat()])]


def stored_render(db, fmt: str, profile: str = "me") -> str:
    row = db.execute("SELECT r.body FROM renders r JOIN digests d ON d.id = r.digest_id "
                     "WHERE d.profile = ? AND d.announced_on = ? AND r.format = ?",
                     [profile, DAY.isoformat(), fmt]).fetchone()
    return row[0] if row else ""


def assert_invariants(db, smtp, expected: set[str], *, sent: int | None = None) -> None:
    """No announced paper missing, nothing sent twice. ``sent``: how many emails must have arrived (0 or 1)
    by now. With no digest stored, nothing may have been sent either."""
    stored = stored_digest_ids(db)
    messages = [m for m in smtp.messages if READER in m.rcpt_tos]
    if stored:
        assert sorted(stored) == sorted(expected), "the stored digest lacks announced papers"
        assert len(stored) == len(set(stored))
        text = stored_render(db, "text")
        assert sorted(ids_in(text)) == sorted(expected), "the queued text part lacks announced papers"
    else:
        assert messages == [], "an email went out without a stored digest"
    message_ids = [m.message["Message-ID"] for m in messages]
    assert len(message_ids) == len(set(message_ids)), "the same digest was sent twice"
    assert len(messages) <= 1
    for message in messages:
        found = ids_in(message.part("plain"))
        assert sorted(found) == sorted(expected), "the email that arrived lacks announced papers"
    if sent is not None:
        assert len(messages) == sent


def assert_ledger(db, settings) -> None:
    """`digest doctor`'s proof: every announced paper of every profile in exactly one digest, or waiting."""
    reports = ledger.check(db, settings)
    assert all(r.ok for r in reports), "\n".join(line for r in reports for line in r.describe())


def make_due(db) -> None:
    """The time passes until every waiting delivery is due (rather than sleeping through the backoff)."""
    db.execute("UPDATE deliveries SET next_attempt_at = NULL WHERE status = 'pending'")


# -- `digest` as a separate process --------------------------------------------------------------------------

def digest_process(args: list[str], *, env: dict | None = None, file_size_limit: int | None = None,
                   without_root_override: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m digest ARGS`` as a user would, capturing stdout and stderr.

    ``file_size_limit`` (bytes) sets RLIMIT_FSIZE in the child, the portable way to make its disk "full":
    a write past the limit fails with EFBIG (SIGXFSZ is ignored so the write reports it instead of
    killing the process). ``without_root_override`` takes away root's power to write read-only files
    (CAP_DAC_OVERRIDE and CAP_FOWNER) so a 0444 file is read-only to a test running as root as well.
    """
    command = [sys.executable, "-m", "digest", *args]
    if without_root_override and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", *command]

    def limit():
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout,
                          preexec_fn=limit, cwd=ROOT)


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


# -- the fixtures of the tests that live through one day of a World (test_faults, test_health, test_notices,
# test_backup): conftest.py loads this module as a plugin, so every test module takes them by name.

@pytest.fixture(scope="session")
def template(tmp_path_factory):
    return template_database(tmp_path_factory.getbasetemp())


@pytest.fixture
def smtp():
    with SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as server:
        yield server


def make_world(template: Path, tmp_path: Path, http_server, smtp, write_config) -> World:
    """A World with a copy of the template database, arXiv's feed of DAY served on loopback."""
    here = World(tmp_path, http_server.url, smtp, write_config)
    copy_database(template, here.db_path)
    here.feeds = serve_feeds(http_server, {DAY: day_feed()}, day=DAY)
    return here


@pytest.fixture
def world(template, tmp_path, http_server, smtp, write_config):
    here = make_world(template, tmp_path, http_server, smtp, write_config)
    yield here
    here.close()
