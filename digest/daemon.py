"""The schedule, signals and catch-up: it only decides *when* the pipeline runs.

Every pipeline run is a child process (``python -m digest run``), so the daemon itself never imports
torch or loads the model: between runs it is a small Python process, and a crash inside a run cannot
take it down. All state lives in SQLite (the ledger, ``fetches``, the outbox), none in memory, so a
daemon started after a crash or a holiday works out on its own what is still owed.

The day a schedule firing is for: arXiv mails an announcement at 20:00 ET on the evening before its
*feed day* (Sun-Thu evenings, feed days Mon-Fri), so at any moment the latest feed day that should be
out is the ET date four hours later. A daily firing at ``schedule.time`` in ``schedule.timezone``
polls the feed until that day is settled (its digests built) or ``give_up_after`` seconds have passed.
A weekday the calendar calls a holiday gets one look, without polling, in case arXiv announced after all.
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
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from . import config as config_module
from . import ledger
from .arxiv.calendar import Calendar, Clock, ClockError, announcement_day_at
from .config import ConfigError, Settings
from .db import day_fetched, now_iso, open_db
from .deliver import outbox
from .locks import LockBusy, pid_lock
from .text import plural

log = logging.getLogger("digest.daemon")

CHILD_STOP_GRACE = 7.0  # seconds a run may take to checkpoint after SIGTERM; the daemon exits within 10
TICK = 0.2  # seconds between checks of signals, the watchdog and the child
OUTBOX_CHECK_EVERY = 60.0  # seconds between looks for a delivery whose retry time has come


class DaemonError(Exception):
    """Why the daemon cannot start, phrased as the one line the user sees."""


# -- when -----------------------------------------------------------------------------------------------

def schedule_trigger(settings: Settings):
    """APScheduler's trigger for ``schedule.time`` in ``schedule.timezone``: the daemon fires by it, and
    `digest status` asks it for the next firing, so the two agree even on a day the time does not exist
    (a DST gap)."""
    from apscheduler.triggers.cron import CronTrigger

    at = settings.schedule.time_of_day
    return CronTrigger(hour=at.hour, minute=at.minute, timezone=settings.schedule.tz)


def last_firing(settings: Settings, now: dt.datetime) -> dt.datetime:
    """The most recent scheduled time at or before ``now``."""
    tz = settings.schedule.tz
    local = now.astimezone(tz)
    firing = dt.datetime.combine(local.date(), settings.schedule.time_of_day, tzinfo=tz)
    if firing > local:
        firing = dt.datetime.combine(local.date() - dt.timedelta(days=1), settings.schedule.time_of_day, tzinfo=tz)
    return firing


def next_firing(settings: Settings, now: dt.datetime) -> dt.datetime:
    """The next time the daemon fires after ``now``, as APScheduler computes it."""
    return schedule_trigger(settings).get_next_fire_time(None, now + dt.timedelta(seconds=1))


def next_run(settings: Settings, now: dt.datetime) -> dt.datetime:
    """The next firing that owes an announcement day: the daemon fires every day, but on a weekend or an
    arXiv holiday it has nothing to fetch, so those firings are not "runs"."""
    calendar = Calendar.from_settings(settings)
    firing = next_firing(settings, now)
    while not calendar.expected(announcement_day_at(firing)):
        firing = next_firing(settings, firing)
    return firing


# -- which days are owed --------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a firing (or a start) owes: past announcement days not settled, the feed day to poll for
    (None when settled, or no announcement day), a holiday weekday to look at once, and the time to
    give up polling."""

    missed: list[dt.date] = field(default_factory=list)
    due: dt.date | None = None
    look: dt.date | None = None
    deadline: dt.datetime | None = None
    firing: dt.datetime | None = None


