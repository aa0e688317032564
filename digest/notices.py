"""Failure notices: when nobody is looking, digest says so itself. The ``notices`` table is this
module's.

A problem is one of: a day the daemon gave up on (and still has no digest), a delivery that failed for
good (past its retries, or refused for good), or a run in which the LLM summarized none of the papers.
For each, once per problem and announcement day, a short notice goes to every channel that still works
(another recipient, a chat target, the files folder): what failed, since when, what was kept, and the
command to look. The row is claimed before anything is sent, so a notice never goes out twice however
many processes look; a notice channel that fails is logged and recorded, never retried. A problem that
fixed itself before anyone looked (the day was sent after all) gets no notice.

The next digest built says in its header what was caught up (:func:`caught_up`). The one failure no run
of digest can see, its own systemd unit failing, is told the same way by `digest notify-failure UNIT`,
which systemd's ``OnFailure=`` starts (:func:`unit_failed`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import socket
from dataclasses import dataclass

from .config import Settings
from .secrets import redact
from .storage import ledger, outbox, runs
from .storage.db import iso, now_iso, transaction
from .text import one_line

log = logging.getLogger("digest.notices")

LOOK = "To look: digest status"


@dataclass
class Problem:
    key: str  # what failed: "gave up", "delivery email to a@b", "llm"
    day: str  # the announcement day it is about
    summary: str  # one line: what failed
    since: str
    kept: str

    def text(self) -> str:
        return (f"digest on {socket.gethostname()}: {self.summary}\n\nSince: {self.since}\n"
                f"Kept: {self.kept}\n{LOOK}\n")


def problems(db, settings: Settings) -> list[Problem]:
    """Every problem a notice may be due for, oldest kind first."""
    found = []
    for row in reversed(runs.given_up(db)):
        if not ledger.day_settled(db, settings, dt.date.fromisoformat(row["day"])):
            found.append(Problem("gave up", row["day"], f"no digest for {row['day']}: {row['error']}", row["at"],
                                 "every paper fetched is stored; the day is tried again at the next start or "
                                 "scheduled time, and its papers go into the next digest"))
    for row in outbox.not_sent(db):
        if row["status"] == "failed":
            found.append(Problem(f"delivery {outbox.where(row)}", row["day"],
                                 f"the digest of {row['day']} ({row['profile']}) could not be sent by "
                                 f"{outbox.where(row)}: {row['last_error']}", row["day"],
                                 "the digest is stored; after fixing the cause, `digest resend` sends it"))
    run = runs.last_run(db)
    unsummarized = runs.llm_summarized_none(run, settings) if run and run["day"] else 0
    if unsummarized:
        found.append(Problem("llm", run["day"], f"the LLM summarized none of the {unsummarized} "
                                                f"papers of {run['day']}; the digest showed their abstracts",
                             run["started_at"], "the digest went out with abstracts; the next run asks the LLM "
                                                "again"))
    return found


def working_channels(db, settings: Settings) -> list[tuple[str, str]]:
    """Every configured (channel, target) whose deliveries are not failing or waiting for a retry."""
    broken = {(d["channel"], d["target"] or "") for d in outbox.not_sent(db)
              if d["status"] == "failed" or d["attempts"]}
    configured = dict.fromkeys(c for p in settings.profiles.values() for c in settings.channels_for(p))
    return [c for c in configured if c not in broken]


def speak_up(db, settings: Settings) -> list[dict]:
    """Send the notices now due; returns what was sent (or tried) for each."""
    return [told for told in (tell(db, settings, p) for p in problems(db, settings)) if told]


def unit_failed(db, settings: Settings, unit: str, now: dt.datetime | None = None) -> dict | None:
    """systemd's ``OnFailure=`` (digest-notify-failure@.service): the daemon's own unit failed, which no
    run of digest can notice. Once per unit and UTC day."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return tell(db, settings, Problem(f"unit {unit}", now.date().isoformat(), f"the systemd unit {unit} failed",
                                      iso(now),
                                      f"everything stored stays; `journalctl -u {unit}` says why, and "
                                      f"`systemctl start {unit}` starts it again once fixed"))


def tell(db, settings: Settings, problem: Problem) -> dict | None:
    """Send one notice through every channel that still works, unless it went out already."""
    if not _claim(db, problem):
        return None
    sent, errors = [], []
    for channel, target in working_channels(db, settings):
        where = outbox.where({"channel": channel, "target": target})
        try:
            _send(settings, channel, target, problem)
            sent.append(where)
        except Exception as exc:  # a notice channel failing is logged, never retried
            errors.append(f"{where}: {redact(one_line(exc), settings.secrets())}")
    if not sent and not errors:
        errors.append("no channel left that works")
    with transaction(db):
        db.execute("UPDATE notices SET sent_to = ?, error = ? WHERE problem = ? AND day = ?",
                   [json.dumps(sent), "; ".join(errors) or None, problem.key, problem.day])
    log.log(logging.ERROR if errors else logging.INFO, "notice (%s, %s): %s; sent to %s%s", problem.key,
            problem.day, problem.summary, ", ".join(sent) or "nobody",
            f"; failed: {'; '.join(errors)}" if errors else "")
    return {"problem": problem.key, "day": problem.day, "sent_to": sent, "errors": errors}


def _claim(db, problem: Problem) -> bool:
    with transaction(db):
        return db.execute("INSERT OR IGNORE INTO notices (problem, day, summary, created_at) VALUES (?, ?, ?, ?)",
                          [problem.key, problem.day, problem.summary, now_iso()]).rowcount == 1


def _send(settings: Settings, channel: str, target: str, problem: Problem) -> None:
    from .deliver import chat, email, files  # chat loads apprise: only when a notice is due

    subject = f"digest: {problem.summary}"[:150]
    if channel == "email":
        email.send_text(settings, target, subject, problem.text())
    elif channel == "chat":
        chat.send_text(settings, target, problem.text())
    else:
        files.write_notice(settings, re.sub(r"[^A-Za-z0-9.@-]+", "-", f"{problem.day} {problem.key}"),
                           problem.text())


# -- the next digest's header ---------------------------------------------------------------------------------

def caught_up(db) -> list[str]:
    """One line per problem noticed since the last digest was built, for that digest's header."""
    return [f"{day}: {summary}" for day, summary in db.execute(
        "SELECT day, summary FROM notices WHERE reported_at IS NULL ORDER BY day, created_at")]


def mark_reported(db) -> None:
    """The digest that carried :func:`caught_up` was stored: the next one does not repeat it."""
    with transaction(db):
        db.execute("UPDATE notices SET reported_at = ? WHERE reported_at IS NULL", [now_iso()])
