"""The outbox: one ``deliveries`` row per digest and channel target, and the rendered formats it sends.
The only module that reads or writes the ``deliveries`` and ``renders`` tables.

A row moves pending -> sending -> sent, or back to pending with a retry time after a transient failure,
or to failed for good. It is claimed with one conditional UPDATE inside BEGIN IMMEDIATE, so two
processes never send the same row. Rows are queued once, in the transaction that stores their digest
(:func:`enqueue`), and queued again only when a person asks (:func:`requeue`, `digest resend`).

What "exactly once" means here, precisely. A row is marked sent in its own short transaction the moment
the remote side has accepted it (for email, right after the server's 250 to DATA and before QUIT). A
process that dies inside that window leaves the row in "sending"; after ``LEASE`` it is claimed again
and sent again: at-least-once for that one crash window, never at-most-once, because a lost digest is
worse than a duplicate. The Message-ID is the same for every attempt of a digest and recipient, so a
mail client (Gmail does) shows the duplicate as the same message. Chat deliveries split over several
messages record each part as it goes out, so a retry resends at most the one part in flight.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from dataclasses import dataclass

from ..locks import process_alive
from ..records import Rendered
from .db import chunks, iso, now_iso, transaction

log = logging.getLogger("digest.deliver")

MAX_ATTEMPTS = 12  # with the backoff below: about a day and a half of retries
BACKOFF_FIRST = dt.timedelta(minutes=1)
BACKOFF_MAX = dt.timedelta(hours=6)
LEASE = dt.timedelta(minutes=10)  # a "sending" row older than this belongs to a process that died


@dataclass
class Claim:
    """One outbox row this worker holds. Channels call :meth:`part_sent` and :meth:`sent` as soon as the
    remote side accepted something, which keeps the crash window between "accepted" and "recorded" small."""

    db: object
    id: int
    digest_id: int
    channel: str
    target: str
    attempts: int
    parts_sent: int
    worker: str
    done: bool = False

    def part_sent(self, parts: int) -> None:
        """Record progress and renew the lease, so a long split delivery is not taken for a dead one."""
        self.parts_sent = parts
        with transaction(self.db):
            self.db.execute("UPDATE deliveries SET parts_sent = ?, claimed_at = ? WHERE id = ?",
                            [parts, now_iso(), self.id])

    def sent(self) -> None:
        if self.done:
            return
        with transaction(self.db):
            self.db.execute(
                "UPDATE deliveries SET status = 'sent', sent_at = ?, last_error = NULL, next_attempt_at = NULL, "
                "claimed_by = NULL WHERE id = ?", [now_iso(), self.id])
        self.done = True

    def failed(self, error: str, retry_at: str | None) -> None:
        """Back to pending with a retry time, or (``retry_at`` None) failed for good."""
        with transaction(self.db):
            self.db.execute("UPDATE deliveries SET status = ?, last_error = ?, next_attempt_at = ?, claimed_by = NULL "
                            "WHERE id = ?", ["pending" if retry_at else "failed", error, retry_at, self.id])


# -- rendered formats -----------------------------------------------------------------------------------

def save_render(db, digest_id: int, rendered: Rendered) -> None:
    """Store every format of a digest (inside the caller's transaction), so a retry sends what was built."""
    with transaction(db):
        db.conn.executemany(
            "INSERT OR REPLACE INTO renders (digest_id, format, body) VALUES (?, ?, ?)",
            [(digest_id, name, getattr(rendered, name)) for name in Rendered.formats()])


def load_render(db, digest_id: int) -> Rendered:
    rows = dict(db.execute("SELECT format, body FROM renders WHERE digest_id = ?", [digest_id]).fetchall())
    missing = [name for name in Rendered.formats() if name not in rows and name not in Rendered.OPTIONAL]
    if missing:
        raise LookupError(f"digest {digest_id} has no stored {', '.join(missing)} rendering")
    return Rendered(**{name: rows[name] for name in Rendered.formats() if name in rows})


def stored_text(db, digest_id: int, fmt: str = "text") -> str | None:
    row = db.execute("SELECT body FROM renders WHERE digest_id = ? AND format = ?", [digest_id, fmt]).fetchone()
    return row[0] if row else None


# -- queueing -------------------------------------------------------------------------------------------

def enqueue(db, digest_id: int, channels: list[tuple[str, str]]) -> int:
    """One pending row per (digest, channel, target), once: a row that exists is left as it is.
    Returns how many rows were queued."""
    stamp = now_iso()
    queued = 0
    with transaction(db):
        for channel, target in channels:
            queued += db.execute(
                "INSERT OR IGNORE INTO deliveries (digest_id, channel, target, status, created_at) "
                "VALUES (?, ?, ?, 'pending', ?)", [digest_id, channel, target, stamp]).rowcount
    return queued


def requeue(db, delivery_ids: list[int]) -> int:
    """Send these rows again from the start (`digest resend`). Returns how many were requeued."""
    changed = 0
    with transaction(db):
        for delivery_id in delivery_ids:
            changed += db.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, parts_sent = 0, last_error = NULL, "
                "next_attempt_at = NULL, claimed_by = NULL, claimed_at = NULL, sent_at = NULL "
                "WHERE id = ? AND status IN ('sent', 'failed')", [delivery_id]).rowcount
    return changed


