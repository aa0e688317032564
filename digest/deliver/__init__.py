"""Channels (email, chat, files) and the outbox that makes delivery exactly-once.

One ``deliveries`` row per digest and channel target moves pending -> sending -> sent, or back to
pending with a retry time after a transient failure, or to failed for good. A row is claimed with one
conditional UPDATE inside BEGIN IMMEDIATE, so two processes never send the same row.

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
import os
import socket
import threading
from dataclasses import dataclass
from typing import Callable

from .. import db as dbm
from ..config import Settings
from ..logs import redact
from ..render import Rendered
from .errors import PermanentFailure, TransientFailure, one_line

log = logging.getLogger("digest.deliver")

MAX_ATTEMPTS = 12  # with the backoff below: about a day and a half of retries
BACKOFF_FIRST = dt.timedelta(minutes=1)
BACKOFF_MAX = dt.timedelta(hours=6)
LEASE = dt.timedelta(minutes=10)  # a "sending" row older than this belongs to a process that died

__all__ = [
    "DeliveryOutcome", "PermanentFailure", "TransientFailure", "check_channels", "deliver_due", "enqueue",
    "load_render", "outbox_status", "save_render",
]


@dataclass
class DeliveryOutcome:
    """What one attempt at one outbox row did. ``status``: sent, pending (retry at ``next_attempt_at``), failed."""

    id: int
    digest_id: int
    channel: str
    target: str
    status: str
    attempts: int
    error: str | None = None
    next_attempt_at: str | None = None


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
        with dbm.transaction(self.db):
            self.db.execute("UPDATE deliveries SET parts_sent = ?, claimed_at = ? WHERE id = ?",
                            [parts, _iso(_utcnow()), self.id])

    def sent(self) -> None:
        if self.done:
            return
        with dbm.transaction(self.db):
            self.db.execute(
                "UPDATE deliveries SET status = 'sent', sent_at = ?, last_error = NULL, next_attempt_at = NULL, "
                "claimed_by = NULL WHERE id = ?", [_iso(_utcnow()), self.id])
        self.done = True


# -- rendered formats -----------------------------------------------------------------------------------

def save_render(db, digest_id: int, rendered: Rendered) -> None:
    """Store every format of a digest (inside the caller's transaction), so a retry sends what was built."""
    with dbm.transaction(db):
        db.conn.executemany(
            "INSERT OR REPLACE INTO renders (digest_id, format, body) VALUES (?, ?, ?)",
            [(digest_id, name, getattr(rendered, name)) for name in Rendered.formats()])


def load_render(db, digest_id: int) -> Rendered:
    rows = dict(db.execute("SELECT format, body FROM renders WHERE digest_id = ?", [digest_id]).fetchall())
    missing = [name for name in Rendered.formats() if name not in rows]
    if missing:
        raise LookupError(f"digest {digest_id} has no stored {', '.join(missing)} rendering")
    return Rendered(**{name: rows[name] for name in Rendered.formats()})


# -- the outbox ---------------------------------------------------------------------------------------------

def enqueue(db, digest_id: int, channels: list[tuple[str, str]], *, resend: bool = False) -> int:
    """One pending row per (digest, channel, target); a row that exists is left alone unless ``resend``,
    which sets sent and failed rows back to pending. Returns how many rows became pending."""
    stamp = _iso(_utcnow())
    changed = 0
    with dbm.transaction(db):
        for channel, target in channels:
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (digest_id, channel, target, status, created_at) "
                "VALUES (?, ?, ?, 'pending', ?)", [digest_id, channel, target, stamp])
            changed += cursor.rowcount
            if resend and not cursor.rowcount:
                cursor = db.execute(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, parts_sent = 0, last_error = NULL, "
                    "next_attempt_at = NULL, claimed_by = NULL, claimed_at = NULL, sent_at = NULL "
                    "WHERE digest_id = ? AND channel = ? AND target = ? AND status IN ('sent', 'failed')",
                    [digest_id, channel, target])
                changed += cursor.rowcount
    return changed


def deliver_due(db, settings: Settings, *, now: dt.datetime | None = None,
                worker: str | None = None) -> list[DeliveryOutcome]:
    """Send every row that is due, each at most once per call, and record what happened to it."""
    worker = worker or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    outcomes: list[DeliveryOutcome] = []
    tried: list[int] = []
    _release_orphans(db)
    while (claim := _claim_next(db, now or _utcnow(), worker, tried)) is not None:
        tried.append(claim.id)
        outcomes.append(_attempt(db, settings, claim, now))
    return outcomes


