"""The daemon as a user runs it: a real `digest daemon` subprocess, loopback arXiv, LLM and SMTP servers,
a schedule seconds away, and signals sent the way systemd sends them.

Time: the daemon honours DIGEST_PRETEND_TODAY (tests only), which shifts its clock by whole days so the
recorded listing's feed days (2026-06-23 ...) are "today" while APScheduler keeps firing in real time.
The schedule's timezone is UTC, so a whole-day shift never moves a time of day.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zoneinfo
from contextlib import closing
from pathlib import Path

import pytest
from world import SMTP_PASSWORD, SMTP_USER, assert_ledger

from digest import schedule, service
from digest.arxiv.calendar import ET, PRETEND_TODAY_ENV, announcement_day_at
from digest.config import load_settings, parse_settings
from digest.records import Announcement, DigestView, Paper, Ranked
from digest.records import Rendered
from digest.storage import papers as paper_rows
from digest.storage import ledger
from digest.storage.db import open_db

SUNDAY = dt.date(2026, 6, 28)  # a weekend day: nothing owed, the daemon only waits
TUESDAY = dt.date(2026, 6, 23)  # the listing's first full feed day


# -- harness --------------------------------------------------------------------------------------------

class DaemonProcess:
    """`python -m digest daemon` in its own process group (as systemd's cgroup), its output collected."""

    def __init__(self, config: Path, *, pretend: dt.date | None, env: dict | None = None, once: bool = False):
        environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if pretend:
            environ[PRETEND_TODAY_ENV] = pretend.isoformat()
        command = [sys.executable, "-m", "digest", "--config", str(config), "daemon"] + (["--once"] if once else [])
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=environ, start_new_session=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first output line matching ``pattern``; fails with the whole output if none comes."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    pytest.fail(f"no line matching {pattern!r} in the daemon's output:\n{self.output}")
                self._changed.wait(min(left, 0.2))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill_service(self) -> None:
        """SIGKILL the daemon and its running child at once, as a crash of the whole service would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._reader.join(5)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill_service()


@pytest.fixture
def daemons():
    """Start daemons with ``daemons(config, ...)``; every one still running is killed at the end."""
    started: list[DaemonProcess] = []

    def start(config: Path, **kwargs) -> DaemonProcess:
        process = DaemonProcess(config, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


class NotifySocket:
    """A fake $NOTIFY_SOCKET: a datagram socket in the abstract namespace that collects messages."""

    def __init__(self):
        self.address = f"@digest-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def _receive_until(self, done, timeout: float, failure) -> None:
        """Keep what arrives until ``done()``; past ``timeout`` seconds the test fails with ``failure()``."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                pytest.fail(failure())
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def lines(self) -> list[str]:
        return [line for m in self.messages for line in m.split("\n")]

    def wait_for(self, line: str, timeout: float = 30.0) -> None:
        self._receive_until(lambda: line in self.lines(), timeout,
                            lambda: f"{line} never reached $NOTIFY_SOCKET; got {self.messages}")

    def statuses_until_waiting_after(self, activity: str, timeout: float = 30.0) -> list[str]:
        """The STATUS= lines received until one says "waiting for" after one starting with ``activity``."""
        statuses = lambda: [line for line in self.lines() if line.startswith("STATUS=")]

        def waiting_after_activity() -> bool:
            lines = statuses()
            busy = [i for i, line in enumerate(lines) if line.startswith(f"STATUS={activity}")]
            return bool(busy) and any(line.startswith("STATUS=waiting for ") for line in lines[busy[-1]:])

        self._receive_until(waiting_after_activity, timeout,
                            lambda: f"no STATUS=waiting for ... after STATUS={activity}...; got {statuses()}")
        return statuses()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket():
    listener = NotifySocket()
    yield listener
    listener.close()


def config_text(tmp_path: Path, *, arxiv: str = "", time_of_day: str = "12:00", extra: str = "",
                schedule: str = "", profile: str = 'interests = ["large language model agents"]\n') -> str:
    return (
        f"{arxiv}\n"
        f"[storage]\npath = \"{tmp_path / 'state' / 'digest.db'}\"\n\n"
        f"[files]\ndir = \"{tmp_path / 'digests'}\"\n\n"
        f"[schedule]\ntime = \"{time_of_day}\"\ntimezone = \"UTC\"\n{schedule}\n"
        f"{extra}\n"
        f"[profiles.me]\n{profile}"
    )


def idle_config(tmp_path: Path, write_config, **kwargs) -> Path:
    """A daemon with nothing owed: with SUNDAY as today, the last firing was for a weekend day."""
    return write_config(config_text(tmp_path, **kwargs))


def utc_minutes_from_now(minutes: int) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)).strftime("%H:%M")


