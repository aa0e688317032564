"""The schedule, signals and catch-up: it only decides *when* the pipeline runs.

Every pipeline run is a child process (``python -m digest run``), so the daemon itself never imports
torch or loads the model: between runs it is a small Python process, and a crash inside a run cannot
take it down. All state lives in SQLite (``runs``, ``fetches``, ``digests``), none in memory, so a
daemon started after a crash or a holiday works out on its own what is still owed.

The day a schedule firing is for: arXiv mails an announcement at 20:00 ET on the evening before its
*feed day* (Sun-Thu evenings, feed days Mon-Fri), so at any moment the latest feed day that should be
out is the ET date four hours later. A daily firing at ``schedule.time`` in ``schedule.timezone``
polls the feed until that day is stored or ``give_up_after`` seconds have passed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import zoneinfo
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import config as config_module
from .config import ConfigError, Settings
from .db import now_iso, open_db
from .locks import LockBusy, pid_lock

log = logging.getLogger("digest.daemon")

ARXIV_TZ = zoneinfo.ZoneInfo("America/New_York")
MAILING_LEAD = dt.timedelta(hours=4)  # 20:00 ET mailing -> midnight ET feed day
PRETEND_TODAY_ENV = "DIGEST_PRETEND_TODAY"  # tests only: see Clock.from_environ
CHILD_STOP_GRACE = 7.0  # seconds a run may take to checkpoint after SIGTERM; the daemon exits within 10
TICK = 0.2  # seconds between checks of signals, the watchdog and the child
OUTBOX_CHECK_EVERY = 60.0  # seconds between looks for a delivery whose retry time has come


class DaemonError(Exception):
    """Why the daemon cannot start, phrased as the one line the user sees."""


# -- the clock ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clock:
    """Now, shifted by whole days in tests.

    ``DIGEST_PRETEND_TODAY=2026-06-23`` makes the daemon believe today is that date in the schedule's
    timezone while keeping the real time of day, so APScheduler's real-time firings still happen at
    the configured time (a shift of whole days never moves a time of day, in a zone without DST).
    """

    shift: dt.timedelta = dt.timedelta(0)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.shift

    @classmethod
    def from_environ(cls, environ, tz: zoneinfo.ZoneInfo) -> "Clock":
        pretend = environ.get(PRETEND_TODAY_ENV)
        if not pretend:
            return cls()
        try:
            day = dt.date.fromisoformat(pretend)
        except ValueError:
            raise DaemonError(f"{PRETEND_TODAY_ENV}: expected a date as YYYY-MM-DD, got {pretend!r}") from None
        today = dt.datetime.now(tz).date()
        return cls(dt.timedelta(days=(day - today).days))


# -- which days are owed --------------------------------------------------------------------------------

def announcement_day_at(moment: dt.datetime) -> dt.date:
    """The latest feed day whose 20:00 ET mailing (the evening before) is due by ``moment``."""
    wall = moment.astimezone(ARXIV_TZ).replace(tzinfo=None)  # wall-clock arithmetic: DST-proof
    return (wall + MAILING_LEAD).date()


def last_firing(settings: Settings, now: dt.datetime) -> dt.datetime:
    """The most recent scheduled time at or before ``now``."""
    tz = settings.schedule.tz
    local = now.astimezone(tz)
    firing = dt.datetime.combine(local.date(), settings.schedule.time_of_day, tzinfo=tz)
    if firing > local:
        firing = dt.datetime.combine(local.date() - dt.timedelta(days=1), settings.schedule.time_of_day, tzinfo=tz)
    return firing


def next_firing(settings: Settings, now: dt.datetime) -> dt.datetime:
    tz = settings.schedule.tz
    firing = last_firing(settings, now)
    return dt.datetime.combine(firing.date() + dt.timedelta(days=1), settings.schedule.time_of_day, tzinfo=tz)


@dataclass
class Plan:
    """What a firing (or a start) owes: past announcement days never covered, and the feed day to poll
    for (None on a weekend or holiday, or when it is already covered), with the time to give up."""

    missed: list[dt.date] = field(default_factory=list)
    due: dt.date | None = None
    deadline: dt.datetime | None = None
    firing: dt.datetime | None = None


def plan_work(db, settings: Settings, now: dt.datetime,
              expected: Callable[[dt.date], bool] | None = None) -> Plan:
    """Work out, from the database alone, which announcement days are owed at ``now``.

    A missed day is an expected feed day after the first day ever covered (so a fresh install does not
    send a week of old digests), at most ``schedule.catch_up_days`` before the due day, and not covered.
    """
    if expected is None:
        from .arxiv import expected_announcement as expected
    firing = last_firing(settings, now)
    day = announcement_day_at(firing)
    first = first_covered_day(db)
    missed = []
    if first is not None:
        oldest = max(first + dt.timedelta(days=1), day - dt.timedelta(days=settings.schedule.catch_up_days))
        missed = [d for d in _days(oldest, day - dt.timedelta(days=1)) if expected(d) and not day_covered(db, d)]
    due = day if expected(day) and not day_covered(db, day) else None
    deadline = firing + dt.timedelta(seconds=settings.schedule.give_up_after)
    return Plan(missed, due, deadline, firing)


def _days(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


def first_covered_day(db) -> dt.date | None:
    """The earliest announcement day any run finished, or any digest covers."""
    row = db.execute(
        "SELECT MIN(day) FROM (SELECT MIN(announced_on) AS day FROM digests "
        "UNION ALL SELECT MIN(announced_on) FROM runs WHERE status IN ('done', 'empty'))").fetchone()
    return dt.date.fromisoformat(row[0]) if row and row[0] else None


def day_covered(db, day: dt.date) -> bool:
    """Nothing more to do for the day: the digests covering it (itself, or as part of a merged catch-up)
    have no delivery still to go, or a run of it finished without a digest (no paper for any profile,
    or arXiv announced nothing)."""
    ids = _digests_covering(db, day)
    if ids:
        return not _undelivered(db, ids)
    row = db.execute("SELECT 1 FROM runs WHERE announced_on = ? AND status IN ('done', 'empty') LIMIT 1",
                     [day.isoformat()]).fetchone()
    return row is not None


def _digests_covering(db, day: dt.date) -> list[int]:
    return [r[0] for r in db.execute(
        "SELECT id FROM digests WHERE announced_on = :d OR EXISTS (SELECT 1 FROM json_each(digests.days) "
        "WHERE value = :d)", {"d": day.isoformat()}).fetchall()]


def _undelivered(db, digest_ids: list[int]) -> list[tuple]:
    """Deliveries still to go (pending, or claimed by a run that has not finished): a run of the day
    sends them, so a digest built just before a crash is still owed."""
    marks = ",".join("?" * len(digest_ids))
    return db.execute(f"SELECT channel, target, status, last_error FROM deliveries WHERE digest_id IN ({marks}) "
                      f"AND status IN ('pending', 'sending') ORDER BY id", digest_ids).fetchall()


def why_not_covered(db, day: dt.date) -> str:
    """For the give-up message: a delivery still waiting, or how the feed looked at the last fetch."""
    ids = _digests_covering(db, day)
    waiting = _undelivered(db, ids) if ids else []
    if waiting:
        channel, target, status, error = waiting[0]
        where = f"{channel} to {target}" if target else channel
        return f"{len(waiting)} of its deliveries still waiting; {where}: {error or status}"
    row = db.execute("SELECT status, announced_on, error FROM fetches WHERE source = 'feed' "
                     "ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return "arXiv's feed was never fetched"
    status, shown, error = row
    if status == "announced":
        return f"arXiv's feed still showed {shown}"
    if status == "empty":
        return "arXiv's feed was still empty"
    return f"fetching arXiv's feed still failed: {error}"


def record_give_up(db, day: dt.date, firing: dt.datetime, reason: str) -> None:
    """A failed ``runs`` row, so `digest status` shows why a day has no digest."""
    db.execute("INSERT INTO runs (announced_on, trigger, status, error, pid, started_at, finished_at) "
               "VALUES (?, 'schedule', 'failed', ?, ?, ?, ?)",
               [day.isoformat(), reason, os.getpid(), firing.astimezone(dt.timezone.utc).isoformat(
                   timespec="seconds"), now_iso()])


# -- systemd's notify protocol ------------------------------------------------------------------------

def sd_notify(message: str, environ=None) -> bool:
    """Send one notify message to ``$NOTIFY_SOCKET`` (a path, or '@' for the abstract namespace).

    A few lines instead of a dependency; False when not under systemd or the socket is gone.
    """
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", environ.get("NOTIFY_SOCKET"), exc.strerror or exc)
        return False
    return True


def watchdog_interval(environ=None) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is meant for this process."""
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None