def plan_work(db, settings: Settings, now: dt.datetime, calendar: Calendar | None = None) -> Plan:
    """Work out, from the database alone, which announcement days are owed at ``now``.

    A missed day is an expected feed day after the first day ever covered (so a fresh install does not
    send a week of old digests), at most ``schedule.catch_up_days`` before the due day, and not settled:
    not fetched, or fetched with papers still owed to a profile.
    """
    calendar = calendar or Calendar.from_settings(settings)
    firing = last_firing(settings, now)
    day = announcement_day_at(firing)
    first = ledger.first_day(db)
    missed = []
    if first is not None:
        oldest = max(first + dt.timedelta(days=1), day - dt.timedelta(days=settings.schedule.catch_up_days))
        missed = [d for d in calendar.announcement_days(oldest, day - dt.timedelta(days=1))
                  if not ledger.day_settled(db, settings, d)]
    plan = Plan(missed, deadline=firing + dt.timedelta(seconds=settings.schedule.give_up_after), firing=firing)
    if not ledger.day_settled(db, settings, day, due=True):
        if calendar.expected(day):
            plan.due = day
        elif day.weekday() < 5:
            plan.look = day
    return plan


def why_not_settled(db, settings: Settings, day: dt.date) -> str:
    """For the poll's log and the give-up message: how the feed looked at the last fetch, or what is
    still owed."""
    if day_fetched(db, day, settings.feed_categories()) == "announced":
        owed = sum(1 for p in settings.profiles.values()
                   for a in ledger.owed(db, settings, p, day, first_day=day) if a.announced_on == day)
        row = db.execute("SELECT error FROM runs WHERE announced_on = ? AND error IS NOT NULL ORDER BY id DESC "
                         "LIMIT 1", [day.isoformat()]).fetchone()
        return f"{plural(owed, 'paper')} of {day} in no digest yet" + (f" (last error: {row[0]})" if row else "")
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


