"""What each run did: the ``runs`` and ``run_stages`` tables, so `digest status` can say what happened,
and the daemon why a day has no digest. The only module that reads or writes them."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..text import one_line
from .db import iso, now_iso, transaction

if TYPE_CHECKING:
    from ..config import Settings  # annotations only: pydantic is for validating

log = logging.getLogger("digest.pipeline")


class Run:
    """The ``runs`` row of this run and its ``run_stages``, so `digest status` can say what happened."""

    def __init__(self, db, trigger: str, day: dt.date | None):
        self.db = db
        with transaction(db):
            cursor = db.execute(
                "INSERT INTO runs (announced_on, trigger, status, pid, started_at) VALUES (?, ?, 'running', ?, ?)",
                [day.isoformat() if day else None, trigger, os.getpid(), now_iso()],
            )
        self.id = cursor.lastrowid

    @contextmanager
    def stage(self, name: str):
        counts: dict = {}
        started = time.monotonic()
        self._start_stage(name)
        try:
            yield counts
        except BaseException as exc:
            self._end_stage(name, "failed", counts, time.monotonic() - started, one_line(exc))
            raise
        self._end_stage(name, "failed" if counts.get("error") else "done", counts, time.monotonic() - started,
                        counts.pop("error", None))

    @contextmanager
    def turns(self, *names: str):
        """Stages that take turns, profile by profile (rank, summarize, render): each is recorded as
        started together, and at the end with the time spent in its turns summed, so a run of many
        profiles keeps one profile's work at a time. Yields a :class:`Turns`."""
        turns = Turns(names)
        for name in names:
            self._start_stage(name)
        with transaction(self.db):
            self.db.execute("UPDATE runs SET stage = ? WHERE id = ?", [names[0], self.id])
        try:
            yield turns
        except BaseException as exc:
            for name in names:
                self._end_stage(name, "failed", turns.counts[name], turns.spent[name], one_line(exc))
            raise
        for name in names:
            counts = turns.counts[name]
            self._end_stage(name, "failed" if counts.get("error") else "done", counts, turns.spent[name],
                            counts.pop("error", None))

    def _start_stage(self, name: str) -> None:
        with transaction(self.db):
            self.db.execute("INSERT OR REPLACE INTO run_stages (run_id, stage, status, started_at) "
                            "VALUES (?, ?, 'running', ?)", [self.id, name, now_iso()])
            self.db.execute("UPDATE runs SET stage = ? WHERE id = ?", [name, self.id])
        log.info("stage %s: started", name)

    def _end_stage(self, name, status, counts, duration, error):
        with transaction(self.db):
            self.db.execute(
                "UPDATE run_stages SET status=?, counts=?, error=?, finished_at=?, duration=? "
                "WHERE run_id=? AND stage=?",
                [status, json.dumps(counts), error, now_iso(), round(duration, 3), self.id, name],
            )
        shown = " ".join(f"{k}={v}" for k, v in counts.items())
        log.info("stage %s: %s in %.2fs%s%s", name, status, duration, " " + shown if shown else "",
                 f" ({error})" if error else "")

    def on_day(self, day: dt.date) -> None:
        """The day is known: an interrupted or failed run still says which day it was for."""
        with transaction(self.db):
            self.db.execute("UPDATE runs SET announced_on = ? WHERE id = ?", [day.isoformat(), self.id])

    def finish(self, status: str, day: dt.date | None = None, error: str | None = None) -> None:
        with transaction(self.db):
            self.db.execute(
                "UPDATE runs SET status=?, error=?, finished_at=?, announced_on=COALESCE(?, announced_on) "
                "WHERE id=?",
                [status, error, now_iso(), day.isoformat() if day else None, self.id],
            )

    def forget(self) -> None:
        """A run that turned out to be a usage mistake leaves no trace."""
        with transaction(self.db):
            self.db.execute("DELETE FROM runs WHERE id = ?", [self.id])