# -- the single-instance lock -------------------------------------------------------------------------

def lock_path(settings: Settings) -> Path:
    return settings.database_path().parent / "daemon.lock"


@contextmanager
def daemon_lock(settings: Settings) -> Iterator[Path]:
    """One daemon per database. A second one fails at once with a one-line reason rather than waiting,
    so `systemctl start` of a duplicate unit reports the conflict instead of hanging. The kernel
    drops the flock when its holder dies, so a SIGKILLed daemon never leaves a stale lock."""
    path = lock_path(settings)
    try:
        with pid_lock(path, wait=False):
            yield path
    except LockBusy as busy:
        raise DaemonError(f"another digest daemon (pid {busy.holder}) is running on this database ({path})") \
            from None


# -- loading the configuration ------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedConfig:
    """Validated settings and the exact text they came from: runs are handed the text, so an edit
    takes effect only once it has been validated by a reload (SIGHUP)."""

    path: Path
    text: str
    settings: Settings


def load_config(path: Path) -> LoadedConfig:
    """Read once and validate; every failure is a :class:`ConfigError` of one line."""
    text = config_module.read_config_text(path)
    settings = config_module.parse_settings(text, label=path.name, source=str(path))
    return LoadedConfig(path, text, settings)


# -- the daemon ---------------------------------------------------------------------------------------