# -- the day arithmetic, on its own -----------------------------------------------------------------------

def settings_for(time_of_day: str = "07:00", timezone: str = "America/New_York", **schedule):
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in schedule.items())
    return parse_settings(f'[schedule]\ntime = "{time_of_day}"\ntimezone = "{timezone}"\n{extra}'
                          f'[profiles.me]\ninterests = ["x"]\n')


def et(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=ET)


@pytest.mark.parametrize("moment, day", [
    (et(2026, 6, 22, 19, 59), dt.date(2026, 6, 22)),  # Monday before the 20:00 mailing: Monday's feed day
    (et(2026, 6, 22, 20, 0), dt.date(2026, 6, 23)),  # the mailing is out: Tuesday's
    (et(2026, 6, 23, 7, 0), dt.date(2026, 6, 23)),
    (dt.datetime(2026, 6, 24, 3, 0, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")), dt.date(2026, 6, 23)),
    (et(2026, 11, 29, 23, 0), dt.date(2026, 11, 30)),  # winter time: Sunday evening -> Monday
])
def test_the_day_a_moment_is_owed_follows_the_20h_et_mailing(moment, day):
    assert announcement_day_at(moment) == day


def test_last_and_next_firing_in_the_schedules_timezone():
    settings = settings_for("07:00", "Europe/Berlin")
    now = dt.datetime(2026, 6, 23, 4, 30, tzinfo=dt.timezone.utc)  # 06:30 in Berlin: today's is ahead
    assert schedule.last_firing(settings, now).isoformat() == "2026-06-22T07:00:00+02:00"
    assert schedule.next_firing(settings, now).isoformat() == "2026-06-23T07:00:00+02:00"


def stored_day(db, day: str, ids: list[str], source: str = "feed") -> None:
    """A day's papers stored as a fetch of ``source`` stores them (one cs.AI paper per id)."""
    day_ = dt.date.fromisoformat(day)
    papers = [Paper(i, 1, f"Paper {i}", f"Abstract of {i}.", ["A. Author"], ["cs.AI"], "cs.AI") for i in ids]
    paper_rows.save_announcements(db, [Announcement(p, day_, "new", n) for n, p in enumerate(papers)], source=source)
    paper_rows.record_fetch(db, announced_on=day_, categories="cs.AI", source=source, status="announced",
                            entries=len(ids))


def digest_of(db, days: list[str], ids: list[str], profile: str = "me") -> int:
    """A digest built for ``days`` that covers the papers ``ids`` (stored before), as the pipeline stores one."""
    covers = [a for d in days for a in paper_rows.announced_on(db, dt.date.fromisoformat(d)) if a.paper.id in ids]
    view = DigestView(profile, [dt.date.fromisoformat(d) for d in days], "cs.AI",
                      [Ranked(a.paper, n + 1, 0.5, "test") for n, a in enumerate(covers)],
                      {"announced": len(covers), "new": len(covers), "cross": 0, "replace": 0, "summarized": 0},
                      covers=covers)
    return ledger.store_digest(db, view, Rendered("s", "h", "t", "m", "{}"), [("email", "a@example.org")])


def test_plan_after_a_gap_lists_the_missed_announcement_days(tmp_path):
    db = open_db(tmp_path / "d.db")
    stored_day(db, "2026-06-23", ["2606.00001"])
    digest_of(db, ["2026-06-23"], ["2606.00001"])
    settings = settings_for("07:00", "America/New_York")
    plan = schedule.plan_work(db, settings, et(2026, 6, 29, 9, 0))  # Monday, three feed days later
    assert plan.missed == [dt.date(2026, 6, 24), dt.date(2026, 6, 25), dt.date(2026, 6, 26)]
    assert plan.due == dt.date(2026, 6, 29)
    assert plan.deadline == et(2026, 6, 29, 13, 0)  # 07:00 + the default six hours


def test_plan_skips_settled_days_holidays_and_days_beyond_catch_up_days(tmp_path):
    db = open_db(tmp_path / "d.db")
    stored_day(db, "2026-06-15", ["2606.00015"])
    digest_of(db, ["2026-06-15"], ["2606.00015"])
    stored_day(db, "2026-06-23", ["2606.00023"])
    stored_day(db, "2026-06-24", ["2606.00024"])
    digest_of(db, ["2026-06-23", "2026-06-24"], ["2606.00023", "2606.00024"])  # a merged catch-up
    stored_day(db, "2026-06-25", ["2606.00025", "2606.00026"])
    digest_of(db, ["2026-06-25"], ["2606.00025"])  # 2606.00026 arrived after the digest was built
    paper_rows.record_fetch(db, announced_on=dt.date(2026, 6, 26), categories="cs.AI", source="api", status="empty",
                            detail="not announced (the feed went from 2026-06-25 to 2026-06-29)")
    settings = settings_for("07:00", "America/New_York", catch_up_days=10)
    plan = schedule.plan_work(db, settings, et(2026, 6, 29, 9, 0))
    # 06-19 is an arXiv holiday, 06-22 was never fetched, 06-23 and 06-24 are in the merged digest, 06-25 has a
    # paper no digest covers, 06-26 was positively not announced.
    assert plan.missed == [dt.date(2026, 6, 22), dt.date(2026, 6, 25)]


def test_a_built_digest_settles_its_day_while_its_delivery_waits_in_the_outbox(tmp_path):
    db = open_db(tmp_path / "d.db")
    settings = settings_for("07:00", "America/New_York")
    stored_day(db, "2026-06-23", ["2606.00001"])
    assert not ledger.day_settled(db, settings, dt.date(2026, 6, 23), due=True)  # its first digest is owed
    assert schedule.why_not_settled(db, settings, dt.date(2026, 6, 23)) == "1 paper of 2026-06-23 in no digest yet"
    digest_of(db, ["2026-06-23"], ["2606.00001"])
    db.execute("UPDATE deliveries SET last_error = '421 try later'")
    assert ledger.day_settled(db, settings, dt.date(2026, 6, 23), due=True)
    assert [(r["status"], r["last_error"]) for r in schedule.undelivered(db, settings, dt.date(2026, 6, 23))] == \
        [("pending", "421 try later")]


def test_plan_on_a_fresh_database_owes_only_the_due_day_and_nothing_on_a_weekend(tmp_path):
    db = open_db(tmp_path / "d.db")
    settings = settings_for("07:00", "America/New_York")
    assert schedule.plan_work(db, settings, et(2026, 6, 29, 9, 0)) == schedule.Plan(
        [], dt.date(2026, 6, 29), None, et(2026, 6, 29, 13, 0), et(2026, 6, 29, 7, 0))
    saturday = schedule.plan_work(db, settings, et(2026, 6, 27, 9, 0))
    assert (saturday.missed, saturday.due, saturday.look) == ([], None, None)
    before_the_firing = schedule.plan_work(db, settings, et(2026, 6, 29, 6, 0))  # Sunday 07:00 was the last
    assert before_the_firing.due is None
    holiday = schedule.plan_work(db, settings, et(2026, 6, 19, 9, 0))  # Juneteenth: one look, no polling
    assert (holiday.due, holiday.look) == (None, dt.date(2026, 6, 19))


def test_sd_notify_reaches_a_socket_path_and_the_abstract_namespace(tmp_path, notify_socket):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        assert service.sd_notify("READY=1\nSTATUS=hello", {"NOTIFY_SOCKET": str(path)})
        assert listener.recv(100) == b"READY=1\nSTATUS=hello"
    assert service.sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": notify_socket.address})
    notify_socket.wait_for("WATCHDOG=1", timeout=2)
    assert service.sd_notify("READY=1", {}) is False


# -- the daemon alone ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ready_watchdog_and_sigterm_exits_cleanly_within_10s(tmp_path, write_config, daemons, notify_socket):
    config = idle_config(tmp_path, write_config)
    process = daemons(config, pretend=SUNDAY,
                      env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000"})
    notify_socket.wait_for("READY=1")
    notify_socket.wait_for("WATCHDOG=1", timeout=5)
    process.wait_for(r"nothing owed: 2026-06-2[78] is no announcement day")
    lines = [line for m in notify_socket.messages for line in m.split("\n")]
    assert any(line.startswith("STATUS=waiting for 2026-06-2") for line in lines), lines
    sent = time.monotonic()
    process.signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert time.monotonic() - sent < 10
    notify_socket.wait_for("STOPPING=1", timeout=2)
    assert process.lines[-1].endswith("daemon stopped (SIGTERM)")


@pytest.mark.slow
def test_a_second_daemon_on_the_same_database_exits_with_one_line(tmp_path, write_config, daemons, notify_socket):
    config = idle_config(tmp_path, write_config)
    first = daemons(config, pretend=SUNDAY, env={"NOTIFY_SOCKET": notify_socket.address})
    notify_socket.wait_for("READY=1")
    second = daemons(config, pretend=SUNDAY)
    assert second.wait(30) == 1
    lock = tmp_path / "state" / "daemon.lock"
    assert second.lines == [f"Error: another digest daemon (pid {first.proc.pid}) is running on this database "
                            f"({lock})"]
    assert first.proc.poll() is None


@pytest.mark.slow
def test_sighup_reloads_a_valid_file_and_keeps_the_old_one_when_it_is_bad(tmp_path, write_config, daemons):
    config = idle_config(tmp_path, write_config, time_of_day="12:00")
    process = daemons(config, pretend=SUNDAY)
    process.wait_for("daemon started")
    config.write_text(config_text(tmp_path, time_of_day="25:00"))
    process.signal(signal.SIGHUP)
    process.wait_for(r"configuration not reloaded, keeping the previous one: \S*config.toml: schedule.time: "
                     r"expected a time of day as HH:MM, got \"25:00\"$")
    assert process.proc.poll() is None
    config.write_text(config_text(tmp_path, time_of_day="06:30"))
    process.signal(signal.SIGHUP)
    found = process.wait_for(r"configuration reloaded from .*config.toml; next at (\S+)")
    assert found.group(1).endswith("T06:30+00:00")


@pytest.mark.slow
def test_the_daemon_process_holds_no_torch(tmp_path, write_config, daemons):
    config = idle_config(tmp_path, write_config)
    process = daemons(config, pretend=SUNDAY)
    process.wait_for("nothing owed")
    maps = Path(f"/proc/{process.proc.pid}/maps").read_text()
    assert "libtorch" not in maps
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, digest.cli, digest.daemon, digest.arxiv, digest.pipeline; "
                               "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') "
                               "if m in sys.modules))"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"


# -- polling a late feed ------------------------------------------------------------------------------------

def seconds_since_utc_midnight() -> int:
    now = dt.datetime.now(dt.timezone.utc)
    return now.hour * 3600 + now.minute * 60 + now.second


@pytest.mark.slow
def test_once_polls_a_late_feed_then_gives_up_and_records_why(tmp_path, write_config, daemons, http_server):
    from feeds import arxiv_section, serve_feeds

    feeds = serve_feeds(http_server, {})  # every request: the empty feed arXiv serves before it announces
    # The 00:00 firing's deadline is 12 s away: the daemon's start and its first child run (a new Python
    # process) take over 4 s on a busy 2-core machine, and the test needs a poll before the deadline.
    give_up_after = seconds_since_utc_midnight() + 12
    config = write_config(config_text(
        tmp_path, arxiv=arxiv_section(http_server.url), time_of_day="00:00",
        schedule=f"poll_every = 1.0\ngive_up_after = {give_up_after}.0\n"))
    process = daemons(config, pretend=TUESDAY, once=True)
    assert process.wait(60) == 1
    deadline = (dt.datetime.combine(TUESDAY, dt.time(0)) + dt.timedelta(seconds=give_up_after))
    reason = f"gave up at {deadline:%Y-%m-%d %H:%M} UTC: arXiv's feed was still empty"
    assert f"no digest for 2026-06-23: {reason}" in process.output
    assert "2026-06-23 not done yet: arXiv's feed was still empty; next poll in" in process.output
    assert len(feeds.requests) >= 2
    db = open_db(tmp_path / "state" / "digest.db")
    assert db.execute("SELECT status, error FROM runs WHERE trigger = 'schedule' AND announced_on = '2026-06-23'"
                      ).fetchall() == [("failed", reason)]
    # and said so, once, through the channel it has (files): issue 19's failure notice
    notices = list((tmp_path / "digests" / "notices").iterdir())
    assert [p.name for p in notices] == ["2026-06-23-gave-up.txt"]
    assert f"no digest for 2026-06-23: {reason}" in notices[0].read_text()
    assert db.execute("SELECT problem, sent_to, error FROM notices").fetchall() == [("gave up", '["files"]', None)]


# -- end to end: the whole pipeline under the daemon --------------------------------------------------------

CATEGORIES = "cs.IR+cs.MA+cs.RO"  # 1 to 25 papers on each listing day: real data, a quick embed
RECIPIENTS = ["alice@example.org", "bob@example.org"]
GAP_DAYS = [dt.date(2026, 6, 23), dt.date(2026, 6, 24), dt.date(2026, 6, 25), dt.date(2026, 6, 26),
            dt.date(2026, 6, 29)]


def llm_reply(request):
    """An OpenAI-compatible chat completion. A plain loopback route rather than a model: these tests
    need the summarize stage to take a while (``delay``), not any particular summary."""
    import json

    from loopback import Reply

    content = json.dumps({"tldr": "A stand-in model summarizes this paper in one plain sentence.", "problem": "p",
                          "related_work": "r", "method": "m",
                          "experiments": "e", "further_work": "f", "summary": "s"})
    body = {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}}
    return Reply(body=json.dumps(body), content_type="application/json", delay=1.5)


class Service:
    """Loopback arXiv (feed and API), LLM and SMTP servers, and a config pointing the daemon at them."""

    def __init__(self, tmp_path: Path, http_server, smtp, write_config, catch_up: str = "each"):
        from feeds import arxiv_section, feed_xml, serve_feeds

        self.tmp_path = tmp_path
        self.smtp = smtp
        codes = CATEGORIES.split("+")
        self.feeds = serve_feeds(http_server, {d: feed_xml(d, codes) for d in GAP_DAYS}, day=TUESDAY)
        http_server.routes["/v1/chat/completions"] = llm_reply
        self.config = write_config(config_text(
            tmp_path, arxiv=arxiv_section(http_server.url, categories=CATEGORIES),
            time_of_day="00:00",
            schedule=f'poll_every = 1.0\ngive_up_after = 86000.0\ncatch_up = "{catch_up}"\n',
            extra=(f'[llm]\nbase_url = "{http_server.url}/v1"\nmodel = "test-model"\napi_key = "sk-test-0123456789"\n'
                   f"summarize = 4\nconcurrency = 2\ntimeout = 10.0\n\n{smtp.settings_toml(SMTP_USER, SMTP_PASSWORD)}\n"),
            profile=('interests = ["robot learning and manipulation", "recommender systems"]\n'
                     f"email_to = {RECIPIENTS!r}\n".replace("'", '"'))))
        self.db_path = tmp_path / "state" / "digest.db"

    def query(self, sql: str, params=()) -> list[tuple]:
        import sqlite3

        with closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            return conn.execute(sql, params).fetchall()

    def messages_to(self, recipient: str) -> list:
        return [m for m in self.smtp.messages if recipient in m.rcpt_tos]

    def announced_ids(self, day: dt.date) -> list[str]:
        return [r[0] for r in self.query("SELECT paper_id FROM announcements WHERE announced_on = ?",
                                         [day.isoformat()])]

    def wait_for_stage(self, stage: str, process: DaemonProcess, timeout: float = 120) -> int:
        """The id of the run once ``stage`` is running in it (the DB is polled every 5 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.db_path.exists():
                try:
                    rows = self.query("SELECT s.run_id FROM run_stages s JOIN runs r ON r.id = s.run_id "
                                      "WHERE s.stage = ? AND s.status = 'running' AND r.status = 'running'", [stage])
                except Exception:  # the schema is being created by the first run
                    rows = []
                if rows:
                    return rows[0][0]
            if process.proc.poll() is not None:
                pytest.fail(f"the daemon exited before stage {stage}:\n{process.output}")
            time.sleep(0.005)
        pytest.fail(f"stage {stage} never ran:\n{process.output}")


class SMTPStall:
    """Hold the first SMTP DATA unanswered, as a slow server would, so a kill lands mid-send; once
    ``release``d, that message is dropped (its sender is dead) and later ones are accepted."""

    def __init__(self, smtp):
        import asyncio

        self.in_data = threading.Event()
        self.released = threading.Event()
        handler = smtp.controller.handler
        original = handler.handle_DATA

        async def stalled(server, session, envelope):
            if self.released.is_set():
                return await original(server, session, envelope)
            self.in_data.set()
            while not self.released.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 the sender went away"

        handler.handle_DATA = stalled

    def release(self) -> None:
        self.released.set()


def assert_one_complete_email_each(service: Service, day: dt.date) -> None:
    ids = service.announced_ids(day)
    assert ids, f"nothing stored for {day}"
    for recipient in RECIPIENTS:
        received = service.messages_to(recipient)
        assert len(received) == 1, [m.message["Subject"] for m in received]
        text = received[0].part("plain")
        missing = [i for i in ids if i not in text]
        assert not missing, f"{recipient}'s digest lacks {missing}"
    with closing(open_db(service.tmp_path / "state" / "digest.db")) as db:
        assert_ledger(db, load_settings(service.config))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["fetch", "embed", "summarize", "render", "deliver"])
def test_sigkill_during_a_stage_then_restart_sends_exactly_one_complete_digest(
        stage, tmp_path, write_config, http_server, smtp, daemons):
    from loopback import Reply

    service = Service(tmp_path, http_server, smtp, write_config)
    if stage == "fetch":  # arXiv answers slowly, so the kill lands while the feed is being read
        xml = service.feeds.by_day[TUESDAY]
        service.feeds.by_day[TUESDAY] = Reply(body=xml, delay=3.0)
    stall = SMTPStall(smtp) if stage == "deliver" else None
    first = daemons(service.config, pretend=TUESDAY)
    run_id = service.wait_for_stage(stage, first)
    if stall:
        assert stall.in_data.wait(60), first.output
    first.kill_service()
    assert service.query("SELECT status FROM run_stages WHERE run_id = ? AND stage = ?", [run_id, stage]) == \
        [("running",)], f"the kill came after {stage} had finished"
    assert smtp.messages == []
    if stall:
        stall.release()
    if stage == "fetch":
        service.feeds.by_day[TUESDAY] = xml

    second = daemons(service.config, pretend=TUESDAY)
    if stage == "deliver":  # the digest was built: the day is settled, and the outbox sends what it holds
        second.wait_for(r"run the outbox \(retry\): done", timeout=30)
    else:
        second.wait_for(r"run the feed's latest day \(schedule\): done", timeout=180)
    assert_one_complete_email_each(service, TUESDAY)
    assert service.query("SELECT status FROM runs WHERE id = ?", [run_id]) == [("running",)]  # died with it
    second.signal(signal.SIGTERM)
    assert second.wait(10) == 0
    assert "sk-test-0123456789" not in first.output + second.output


@pytest.mark.slow
def test_two_daemons_started_together_send_once(tmp_path, write_config, http_server, smtp, daemons):
    service = Service(tmp_path, http_server, smtp, write_config)
    pair = [daemons(service.config, pretend=TUESDAY), daemons(service.config, pretend=TUESDAY)]
    refused = None
    deadline = time.monotonic() + 60
    while refused is None and time.monotonic() < deadline:
        refused = next((p for p in pair if p.proc.poll() is not None), None)
        time.sleep(0.05)
    assert refused is not None and refused.wait(5) == 1
    assert "Error: another digest daemon (pid" in refused.output
    running = next(p for p in pair if p is not refused)
    running.wait_for(r"run the feed's latest day \(schedule\): done", timeout=180)
    assert_one_complete_email_each(service, TUESDAY)
    # The run loaded the model in its child; the daemon itself never mapped libtorch.
    assert "libtorch" not in Path(f"/proc/{running.proc.pid}/maps").read_text()
    # A manual run of the same day afterwards waits for the lock, then finds nothing to send.
    manual = subprocess.run([sys.executable, "-m", "digest", "--config", str(service.config), "run", "--day",
                             "2026-06-23"], capture_output=True, text=True, timeout=120)
    assert manual.returncode == 0, manual.stderr
    assert_one_complete_email_each(service, TUESDAY)


@pytest.mark.slow
@pytest.mark.parametrize("catch_up", ["each", "merged"])
def test_a_restart_after_a_three_day_gap_delivers_the_missed_days(catch_up, tmp_path, write_config, http_server,
                                                                   smtp, daemons, notify_socket):
    from test_arxiv import serve_fake_api

    service = Service(tmp_path, http_server, smtp, write_config, catch_up=catch_up)
    first = daemons(service.config, pretend=TUESDAY, env={"NOTIFY_SOCKET": notify_socket.address})
    first.wait_for(r"run the feed's latest day \(schedule\): done", timeout=180)
    # `systemctl status` says what comes next once the run is over, not the run that has ended.
    statuses = notify_socket.statuses_until_waiting_after("running the digest of 2026-06-23")
    assert statuses[-1] == "STATUS=waiting for 2026-06-24T00:00+00:00", statuses
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0

    # Away Wednesday to Friday; back on Monday 2026-06-29. The feed shows only Monday's announcement.
    serve_fake_api(http_server, set(CATEGORIES.split("+")))
    service.feeds.day = dt.date(2026, 6, 29)
    second = daemons(service.config, pretend=dt.date(2026, 6, 29))
    second.wait_for(r"catch-up: 3 missed announcement days \(2026-06-24, 2026-06-25, 2026-06-26\)")
    second.wait_for(r"run the feed's latest day \(schedule\): done", timeout=300)
    digests = service.query("SELECT announced_on, days FROM digests ORDER BY announced_on")
    if catch_up == "each":
        assert [d for d, _ in digests] == [d.isoformat() for d in GAP_DAYS]
    else:
        assert digests[1] == ("2026-06-26", '["2026-06-24", "2026-06-25", "2026-06-26"]')
        assert [d for d, _ in digests] == ["2026-06-23", "2026-06-26", "2026-06-29"]
    for recipient in RECIPIENTS:
        assert len(service.messages_to(recipient)) == len(digests)
    for day in GAP_DAYS[1:4]:  # the missed days came from the API, each paper in some digest
        assert service.query("SELECT COUNT(*) FROM fetches WHERE source = 'api' AND announced_on = ? "
                             "AND status = 'announced'", [day.isoformat()]) == [(1,)]
    second.signal(signal.SIGTERM)
    assert second.wait(10) == 0


@pytest.mark.slow
def test_once_exits_0_when_today_went_out_though_a_missed_day_still_fails(tmp_path, write_config, http_server,
                                                                          smtp, daemons):
    # README: `daemon --once` is 0 when today's digest went out, 1 when today was given up or failed; a
    # missed day that fails is logged and retried at the next start, not counted in the exit status.
    from loopback import Reply

    service = Service(tmp_path, http_server, smtp, write_config)
    assert daemons(service.config, pretend=TUESDAY, once=True).wait(180) == 0
    http_server.routes["/api/query"] = lambda request: Reply(503, body="down for maintenance")
    service.feeds.day = dt.date(2026, 6, 29)  # back on Monday: the API, which has the missed days, is down
    monday = daemons(service.config, pretend=dt.date(2026, 6, 29), once=True)
    assert monday.wait(300) == 0, monday.output
    days = [d for (d,) in service.query("SELECT announced_on FROM digests ORDER BY announced_on")]
    assert days == ["2026-06-23", "2026-06-29"]
    assert "2026-06-24" in service.query("SELECT group_concat(announced_on) FROM runs WHERE status = 'failed'")[0][0]
    for recipient in RECIPIENTS:
        assert len(service.messages_to(recipient)) == 2


def test_a_run_past_schedule_run_timeout_is_stopped_recorded_interrupted_and_tried_again(tmp_path, write_config,
                                                                                         http_server, daemons):
    from feeds import arxiv_section
    from loopback import Reply

    # arXiv that answers after ten minutes, within a configured timeout of 1,000 s: nothing times out
    http_server.routes["/atom/"] = lambda request: Reply(delay=600)
    config = write_config(config_text(
        tmp_path, arxiv=arxiv_section(http_server.url, categories=CATEGORIES, timeout=1000.0), time_of_day="00:00",
        schedule="poll_every = 1.0\ngive_up_after = 86000.0\nrun_timeout = 3.0\n"))
    process = daemons(config, pretend=TUESDAY)
    process.wait_for(r"the run \(pid \d+\) has run for over 3 s \(schedule.run_timeout\); stopping it", timeout=60)
    process.wait_for(r"run the feed's latest day \(schedule\): interrupted in ", timeout=30)
    process.wait_for(r"not done yet: .*; next poll in 1s", timeout=30)
    deadline = time.monotonic() + 60
    while sum("has run for over 3 s" in line for line in process.lines) < 2:  # the next poll's run, stopped too
        assert time.monotonic() < deadline, process.output
        time.sleep(0.2)
    import sqlite3

    with closing(sqlite3.connect(tmp_path / "state" / "digest.db", timeout=10)) as conn:
        first = conn.execute("SELECT status, announced_on FROM runs ORDER BY id LIMIT 1").fetchone()
    assert first == ("interrupted", None), first


@pytest.mark.slow
def test_sigterm_during_a_run_checkpoints_it_and_exits_within_10s(tmp_path, write_config, http_server, smtp,
                                                                  daemons):
    service = Service(tmp_path, http_server, smtp, write_config)
    process = daemons(service.config, pretend=TUESDAY)
    run_id = service.wait_for_stage("embed", process)
    sent = time.monotonic()
    process.signal(signal.SIGTERM)  # to the daemon alone: it forwards the stop to its run
    assert process.wait(10) == 0
    assert time.monotonic() - sent < 10
    # Stopped after the fetch: the run says which day it was building.
    assert service.query("SELECT status, announced_on FROM runs WHERE id = ?", [run_id]) == \
        [("interrupted", TUESDAY.isoformat())]
    process.wait_for(r"run the feed's latest day \(schedule\): interrupted")
    assert process.lines[-1].endswith("daemon stopped (SIGTERM)")
    # Issue 24: the run's click no longer adds "Aborted!" to the journal at every stop.
    assert not [line for line in process.lines if "Aborted!" in line or "Interrupted." in line], process.lines
    assert smtp.messages == []