class Turns:
    """The stages of :meth:`Run.turns`: ``with turns("rank") as counts:`` is one turn of the rank stage."""

    def __init__(self, names):
        self.counts: dict[str, dict] = {name: {} for name in names}
        self.spent: dict[str, float] = {name: 0.0 for name in names}

    @contextmanager
    def __call__(self, name: str):
        started = time.monotonic()
        try:
            yield self.counts[name]
        finally:
            self.spent[name] += time.monotonic() - started


def last_run(db) -> dict | None:
    """The latest run with its stages (counts decoded), or None before the first."""
    row = db.execute("SELECT id, announced_on, trigger, status, stage, error, started_at, finished_at FROM runs "
                     "ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return None
    run = dict(zip(("id", "day", "trigger", "status", "stage", "error", "started_at", "finished_at"), row))
    run["stages"] = [dict(r) for r in db.query(
        "SELECT stage, status, counts, duration, error FROM run_stages WHERE run_id = ? ORDER BY started_at, rowid",
        [row[0]])]
    for stage in run["stages"]:
        stage["counts"] = json.loads(stage["counts"]) if stage["counts"] else {}
    return run


def last_error_of_day(db, day: dt.date) -> str | None:
    """The error of the latest run of ``day`` that recorded one."""
    row = db.execute("SELECT error FROM runs WHERE announced_on = ? AND error IS NOT NULL ORDER BY id DESC LIMIT 1",
                     [day.isoformat()]).fetchone()
    return row[0] if row else None


def latest_error(db) -> dict | None:
    """The most recent error a run recorded: when, which run and stage, what."""
    row = db.execute("SELECT COALESCE(finished_at, started_at), 'run ' || id || COALESCE(' (' || stage || ')', ''), "
                     "error FROM runs WHERE error IS NOT NULL ORDER BY COALESCE(finished_at, started_at) DESC "
                     "LIMIT 1").fetchone()
    return dict(zip(("at", "source", "error"), row)) if row else None


def first_done_day(db) -> dt.date | None:
    """The earliest day a run finished."""
    row = db.execute("SELECT MIN(announced_on) FROM runs WHERE status = 'done'").fetchone()
    return dt.date.fromisoformat(row[0]) if row and row[0] else None


def record_give_up(db, day: dt.date, firing: dt.datetime, reason: str) -> None:
    """A failed run of ``day`` that the daemon stopped polling for, so `digest status` shows why it has no
    digest."""
    with transaction(db):
        db.execute("INSERT INTO runs (announced_on, trigger, status, error, pid, started_at, finished_at) "
                   "VALUES (?, 'schedule', 'failed', ?, ?, ?, ?)",
                   [day.isoformat(), reason, os.getpid(),
                    iso(firing), now_iso()])


def given_up(db, latest: int = 5) -> list[dict]:
    """The ``latest`` days the daemon gave up on (:func:`record_give_up`), newest first: day, why, when."""
    return [dict(r) for r in db.query(
        "SELECT announced_on AS day, error, started_at AS at FROM runs WHERE trigger = 'schedule' "
        "AND status = 'failed' AND error LIKE 'gave up at %' ORDER BY id DESC LIMIT ?", [latest])]


def mark_interrupted(db, pid: int, reason: str) -> None:
    """A run killed before it could record itself (a stop during a long call into C code) is
    ``interrupted``, not left ``running`` for ever."""
    with transaction(db):
        db.execute("UPDATE runs SET status = 'interrupted', error = ?, finished_at = ? "
                   "WHERE pid = ? AND status = 'running'", [reason, now_iso(), pid])


def llm_summarized_none(run: dict, settings: Settings) -> int:
    """How many papers a run wanted summarized when the LLM (configured) summarized none of them; else 0."""
    summarized = next((s["counts"] for s in run["stages"] if s["stage"] == "summarize"), {})
    return summarized.get("papers", 0) if settings.llm.enabled and not summarized.get("llm") else 0
