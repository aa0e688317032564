"""The ledger: which digest of each profile covers each announced paper. The only module that writes the
``digests``, ``digest_items`` and ``coverage`` tables.

The promise, in one sentence: every paper announced in a profile's categories goes into exactly one of
that profile's digests. ``coverage`` has one row per (profile, paper, replacement), so a second coverage
is a constraint violation, not a property of how days are counted; a digest is built from what is *owed*
(:func:`owed`: stored, in the profile's categories, covered by none of its digests), so a paper that
arrives late for a day already sent, a merged catch-up over days partly covered, or a holiday filed under
the wrong day can delay a paper, never drop it or send it twice. :func:`check` proves it on a database.

Where owing starts: a profile owes nothing from before its first digest (a new profile, or a fresh
install, does not get the history fetched before it), and nothing older than ``lookback`` days before the
digest being built (the catch-up window; older days are history, deliberately not mailed).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..records import Announcement, Digest, DigestView, Rendered, is_replacement, replacement_sql
from ..taxonomy import CategoryExpression
from ..text import plural
from . import outbox
from .db import now_iso, transaction
from .papers import day_fetched, latest_day, paper_from_row
from .runs import first_done_day

if TYPE_CHECKING:
    from ..config import Profile, Settings  # annotations only: pydantic is for validating

MIN_LOOKBACK_DAYS = 7


class LedgerError(Exception):
    """The ledger refused a write that would cover a paper twice; the message says which."""


def lookback(settings: Settings) -> dt.timedelta:
    """How far back a digest reaches for papers no digest covered yet: the catch-up window, and at
    least a week, so a paper that arrived late still finds its way into the next digest."""
    return dt.timedelta(days=max(settings.schedule.catch_up_days, MIN_LOOKBACK_DAYS))


# -- digests ------------------------------------------------------------------------------------------------

def digest_for(db, profile: str, day: dt.date) -> Digest | None:
    """The profile's digest built for ``day`` (its last day), if there is one."""
    rows = list(db.query("SELECT * FROM digests WHERE profile = ? AND announced_on = ?", [profile, day.isoformat()]))
    return Digest.from_row(rows[0]) if rows else None


def digest_by_id(db, digest_id: int) -> Digest | None:
    rows = list(db.query("SELECT * FROM digests WHERE id = ?", [digest_id]))
    return Digest.from_row(rows[0]) if rows else None


def paper_at_rank(db, digest_id: int, rank: int) -> str | None:
    """The paper a digest showed as #rank, for a reply that says "+3"."""
    row = db.execute("SELECT paper_id FROM digest_items WHERE digest_id = ? AND rank = ?", [digest_id, rank]).fetchone()
    return row[0] if row else None


def covering(db, profile: str, day: dt.date) -> list[Digest]:
    """The profile's digests that cover papers announced on ``day`` or were built for it (a merged
    catch-up covers several days), oldest first."""
    rows = db.query(
        "SELECT * FROM digests WHERE profile = :p AND (id IN (SELECT digest_id FROM coverage WHERE profile = :p "
        "AND announced_on = :d) OR EXISTS (SELECT 1 FROM json_each(digests.days) WHERE value = :d)) ORDER BY id",
        {"p": profile, "d": day.isoformat()})
    return [Digest.from_row(r) for r in rows]


def profile_start(db, profile: str) -> dt.date | None:
    """The first day any digest of the profile was built for: where its ledger begins."""
    row = db.execute("SELECT MIN(j.value) FROM digests d, json_each(d.days) j WHERE d.profile = ?",
                     [profile]).fetchone()
    return dt.date.fromisoformat(row[0]) if row and row[0] else None


def first_day(db) -> dt.date | None:
    """The earliest announcement day any digest was built for, or any run finished: catch-up looks no
    further back, so a fresh install does not mail a week of old digests."""
    row = db.execute("SELECT MIN(j.value) FROM digests d, json_each(d.days) j").fetchone()
    days = [d for d in (dt.date.fromisoformat(row[0]) if row and row[0] else None, first_done_day(db)) if d]
    return min(days) if days else None


# -- reading digests (for `digest digests`, `digests --day`, `show`, `status`, `stats`) ------------------------

def listing(db, profile: str | None = None, limit: int | None = None) -> list[dict]:
    """The digests built, newest first: day, profile, counts, subject."""
    return [dict(r) for r in db.query(
        "SELECT id, announced_on AS day, profile, announced, new, cross, replaced, summarized, subject "
        "FROM digests WHERE (? IS NULL OR profile = ?) ORDER BY announced_on DESC, profile LIMIT ?",
        [profile, profile, -1 if limit is None else limit])]