# -- claiming -------------------------------------------------------------------------------------------

def claim_next(db, now: dt.datetime, worker: str, skip: list[int], only: list[int] | None = None) -> Claim | None:
    """Atomically take the oldest due row: pending and due, or "sending" past its lease. ``only``
    restricts the choice to those rows (`digest resend` sends what it listed and nothing else)."""
    skipped = f"AND id NOT IN ({','.join('?' * len(skip))})" if skip else ""
    chosen = f"AND id IN ({','.join('?' * len(only))})" if only is not None else ""
    with transaction(db):
        row = db.execute(
            "UPDATE deliveries SET status = 'sending', claimed_by = ?, claimed_at = ?, attempts = attempts + 1 "
            "WHERE id = (SELECT id FROM deliveries WHERE "
            "((status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)) "
            " OR (status = 'sending' AND claimed_at < ?)) "
            f"{skipped} {chosen} ORDER BY id LIMIT 1) "
            "RETURNING id, digest_id, channel, target, attempts, parts_sent",
            [worker, iso(now), iso(now), iso(now - LEASE), *skip, *(only or [])],
        ).fetchone()
    if row is None:
        return None
    return Claim(db, row[0], row[1], row[2], row[3], row[4], row[5], worker)


def release_orphans(db) -> None:
    """A "sending" row whose claimer was a process on this host that no longer exists (killed mid-send)
    goes back to pending at once rather than after the lease: its sender cannot still be sending."""
    here = socket.gethostname()
    for row_id, claimed_by in db.execute("SELECT id, claimed_by FROM deliveries WHERE status = 'sending'").fetchall():
        host, _, rest = (claimed_by or "").partition(":")
        pid = rest.split(":")[0]
        if host != here or not pid.isdigit() or process_alive(int(pid)):
            continue
        with transaction(db):
            db.execute("UPDATE deliveries SET status = 'pending', next_attempt_at = NULL, claimed_by = NULL "
                       "WHERE id = ? AND status = 'sending' AND claimed_by = ?", [row_id, claimed_by])
        log.warning("delivery %s: its sender (pid %s) died while sending; it will be sent again", row_id, pid)


def backoff(attempts: int) -> dt.timedelta:
    """1 min, 2, 4, ... doubling up to 6 h between attempts."""
    return min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


# -- what waits ------------------------------------------------------------------------------------------

ROW = ("SELECT x.id, x.digest_id, g.profile, g.announced_on AS day, x.channel, x.target, x.status, x.attempts, "
       "x.next_attempt_at, x.last_error, x.sent_at FROM deliveries x JOIN digests g ON g.id = x.digest_id")