def _release_orphans(db) -> None:
    """A "sending" row whose claimer was a process on this host that no longer exists (killed mid-send)
    goes back to pending at once rather than after the lease: its sender cannot still be sending."""
    here = socket.gethostname()
    for row_id, claimed_by in db.execute("SELECT id, claimed_by FROM deliveries WHERE status = 'sending'").fetchall():
        host, _, rest = (claimed_by or "").partition(":")
        pid = rest.split(":")[0]
        if host != here or not pid.isdigit() or _alive(int(pid)):
            continue
        with dbm.transaction(db):
            db.execute("UPDATE deliveries SET status = 'pending', next_attempt_at = NULL, claimed_by = NULL "
                       "WHERE id = ? AND status = 'sending' AND claimed_by = ?", [row_id, claimed_by])
        log.warning("delivery %s: its sender (pid %s) died while sending; it will be sent again", row_id, pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_next(db, now: dt.datetime, worker: str, skip: list[int]) -> Claim | None:
    """Atomically take the oldest due row: pending and due, or "sending" past its lease."""
    skipped = f"AND id NOT IN ({','.join('?' * len(skip))})" if skip else ""
    with dbm.transaction(db):
        row = db.execute(
            "UPDATE deliveries SET status = 'sending', claimed_by = ?, claimed_at = ?, attempts = attempts + 1 "
            "WHERE id = (SELECT id FROM deliveries WHERE "
            "((status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)) "
            " OR (status = 'sending' AND claimed_at < ?)) "
            f"{skipped} ORDER BY id LIMIT 1) "
            "RETURNING id, digest_id, channel, target, attempts, parts_sent",
            [worker, _iso(now), _iso(now), _iso(now - LEASE), *skip],
        ).fetchone()
    if row is None:
        return None
    return Claim(db, row[0], row[1], row[2], row[3], row[4], row[5], worker)


def _attempt(db, settings: Settings, claim: Claim, now: dt.datetime | None) -> DeliveryOutcome:
    def outcome(status, error=None, retry_at=None):
        return DeliveryOutcome(claim.id, claim.digest_id, claim.channel, claim.target, status, claim.attempts,
                               error, retry_at)

    try:
        digest = _digest_row(db, claim.digest_id)
        try:
            rendered = load_render(db, claim.digest_id)
        except LookupError as exc:
            raise PermanentFailure(str(exc)) from None
        _sender(claim.channel)(claim, rendered, digest, settings)
        claim.sent()
        log.info("delivered digest %s by %s%s", claim.digest_id, claim.channel, _to(claim.target))
        return outcome("sent")
    except PermanentFailure as exc:
        error = _clean(exc, settings)
    except Exception as exc:  # transient, or an unforeseen error: retried, never lost
        error = _clean(exc, settings)
        if claim.done:  # it went out; only the bookkeeping after it failed
            return outcome("sent")
        if claim.attempts < MAX_ATTEMPTS:
            retry_at = _iso((now or _utcnow()) + backoff(claim.attempts))
            _record(db, claim.id, "pending", error, retry_at)
            log.warning("delivery by %s%s failed, retrying at %s: %s", claim.channel, _to(claim.target), retry_at,
                        error)
            return outcome("pending", error, retry_at)
        error = f"gave up after {claim.attempts} attempts: {error}"
    _record(db, claim.id, "failed", error, None)
    log.error("delivery by %s%s failed for good: %s", claim.channel, _to(claim.target), error)
    return outcome("failed", error)


def backoff(attempts: int) -> dt.timedelta:
    """1 min, 2, 4, ... doubling up to 6 h between attempts."""
    return min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_MAX)


def _record(db, delivery_id: int, status: str, error: str, retry_at: str | None) -> None:
    with dbm.transaction(db):
        db.execute("UPDATE deliveries SET status = ?, last_error = ?, next_attempt_at = ?, claimed_by = NULL "
                   "WHERE id = ?", [status, error, retry_at, delivery_id])


def _clean(exc: BaseException, settings: Settings) -> str:
    """One line, no secret: what `digest status` shows and the log says."""
    return redact(one_line(exc), _secrets(settings))


def _secrets(settings: Settings) -> list[str]:
    """Configured secrets, and the tokens inside chat URLs (a URL's path often *is* the credential)."""
    from .chat import url_tokens

    tokens = [t for target in settings.chat.values() for t in url_tokens(target.url.reveal())]
    return sorted(set(settings.secrets() + tokens), key=len, reverse=True)


def _sender(channel: str) -> Callable:
    from . import chat, email, files

    senders = {"email": email.send_email, "chat": chat.send_chat, "files": files.write_files}
    if channel not in senders:
        raise PermanentFailure(f"unknown channel {channel!r}")
    return senders[channel]


def _digest_row(db, digest_id: int) -> dict:
    rows = list(db.query("SELECT * FROM digests WHERE id = ?", [digest_id]))
    if not rows:
        raise PermanentFailure(f"digest {digest_id} no longer exists")
    return rows[0]


def outbox_status(db) -> list[dict]:
    """Rows not (yet) sent, oldest first, for `digest status`: what waits, what failed and why."""
    return list(db.query(
        "SELECT d.id, g.profile, g.announced_on, d.channel, d.target, d.status, d.attempts, d.last_error, "
        "d.next_attempt_at FROM deliveries d JOIN digests g ON g.id = d.digest_id "
        "WHERE d.status != 'sent' ORDER BY d.id"))


def check_channels(settings: Settings) -> list[tuple[str, bool, str]]:
    """Try every configured channel without sending: (channel, worked, what worked or what failed)."""
    from . import chat, email, files

    results = []
    if settings.email.enabled:
        results.append(email.check_email(settings))
    for name, target in settings.chat.items():
        results.append(chat.check_chat(name, target, settings))
    if any(channel == "files" for p in settings.profiles.values() for channel, _ in settings.channels_for(p)):
        results.append(files.check_files(settings))
    return [(channel, ok, redact(detail, _secrets(settings))) for channel, ok, detail in results]


def _to(target: str) -> str:
    return f" to {target}" if target else ""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(moment: dt.datetime) -> str:
    # The same shape as db.now_iso(), so stored times compare as strings.
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