def of_day(db, day: dt.date, profile: str | None = None) -> list[dict]:
    """The digests built for ``day`` (of one profile, or all), with their ranked items."""
    digests = [dict(r) for r in db.query(
        "SELECT id, profile, announced_on AS day, subject FROM digests WHERE announced_on = ? "
        "AND (? IS NULL OR profile = ?) ORDER BY profile", [day.isoformat(), profile, profile])]
    for digest in digests:
        digest["items"] = [dict(r) for r in db.query(
            "SELECT di.rank, di.paper_id AS id, ROUND(di.score, 4) AS score, di.section, di.kind, di.reason, "
            "p.title FROM digest_items di JOIN papers p ON p.id = di.paper_id WHERE di.digest_id = ? "
            "ORDER BY di.rank", [digest["id"]])]
    return digests


def appearances(db, paper_id: str) -> list[dict]:
    """Every digest a paper was listed in: day, profile, rank, score, section, reason."""
    return [dict(r) for r in db.query(
        "SELECT d.announced_on AS day, d.profile, di.rank, ROUND(di.score, 4) AS score, di.section, di.reason "
        "FROM digest_items di JOIN digests d ON d.id = di.digest_id WHERE di.paper_id = ? "
        "ORDER BY d.announced_on, d.profile", [paper_id])]


def paper_ids_of(db, day: dt.date, profile: str) -> list[str]:
    """The papers of the profile's digest of ``day``, in its ranked order."""
    return [r[0] for r in db.execute("SELECT di.paper_id FROM digest_items di JOIN digests d ON d.id = di.digest_id "
                                      "WHERE d.announced_on = ? AND d.profile = ? ORDER BY di.rank",
                                      [day.isoformat(), profile])]


def in_profile_sql(alias: str) -> str:
    """A WHERE condition on papers ``alias``: listed in a digest of the profile given as its parameter."""
    return (f"EXISTS (SELECT 1 FROM digest_items di JOIN digests d ON d.id = di.digest_id "
            f"WHERE di.paper_id = {alias}.id AND d.profile = ?)")


def per_profile(db) -> list[dict]:
    """Per profile: how many digests, the last day."""
    return [dict(r) for r in db.query("SELECT profile, COUNT(*) AS digests, MAX(announced_on) AS last_day "
                                      "FROM digests GROUP BY profile ORDER BY profile")]


def latest(db) -> dict | None:
    """The digest of the latest day: day, profile, when it was built."""
    row = db.execute("SELECT announced_on, profile, created_at FROM digests ORDER BY announced_on DESC, id DESC "
                     "LIMIT 1").fetchone()
    return dict(zip(("day", "profile", "created_at"), row)) if row else None


# -- what is owed ------------------------------------------------------------------------------------------

_UNCOVERED = (
    "SELECT a.announced_on, a.kind, a.position, a.version AS announced_version, p.* "
    "FROM announcements a JOIN papers p ON p.id = a.paper_id "
    "WHERE a.announced_on BETWEEN :start AND :through AND NOT EXISTS (SELECT 1 FROM coverage c "
    "WHERE c.profile = :profile AND c.paper_id = a.paper_id "
    f"AND c.replacement = CASE WHEN {replacement_sql('a.kind')} THEN a.version ELSE 0 END) "
    "ORDER BY a.announced_on, a.position, a.paper_id")


def owed(db, settings: Settings, profile: Profile, through: dt.date,
         first_day: dt.date | None = None) -> list[Announcement]:
    """Announcements in the profile's categories, up to and including ``through``, that none of its
    digests covers yet, in the order a digest lists them (day, then arXiv's order).

    ``first_day`` is the first day of a digest about to be built: a profile without digests starts
    there. Without it, such a profile owes nothing yet. New and cross-list are judged against this
    profile's categories (one feed serves every profile, so arXiv's own label is relative to their
    union); replacements count only with ``digest.include_replacements``. A paper the feed and the API
    filed under two days is owed once, under the first.
    """
    start = _window_start(db, settings, profile.name, through, first_day)
    if start is None or start > through:
        return []
    expression = settings.expression_for(profile)
    rows = db.query(_UNCOVERED, {"start": start.isoformat(), "through": through.isoformat(), "profile": profile.name})
    return select_for_profile(settings, expression, (_announcement(r) for r in rows))


