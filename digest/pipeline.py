"""One run of one announcement day for one or more profiles, stage by stage, resumable.

fetch -> store -> embed -> rank -> summarize -> render -> deliver. Each stage records itself in
``run_stages``; a digest row, once written, is never rebuilt, and deliveries go through the outbox,
so a crashed run that is started again finishes the work without redoing it or sending twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass
class RunResult:
    """What one run did. ``status``: "sent" (or rendered, for a dry run), "empty" (arXiv announced
    nothing), "failed" (with ``error``), "pending" (digests built, some deliveries wait for a retry)."""

    status: str
    announced_on: dt.date | None = None
    digests: list[int] = field(default_factory=list)
    error: str | None = None
    counts: dict = field(default_factory=dict)


def run_day(db, settings, *, day: dt.date | None = None, profiles: list[str] | None = None,
            dry_run: bool = False, resend: bool = False, trigger: str = "cli", fetch: bool = True) -> RunResult:
    """Produce and deliver the digest of ``day`` (default: the latest announcement in the feed)."""
    raise NotImplementedError("being built")
