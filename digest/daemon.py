"""The schedule, signals and catch-up: it decides *when* the pipeline runs (never how), and hosts the
feedback links' web server and the reader of replies by email, which must outlive any one run.

Every pipeline run is a child process (``python -m digest run``), so the daemon itself never imports
torch or loads the model: between runs it is a small Python process, and a crash inside a run cannot
take it down. All state lives in SQLite (the ledger, ``fetches``, the outbox), none in memory, so a
daemon started after a crash or a holiday works out on its own what is still owed.

A daily firing at ``schedule.time`` in ``schedule.timezone`` (see :mod:`digest.schedule` for the day it
is for) polls the feed until that day is settled (its digests built) or ``give_up_after`` seconds have
passed. A weekday the calendar calls a holiday gets one look, without polling, in case arXiv announced
after all.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .arxiv.calendar import Clock, ClockError, announcement_day_at
from .config import ConfigError, Settings, parse_settings, read_config_text, remember_valid
from .locks import LockBusy, pid_lock
from .logs import setup_logging
from .schedule import (
    last_firing,
    next_firing,
    plan_work,
    schedule_trigger,
    undelivered,
    why_not_settled,
)
from .service import sd_notify, watchdog_interval
from .storage import ledger, outbox
from .storage.db import open_db
from .storage.runs import mark_interrupted, record_give_up
from .text import plural

log = logging.getLogger("digest.daemon")

CHILD_STOP_GRACE = 7.0  # seconds a run may take to checkpoint after SIGTERM; the daemon exits within 10
TICK = 0.2  # seconds between checks of signals, the watchdog and the child
OUTBOX_CHECK_EVERY = 60.0  # seconds between looks for a delivery whose retry time has come


class DaemonError(Exception):
    """Why the daemon cannot start, phrased as the one line the user sees."""


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
    text = read_config_text(path)
    settings = parse_settings(text, label=str(path), source=str(path))  # the file by its whole path
    remember_valid(text, settings)  # for `digest status --service`, which then need not validate it again
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
        self.feedback_server = None
        self.reply_reader: threading.Thread | None = None
        self.child_overdue = False  # the running child was stopped for passing schedule.run_timeout
        self.next_reply_check = 0.0
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
                self._start_feedback_server()
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
                    self._read_replies()
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

    def _start_feedback_server(self) -> None:
        """The feedback links' endpoint on a thread, when [feedback] listen is set (digest/feedback/web.py)."""
        if self.settings.feedback.listen:
            from .feedback.web import start_feedback_server

            self.feedback_server = start_feedback_server(lambda: self.settings)

    def _read_replies(self) -> None:
        """Votes in replies to the digest ([feedback.imap], digest/feedback/replies.py), on a thread of
        their own so that a slow mailbox never holds up a run or a stop."""
        imap = self.settings.feedback.imap
        busy = self.reply_reader is not None and self.reply_reader.is_alive()
        if not imap.enabled or busy or time.monotonic() < self.next_reply_check:
            return
        from .feedback.replies import read_replies_logged

        self.next_reply_check = time.monotonic() + imap.every
        self.reply_reader = threading.Thread(target=read_replies_logged, args=(self.settings,), name="replies",
                                             daemon=True)
        self.reply_reader.start()

    def _trigger(self):
        return schedule_trigger(self.settings)

    def _on_firing(self) -> None:
        self.firings.append(self.clock.now())

    def _shut_down(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        if self.feedback_server is not None:
            self.feedback_server.close()
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
                    self.run_child("schedule", [], command="deliver")  # which also sends the failure notice
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
        if code != 0 and (self.stop_signal is not None or self.child_overdue):
            outcome = "interrupted"  # we asked it to stop; its own status only says it did not finish
        log.info("run %s (%s): %s in %.1fs", label, trigger, outcome, time.monotonic() - started)
        return code

    def _wait_for_child(self) -> int:
        """Its exit status. A run still going after ``schedule.run_timeout`` (every wait in it is bounded,
        so something unforeseen holds it) is stopped as a stop of the daemon would stop it: the daemon's
        next poll tries again, and the days after it are not held up behind it."""
        child = self.child
        started = time.monotonic()
        stop_sent_at = None
        self.child_overdue = False
        while True:
            code = child.poll()
            if code is not None:
                return code
            overdue = time.monotonic() - started > self.settings.schedule.run_timeout
            if stop_sent_at is None and (self.stop_signal is not None or overdue):
                if overdue:
                    self.child_overdue = True
                    log.error("the run (pid %d) has run for over %.0f s (schedule.run_timeout); stopping it",
                              child.pid, self.settings.schedule.run_timeout)
                log.info("stopping: asking the running run (pid %d) to checkpoint", child.pid)
                child.send_signal(signal.SIGTERM)
                stop_sent_at = time.monotonic()
            if stop_sent_at is not None and time.monotonic() - stop_sent_at > CHILD_STOP_GRACE:
                log.warning("the run (pid %d) did not stop in %.0fs; killing it", child.pid, CHILD_STOP_GRACE)
                child.kill()
                code = child.wait()
                with closing(open_db(self.settings.database_path())) as db:  # it could not say so itself
                    mark_interrupted(db, child.pid, f"killed after it did not stop within {CHILD_STOP_GRACE:.0f}s")
                return code
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
    setup_logging(config.settings.secrets())
    return Daemon(config, environ=environ).serve(once=once)