def select_for_profile(settings: Settings, expression: CategoryExpression,
                       announcements) -> list[Announcement]:
    """The profile's share of ``announcements``: its categories, its idea of new and cross-list,
    replacements as configured, each (paper, replacement) once."""
    chosen, seen = [], set()
    for a in announcements:
        if not expression.matches(a.paper.categories):
            continue
        if is_replacement(a.kind) and not settings.digest.include_replacements:
            continue
        if (a.paper.id, a.replacement) in seen:
            continue
        seen.add((a.paper.id, a.replacement))
        kind = a.kind
        if kind in ("new", "cross"):
            kind = "new" if expression.matches([a.paper.primary_category]) else "cross"
        chosen.append(Announcement(a.paper, a.announced_on, kind, a.position, a.version))
    return chosen


def _announcement(row: dict) -> Announcement:
    return Announcement(paper_from_row(row), dt.date.fromisoformat(row["announced_on"]), row["kind"],
                        row["position"], row["announced_version"])


def _window_start(db, settings: Settings, profile: str, through: dt.date,
                  first_day: dt.date | None) -> dt.date | None:
    began = profile_start(db, profile)
    if first_day is not None:
        began = first_day if began is None else min(began, first_day)
    if began is None:
        return None
    return max(began, through - lookback(settings))


def day_settled(db, settings: Settings, day: dt.date, *, due: bool = False) -> bool:
    """Nothing more to build for ``day``: arXiv positively announced nothing on it, or its papers are
    stored and no profile is owed any of them. ``due``: the day is today's, so a profile without a
    digest yet owes it (its first); for a past day such a profile owes nothing.

    Deliveries are not part of it: a built digest waits in the outbox, which retries on its own."""
    state = day_fetched(db, day, settings.feed_categories())
    if state == "empty":
        return True
    if state != "announced":
        return False
    return not owed_on(db, settings, day, due=due)


def owed_on(db, settings: Settings, day: dt.date, *, due: bool = False) -> list[Announcement]:
    """The papers announced on ``day`` that some profile is still owed (a paper owed to two profiles
    counts twice). ``due``: the day is today's, so a profile without a digest yet owes it."""
    return [a for p in settings.profiles.values()
            for a in owed(db, settings, p, day, first_day=day if due else None) if a.announced_on == day]


def waiting(db, settings: Settings) -> dict[str, int]:
    """Per profile, how many stored papers wait for its next digest."""
    latest = latest_day(db)
    if latest is None:
        return {name: 0 for name in settings.profiles}
    return {name: len(owed(db, settings, profile, latest)) for name, profile in settings.profiles.items()}


def covered_days(db, profile: str, days: set[dt.date]) -> set[dt.date]:
    """Which of ``days`` a digest of the profile already covers (a paper of such a day is late)."""
    return {d for d in days if covering(db, profile, d)}


# -- writing a digest ----------------------------------------------------------------------------------------