def for_digests(db, digest_ids: list[int]) -> list[dict]:
    """Every row of these digests, in the order they were queued."""
    rows: list[dict] = []
    for chunk in chunks(list(digest_ids)):
        rows += [dict(r) for r in db.query(f"{ROW} WHERE x.digest_id IN ({','.join('?' * len(chunk))}) "
                                           f"ORDER BY x.id", chunk)]
    return rows


def sent_emails(db) -> list[dict]:
    """Every email that went out (digest, recipient): what a reply to a digest can answer."""
    return [dict(r) for r in db.query(f"{ROW} WHERE x.channel = 'email' AND x.status = 'sent' ORDER BY x.id")]


def not_sent(db) -> list[dict]:
    """Rows not (yet) sent, failed ones first, then the newest day: what `digest status` shows."""
    return [dict(r) for r in db.query(f"{ROW} WHERE x.status != 'sent' "
                                      f"ORDER BY x.status = 'failed' DESC, g.announced_on DESC, x.id")]


def chosen_for_resend(db, *, day: dt.date | None, profile: str | None, failed_only: bool, channel: str | None,
                      target: str | None) -> list[dict]:
    """The rows `digest resend` would send again: failed ones, or (``failed_only`` False) every row of
    the day's digests, narrowed by profile, channel and target."""
    where, params = [], []
    if day is not None:
        where.append("g.announced_on = ?")
        params.append(day.isoformat())
    for column, value in (("g.profile", profile), ("x.channel", channel), ("x.target", target)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    where.append("x.status = 'failed'" if failed_only else "x.status IN ('sent', 'failed')")
    return [dict(r) for r in db.query(f"{ROW} WHERE {' AND '.join(where)} ORDER BY g.announced_on, x.id", params)]


def first_due_day(db, now: dt.datetime) -> str | None:
    """The day of the oldest row whose retry time has come, for the daemon's retries between firings."""
    row = db.execute("SELECT g.announced_on FROM deliveries d JOIN digests g ON g.id = d.digest_id "
                     "WHERE d.status = 'pending' AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?) "
                     "ORDER BY d.id LIMIT 1", [iso(now)]).fetchone()
    return row[0] if row else None


def channel_totals(db) -> list[dict]:
    return [dict(r) for r in db.query(
        "SELECT channel, SUM(status = 'failed') AS failed, SUM(status IN ('pending', 'sending')) AS waiting, "
        "SUM(status = 'sent') AS sent, SUM(attempts) AS attempts FROM deliveries GROUP BY channel ORDER BY channel")]


def sent_digests_per_profile(db) -> dict[str, int]:
    return dict(db.execute("SELECT g.profile, COUNT(DISTINCT g.id) FROM digests g JOIN deliveries x "
                           "ON x.digest_id = g.id WHERE x.status = 'sent' GROUP BY g.profile").fetchall())


def latest_error(db) -> dict | None:
    """The most recent delivery error: when, where and what."""
    row = db.execute(
        "SELECT COALESCE(claimed_at, created_at), channel, target, last_error FROM deliveries "
        "WHERE last_error IS NOT NULL ORDER BY COALESCE(claimed_at, created_at) DESC LIMIT 1").fetchone()
    if row is None:
        return None
    at, channel, target, error = row
    return {"at": at, "source": f"delivery {where({'channel': channel, 'target': target})}", "error": error}


def where(delivery) -> str:
    """A delivery's channel and target as every message, log line and listing names them:
    ``email to a@example.org``, ``chat to team``, ``files``. ``delivery``: an outbox row (a dict), or a
    claim or an outcome (with ``channel`` and ``target`` attributes)."""
    if isinstance(delivery, dict):
        channel, target = delivery["channel"], delivery["target"]
    else:
        channel, target = delivery.channel, delivery.target
    return f"{channel} to {target}" if target else channel


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)