def undelivered(db, settings: Settings, day: dt.date) -> list[dict]:
    """Outbox rows not sent of the digests that cover ``day``."""
    ids = [d.id for name in settings.profiles for d in ledger.covering(db, name, day)]
    return [row for row in outbox.for_digests(db, ids) if row["status"] != "sent"]


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
        try:
            self.clock = clock or Clock.from_environ(self.environ, config.settings.schedule.tz)
        except ClockError as exc:
            raise DaemonError(str(exc)) from None
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
        """Run until SIGTERM/SIGINT, or with ``once`` until today's work is done. Returns the exit status:
        with ``once``, 0 when today's digest went out (or nothing was due), 1 when today's was given up
        or waits in the outbox; a missed day that still fails is logged and retried, not fatal."""
        self._install_signal_handlers()
        with daemon_lock(self.settings) as lock:
            if not once:
                self._start_scheduler()
            log.info("daemon started: pid %d, schedule %s %s, next at %s, database %s, lock %s",
                     os.getpid(), self.settings.schedule.time, self.settings.schedule.timezone,
                     self._next_text(), self.settings.database_path(), lock)
            self._notify("READY=1", f"STATUS=waiting for {self._next_text()}")
            try:
                today_ok = self.work(self.clock.now())
                if once:
                    self.retry_deliveries(force=True)
                    today = announcement_day_at(last_firing(self.settings, self.clock.now()))
                    return 0 if today_ok and self._delivered(today) and self.stop_signal is None else 1
                while self.stop_signal is None:
                    if self.firings:
                        self.firings.clear()
                        self.work(self.clock.now())
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
        return schedule_trigger(self.settings)

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
        """Catch up missed days, then poll for the due one. False when today's day was given up (or the
        daemon is stopping); a missed day still failing is logged and retried at the next firing."""
        with closing(open_db(self.settings.database_path())) as db:
            plan = plan_work(db, self.settings, now)
        if plan.missed and self.settings.schedule.catch_up == "merged":
            log.info("catch-up: %s (%s), one merged digest", plural(len(plan.missed), "missed announcement day"),
                     ", ".join(map(str, plan.missed)))
            self._status(f"catching up {plan.missed[0]} to {plan.missed[-1]}")
            self.run_child("catch-up", plan.missed)
        elif plan.missed:
            log.info("catch-up: %s (%s)", plural(len(plan.missed), "missed announcement day"),
                     ", ".join(map(str, plan.missed)))
            for day in plan.missed:
                if self.stop_signal is not None:
                    return False
                self._status(f"catching up {day}")
                self.run_child("catch-up", [day])
        if self.stop_signal is not None:
            return False
        still_owed = [d for d in plan.missed if not self._settled(d)]
        if still_owed:
            log.warning("still owed after the catch-up, retried at the next start or scheduled time: %s",
                        ", ".join(map(str, still_owed)))
        today_ok = True
        if plan.look is not None:
            log.info("%s is an arXiv holiday by the calendar; one look at the feed in case arXiv announced", plan.look)
            self._status(f"looking at the feed on {plan.look}, an arXiv holiday")
            self.run_child("schedule", [])
        elif plan.due is not None:
            today_ok = self.poll(plan.due, plan.firing, plan.deadline)
        elif not plan.missed:
            day = announcement_day_at(plan.firing)
            log.info("nothing owed: %s %s", day, "is settled" if self._settled(day)
                     else "is no announcement day (a weekend or an arXiv holiday)")
        self._status(None)
        return today_ok

    def poll(self, day: dt.date, firing: dt.datetime, deadline: dt.datetime) -> bool:
        """Run the feed's latest day until ``day`` is settled (arXiv is sometimes hours late), or give up."""
        attempt = 0
        while self.stop_signal is None:
            attempt += 1
            self._status(f"running the digest of {day} (attempt {attempt})")
            self.run_child("schedule", [])
            if self._settled(day):
                return True
            if self.stop_signal is not None:
                break
            with closing(open_db(self.settings.database_path())) as db:
                state = why_not_settled(db, self.settings, day)
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

    def retry_deliveries(self, force: bool = False) -> None:
        """A delivery whose retry time has come (SMTP was down) is sent by a child `digest deliver`,
        which only drains the outbox. Checked once a minute between firings (and once with ``force``)."""
        if not force and time.monotonic() < self.next_outbox_check:
            return
        self.next_outbox_check = time.monotonic() + OUTBOX_CHECK_EVERY
        with closing(open_db(self.settings.database_path())) as db:
            day = outbox.first_due_day(db, dt.datetime.now(dt.timezone.utc))
        if day:
            log.info("a delivery of %s is due for a retry", day)
            self._status(f"retrying a delivery of {day}")
            self.run_child("retry", [], command="deliver")
            self._status(None)

    def _settled(self, day: dt.date) -> bool:
        with closing(open_db(self.settings.database_path())) as db:
            return ledger.day_settled(db, self.settings, day, due=True)

    def _delivered(self, day: dt.date) -> bool:
        """Every digest that covers ``day`` went out (true of a day without digests)."""
        with closing(open_db(self.settings.database_path())) as db:
            waiting = undelivered(db, self.settings, day)
        if waiting:
            log.warning("the digest of %s waits in the outbox: %s: %s", day, outbox.where(waiting[0]),
                        waiting[0]["last_error"] or waiting[0]["status"])
        return not waiting

    # -- child runs ---------------------------------------------------------------------------------

    def run_child(self, trigger: str, days: list[dt.date], command: str = "run") -> int | None:
        """One pipeline run (or, with ``command="deliver"``, one outbox drain) in a child process, fed the
        validated configuration on stdin.

        While it runs the loop keeps serving the watchdog and signals; on stop the child gets SIGTERM
        (it records itself interrupted: every stage is idempotent) and SIGKILL after a grace period.
        Returns its exit status, or None when it could not be started.
        """
        argv = [sys.executable, "-m", "digest", "--config", "/dev/stdin", command]
        if command == "run":
            argv += ["--trigger", trigger]
        for day in days:
            argv += ["--day", day.isoformat()]
        env = {k: v for k, v in self.environ.items() if k not in CHILD_ENV_DROPPED}
        env["PYTHONUNBUFFERED"] = "1"
        label = ", ".join(map(str, days)) or ("the outbox" if command == "deliver" else "the feed's latest day")
        # Each run spaces its own requests to arXiv; back-to-back runs are spaced here.
        self._pause(self.last_child_end + self.settings.arxiv.min_interval - time.monotonic())
        if self.stop_signal is not None:
            return None
        started = time.monotonic()
        try:
            self.child = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
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