def store_digest(db, view: DigestView, rendered: Rendered, channels: list[tuple[str, str]]) -> int:
    """The checkpoint: the digest, its ranked items, the ledger rows of everything it covers, its rendered
    formats and its outbox rows, in one transaction, or none of them. A digest already stored for the
    profile and day is kept as it is (a re-run never rebuilds what may have been sent)."""
    day = view.days[-1]
    c = view.counts
    with transaction(db):
        existing = digest_for(db, view.profile, day)
        if existing:
            return existing.id
        digest_id = db.execute(
            "INSERT INTO digests (profile, announced_on, days, categories, announced, new, cross, replaced, "
            "summarized, subject, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [view.profile, day.isoformat(), json.dumps([d.isoformat() for d in view.days]), view.categories,
             c["announced"], c["new"], c["cross"], c["replace"], c["summarized"], rendered.subject, now_iso()],
        ).lastrowid
        db.conn.executemany(
            "INSERT INTO digest_items (digest_id, paper_id, rank, score, reason, section, kind) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(digest_id, i.paper.id, i.rank, i.score, i.reason, i.section, i.kind) for i in view.items])
        try:
            db.conn.executemany(
                "INSERT INTO coverage (profile, paper_id, replacement, digest_id, announced_on) VALUES (?, ?, ?, ?, ?)",
                [(view.profile, a.paper.id, a.replacement, digest_id, a.announced_on.isoformat())
                 for a in view.covers])
        except sqlite3.IntegrityError:
            raise LedgerError(f"a paper of this digest is already in another digest of {view.profile}; "
                              f"nothing was stored: run again") from None
        outbox.save_render(db, digest_id, rendered)
        # Queued in the same transaction: a digest never exists without its outbox rows, so a run killed
        # between here and the deliver stage cannot leave a day that looks done but was never sent.
        outbox.enqueue(db, digest_id, channels)
    view.digest_id = digest_id
    return digest_id


# -- the proof ---------------------------------------------------------------------------------------------

@dataclass
class ProfileCheck:
    """What :func:`check` found for one profile."""

    profile: str
    digests: int = 0
    covered: int = 0
    waiting: list[str] = field(default_factory=list)  # owed, in the window: the next digest takes them
    missed: list[str] = field(default_factory=list)  # "2401.01234 (2026-06-23)": announced, never covered
    twice: list[str] = field(default_factory=list)  # "2401.01234 (digests 3, 7)": in two digests

    @property
    def ok(self) -> bool:
        return not self.missed and not self.twice

    def describe(self) -> list[str]:
        """A line for the profile, and one per kind of exception, each naming the first papers."""
        line = f"{self.profile}: {plural(self.covered, 'paper')} in {plural(self.digests, 'digest')}"
        line += ", each exactly once" if self.ok else ""
        if self.waiting:
            line += f"; {plural(len(self.waiting), 'paper')} waiting for the next digest"
        lines = [line]
        if self.missed:
            lines.append(f"  {plural(len(self.missed), 'paper')} announced in its categories but in no digest: "
                         + _first(self.missed))
        if self.twice:
            lines.append(f"  {plural(len(self.twice), 'paper')} in two digests: " + _first(self.twice))
        return lines


def _first(labels: list[str], shown: int = 10) -> str:
    return ", ".join(labels[:shown]) + (f" and {len(labels) - shown} more" if len(labels) > shown else "")


def check(db, settings: Settings) -> list[ProfileCheck]:
    """Prove the promise on the whole database, profile by profile: every new or cross-listed paper
    announced in its categories from its first digest on is covered exactly once, or waits within the
    window for the next digest; the exceptions are listed.

    Categories are those each digest was built with (a later change to the configuration does not make
    older papers "missing"); replacements are counted as covered where they are, not required.
    """
    reports = []
    latest = latest_day(db)
    for name, profile in settings.profiles.items():
        report = ProfileCheck(name)
        reports.append(report)
        digests = [dict(r) for r in db.query("SELECT id, announced_on, categories FROM digests WHERE profile = ? "
                                             "ORDER BY announced_on", [name])]
        start = profile_start(db, name)
        report.digests = len(digests)
        report.covered = db.execute("SELECT COUNT(*) FROM coverage WHERE profile = ?", [name]).fetchone()[0]
        report.twice = _in_two_digests(db, name)
        if start is None or latest is None:
            continue
        covered = {(r[0], r[1]) for r in db.execute("SELECT paper_id, replacement FROM coverage WHERE profile = ?",
                                                    [name])}
        window = latest - lookback(settings)
        rows = db.query("SELECT a.announced_on, a.kind, a.position, a.version AS announced_version, p.* "
                        "FROM announcements a JOIN papers p ON p.id = a.paper_id WHERE a.announced_on >= ? "
                        "ORDER BY a.announced_on, a.position", [start.isoformat()])
        for a in _with_categories_in_force(settings, profile, digests, (_announcement(r) for r in rows)):
            if (a.paper.id, a.replacement) in covered:
                continue
            label = f"{a.paper.id} ({a.announced_on})"
            if a.announced_on >= window:
                report.waiting.append(label)
            elif a.replacement == 0:
                report.missed.append(label)
    return reports


def _with_categories_in_force(settings: Settings, profile: Profile, digests: list[dict], announcements):
    """Each announcement judged by the categories of the digest that was due to take it (the first
    built for its day or later), or the configuration's for those still to come."""
    current = settings.expression_for(profile)
    by_day: dict[str, CategoryExpression] = {}
    out, seen = [], set()
    for a in announcements:
        day = a.announced_on.isoformat()
        if day not in by_day:
            due = next((d for d in digests if d["announced_on"] >= day), None)
            by_day[day] = CategoryExpression.parse(due["categories"]) if due else current
        for chosen in select_for_profile(settings, by_day[day], [a]):
            if (chosen.paper.id, chosen.replacement) not in seen:
                seen.add((chosen.paper.id, chosen.replacement))
                out.append(chosen)
    return out


def _in_two_digests(db, profile: str) -> list[str]:
    """Papers listed (not replaced) in more than one digest of the profile: what versions before the
    ledger could do, and what the ledger makes impossible."""
    return [f"{paper_id} (digests {ids})" for paper_id, ids in db.execute(
        "SELECT i.paper_id, GROUP_CONCAT(i.digest_id, ', ') FROM digest_items i JOIN digests d ON d.id = i.digest_id "
        "WHERE d.profile = ? AND i.section != 'replaced' GROUP BY i.paper_id HAVING COUNT(*) > 1 "
        "ORDER BY i.paper_id", [profile])]
