"""Channels (email, chat, files) and sending what the outbox holds.

:mod:`.outbox` owns the queue and what "exactly once" means; this module takes each due row, hands it
to its channel, and records what happened: sent, retried later (a transient failure), or failed for good.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..logs import redact
from ..storage import outbox
from ..storage.db import iso
from ..storage.ledger import digest_by_id
from ..text import one_line
from .errors import PermanentFailure, TransientFailure

if TYPE_CHECKING:
    from ..config import Settings  # annotations only: pydantic is for validating

log = logging.getLogger("digest.deliver")


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


def deliver_due(db, settings: Settings, *, now: dt.datetime | None = None, worker: str | None = None,
                only: list[int] | None = None) -> list[DeliveryOutcome]:
    """Send every row that is due (or only the rows ``only``), each at most once per call, and record
    what happened to it."""
    worker = worker or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    outcomes: list[DeliveryOutcome] = []
    tried: list[int] = []
    outbox.release_orphans(db)
    while (claim := outbox.claim_next(db, now or outbox.utcnow(), worker, tried, only)) is not None:
        tried.append(claim.id)
        outcomes.append(_attempt(db, settings, claim, now))
    return outcomes


def _attempt(db, settings: Settings, claim: outbox.Claim, now: dt.datetime | None) -> DeliveryOutcome:
    def outcome(status, error=None, retry_at=None):
        return DeliveryOutcome(claim.id, claim.digest_id, claim.channel, claim.target, status, claim.attempts,
                               error, retry_at)

    try:
        digest = _digest_row(db, claim.digest_id)
        try:
            rendered = outbox.load_render(db, claim.digest_id)
        except LookupError as exc:
            raise PermanentFailure(str(exc)) from None
        _sender(claim.channel)(claim, rendered, digest, settings)
        claim.sent()
        log.info("delivered digest %s by %s", claim.digest_id, outbox.where(claim))
        return outcome("sent")
    except PermanentFailure as exc:
        error = _clean(exc, settings)
    except Exception as exc:  # transient, or an unforeseen error: retried, never lost
        error = _clean(exc, settings)
        if claim.done:  # it went out; only the bookkeeping after it failed
            return outcome("sent")
        if claim.attempts < outbox.MAX_ATTEMPTS:
            retry_at = iso((now or outbox.utcnow()) + outbox.backoff(claim.attempts))
            claim.failed(error, retry_at)
            log.warning("delivery by %s failed, retrying at %s: %s", outbox.where(claim), retry_at, error)
            return outcome("pending", error, retry_at)
        error = f"gave up after {claim.attempts} attempts: {error}"
    claim.failed(error, None)
    log.error("delivery by %s failed for good: %s", outbox.where(claim), error)
    return outcome("failed", error)


def _clean(exc: BaseException, settings: Settings) -> str:
    """One line, no secret: what `digest status` shows and the log says."""
    return redact(one_line(exc), settings.secrets())


def _sender(channel: str) -> Callable:
    from . import chat, email, files

    senders = {"email": email.send_email, "chat": chat.send_chat, "files": files.write_files}
    if channel not in senders:
        raise PermanentFailure(f"unknown channel {channel!r}")
    return senders[channel]


def _digest_row(db, digest_id: int):
    digest = digest_by_id(db, digest_id)
    if digest is None:
        raise PermanentFailure(f"digest {digest_id} no longer exists")
    return digest


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
    return [(channel, ok, redact(detail, settings.secrets())) for channel, ok, detail in results]


__all__ = ["DeliveryOutcome", "PermanentFailure", "TransientFailure", "check_channels", "deliver_due"]