CHILD_ENV_DROPPED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Daemon:
    """The main loop. Signal handlers only set flags; the loop acts on them every TICK seconds, between
    or during runs, so a stop never waits for a poll interval."""

    def __init__(self, config: LoadedConfig, *, clock: Clock | None = None, environ=None):
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)
        self.clock = clock or Clock.from_environ(self.environ, config.settings.schedule.tz)
        self.stop_signal: int | None = None
        self.reload_requested = False
        self.firings: list[dt.datetime] = []  # appended by APScheduler's thread, drained by the loop
        self.scheduler = None
        self.child: subprocess.Popen | None = None
        self.last_child_end = float("-inf")
        self.watchdog_every = watchdog_interval(self.environ)
        self.last_watchdog = 0.0
        self.next_outbox_check = 0.0
        self.activity: str | None = None  # what STATUS= says the daemon is doing; None: waiting

    @property
    def settings(self) -> Settings:
        return self.config.settings

    # -- life cycle ---------------------------------------------------------------------------------

    def serve(self, once: bool = False) -> int:
        """Run until SIGTERM/SIGINT (or, with ``once``, until today's work is done). Returns the exit status."""
        self._install_signal_handlers()
        with daemon_lock(self.settings) as lock:
            if not once:
                self._start_scheduler()
            log.info("daemon started: pid %d, schedule %s %s, next at %s, database %s, lock %s",
                     os.getpid(), self.settings.schedule.time, self.settings.schedule.timezone,
                     self._next_text(), self.settings.database_path(), lock)
            self._notify("READY=1", f"STATUS=waiting for {self._next_text()}")
            try:
                owed_ok = self.work(self.clock.now())
                self._status(None)
                if once:
                    return 0 if owed_ok else 1
                while self.stop_signal is None:
                    if self.firings:
                        self.firings.clear()
                        self.work(self.clock.now())
                        self._status(None)
                    self.retry_deliveries()
                    self._pause(TICK)
            finally:
                self._shut_down()
        return 0

    def _install_signal_handlers(self) -> None:
        def stop(signum, frame):
            self.stop_signal = signum

        def reload(signum, frame):
            self.reload_requested = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # the daemon logs its own schedule
        self.scheduler = BackgroundScheduler(timezone=self.settings.schedule.tz)
        self.scheduler.add_job(self._on_firing, self._trigger(), id="digest", coalesce=True, max_instances=1,
                               misfire_grace_time=3600)
        self.scheduler.start()

    def _trigger(self):
        from apscheduler.triggers.cron import CronTrigger

        at = self.settings.schedule.time_of_day
        return CronTrigger(hour=at.hour, minute=at.minute, timezone=self.settings.schedule.tz)

    def _on_firing(self) -> None:
        self.firings.append(self.clock.now())

    def _shut_down(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        if self.stop_signal is not None:
            log.info("daemon stopped (%s)", signal.Signals(self.stop_signal).name)
        self._notify("STOPPING=1")

    def _next_text(self) -> str:
        return next_firing(self.settings, self.clock.now()).isoformat(timespec="minutes")

    # -- the work of one firing ---------------------------------------------------------------------

    def work(self, now: dt.datetime) -> bool:
        """Catch up missed days, then poll for the due one. True when nothing is owed any more."""
        with closing(open_db(self.settings.database_path())) as db:
            plan = plan_work(db, self.settings, now)
        if plan.missed and self.settings.schedule.catch_up == "merged":
            log.info("catch-up: %d missed announcement days (%s), one merged digest", len(plan.missed),
                     ", ".join(map(str, plan.missed)))
            self._status(f"catching up {plan.missed[0]} to {plan.missed[-1]}")
            self.run_child("catch-up", plan.missed)
        elif plan.missed:
            log.info("catch-up: %d missed announcement days (%s)", len(plan.missed), ", ".join(map(str, plan.missed)))
            for day in plan.missed:
                if self.stop_signal is not None:
                    return False
                self._status(f"catching up {day}")
                self.run_child("catch-up", [day])
        if self.stop_signal is not None:
            return False
        still_owed = [d for d in plan.missed if not self._covered(d)]
        if still_owed:
            log.warning("still owed after the catch-up, retried at the next start or scheduled time: %s",
                        ", ".join(map(str, still_owed)))
        if plan.due is None:
            if not plan.missed:
                day = announcement_day_at(plan.firing)
                log.info("nothing owed: %s %s", day,
                         "is already covered" if self._covered(day) else "is no announcement day (weekend or holiday)")
            return not still_owed
        return self.poll(plan.due, plan.firing, plan.deadline) and not still_owed

    def poll(self, day: dt.date, firing: dt.datetime, deadline: dt.datetime) -> bool:
        """Run the feed's latest day until it is ``day`` (arXiv is sometimes hours late), or give up."""
        attempt = 0
        while self.stop_signal is None:
            attempt += 1
            self._status(f"running the digest of {day} (attempt {attempt})")
            self.run_child("schedule", [])
            if self._covered(day):
                return True
            if self.stop_signal is not None:
                break
            with closing(open_db(self.settings.database_path())) as db:
                state = why_not_covered(db, day)
                now = self.clock.now()
                if now >= deadline:
                    local = deadline.astimezone(self.settings.schedule.tz)
                    reason = f"gave up at {local:%Y-%m-%d %H:%M} {self.settings.schedule.timezone}: {state}"
                    record_give_up(db, day, firing, reason)
                    log.error("no digest for %s: %s", day, reason)
                    return False
            wait = min(self.settings.schedule.poll_every, (deadline - now).total_seconds())
            log.info("%s not done yet: %s; next poll in %.0fs", day, state, wait)
            self._status(f"polling for {day}: {state}")
            self._pause(wait)
        return False

    def retry_deliveries(self) -> None:
        """Between firings, a delivery whose retry time has come (SMTP was down) is sent by a child run of
        its day with --no-fetch: the digest is stored, so that run only drains the outbox."""
        if time.monotonic() < self.next_outbox_check:
            return
        self.next_outbox_check = time.monotonic() + OUTBOX_CHECK_EVERY
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        with closing(open_db(self.settings.database_path())) as db:
            row = db.execute(
                "SELECT g.announced_on FROM deliveries d JOIN digests g ON g.id = d.digest_id "
                "WHERE d.status = 'pending' AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?) "
                "ORDER BY d.id LIMIT 1", [now]).fetchone()
        if row:
            log.info("a delivery of %s is due for a retry", row[0])
            self._status(f"retrying a delivery of {row[0]}")
            self.run_child("retry", [dt.date.fromisoformat(row[0])], extra=["--no-fetch"])
            self._status(None)

    def _covered(self, day: dt.date) -> bool:
        with closing(open_db(self.settings.database_path())) as db:
            return day_covered(db, day)

    # -- child runs ---------------------------------------------------------------------------------

    def run_child(self, trigger: str, days: list[dt.date], extra: list[str] = ()) -> int | None:
        """One pipeline run in a child process, fed the validated configuration on stdin.

        While it runs the loop keeps serving the watchdog and signals; on stop the child gets SIGTERM
        (it records itself interrupted: every stage is idempotent) and SIGKILL after a grace period.
        Returns its exit status, or None when it could not be started.
        """
        command = [sys.executable, "-m", "digest", "--config", "/dev/stdin", "run", "--trigger", trigger]
        for day in days:
            command += ["--day", day.isoformat()]
        command += list(extra)
        env = {k: v for k, v in self.environ.items() if k not in CHILD_ENV_DROPPED}
        env["PYTHONUNBUFFERED"] = "1"
        label = ", ".join(map(str, days)) or "the feed's latest day"
        # Each run spaces its own requests to arXiv; back-to-back runs are spaced here.
        self._pause(self.last_child_end + self.settings.arxiv.min_interval - time.monotonic())
        if self.stop_signal is not None:
            return None
        started = time.monotonic()
        try:
            self.child = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        except OSError as exc:
            log.error("run %s (%s): cannot start: %s", label, trigger, exc.strerror or exc)
            return None
        try:
            with self.child.stdin as stdin:
                stdin.write(self.config.text.encode("utf-8"))
        except BrokenPipeError:
            pass  # the child died before reading; its exit status says why
        code = self._wait_for_child()
        self.child = None
        self.last_child_end = time.monotonic()
        outcome = {0: "done", 1: "failed", 2: "configuration or usage error", 130: "interrupted"}.get(
            code, f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}")
        if code != 0 and self.stop_signal is not None:
            outcome = "interrupted"  # we asked it to stop; its own status only says it did not finish
        log.info("run %s (%s): %s in %.1fs", label, trigger, outcome, time.monotonic() - started)
        return code

    def _wait_for_child(self) -> int:
        child = self.child
        stop_sent_at = None
        while True:
            code = child.poll()
            if code is not None:
                return code
            if self.stop_signal is not None and stop_sent_at is None:
                log.info("stopping: asking the running run (pid %d) to checkpoint", child.pid)
                child.send_signal(signal.SIGTERM)
                stop_sent_at = time.monotonic()
            if stop_sent_at is not None and time.monotonic() - stop_sent_at > CHILD_STOP_GRACE:
                log.warning("the run (pid %d) did not stop in %.0fs; killing it", child.pid, CHILD_STOP_GRACE)
                child.kill()
                return child.wait()
            self._tick()
            time.sleep(TICK / 4)

    # -- between things -----------------------------------------------------------------------------

    def _pause(self, seconds: float) -> None:
        """Sleep, but keep serving the watchdog, reloads and stops (and wake up for a firing)."""
        until = time.monotonic() + max(seconds, 0)
        while self.stop_signal is None and time.monotonic() < until:
            self._tick()
            time.sleep(min(TICK, max(until - time.monotonic(), 0)))

    def _tick(self) -> None:
        if self.watchdog_every and time.monotonic() - self.last_watchdog >= self.watchdog_every:
            self.last_watchdog = time.monotonic()
            self._notify("WATCHDOG=1")
        if self.reload_requested:
            self.reload_requested = False
            self.reload()

    def reload(self) -> bool:
        """SIGHUP: validate the file again; a bad one keeps the running configuration."""
        self._notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            fresh = load_config(self.config.path)
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the previous one: %s", exc)
            self._notify("READY=1")
            return False
        old = self.settings.schedule
        self.config = fresh
        from .logs import setup_logging
        setup_logging(fresh.settings.secrets())
        if self.scheduler is not None and (old.time, old.timezone) != (fresh.settings.schedule.time,
                                                                        fresh.settings.schedule.timezone):
            self.scheduler.reschedule_job("digest", trigger=self._trigger())
        log.info("configuration reloaded from %s; next at %s", fresh.path, self._next_text())
        self._notify("READY=1", self._status_line())  # the next time may have moved
        return True

    def _status(self, activity: str | None) -> None:
        """Tell systemd what the daemon is doing now, or (None) that it waits for the next firing, so
        `systemctl status` never shows a run that has ended."""
        self.activity = activity
        self._notify(self._status_line())

    def _status_line(self) -> str:
        return f"STATUS={self.activity or 'waiting for ' + self._next_text()}"

    def _notify(self, *lines: str) -> None:
        sd_notify("\n".join(lines), self.environ)


def run_daemon(config_path: Path, *, once: bool = False, environ=None) -> int:
    """`digest daemon`: load and validate the configuration, set up journald logging, serve."""
    config = load_config(config_path)
    from .logs import setup_logging
    setup_logging(config.settings.secrets())
    return Daemon(config, environ=environ).serve(once=once)
