"""One run of one announcement day for one or more profiles, stage by stage, resumable.

fetch -> embed -> rank -> summarize -> render -> deliver. Each stage records itself in ``run_stages`` and
logs one line with its counts and duration. A digest is written in one transaction together with its
ranked items and rendered formats, and is never rebuilt afterwards; deliveries go through the outbox.
So a crashed run started again skips every finished stage's effect and never sends twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import zoneinfo
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import db as dbm
from .config import Profile, Settings
from .locks import pid_lock
from .records import Announcement, DigestView, Ranked

log = logging.getLogger("digest.pipeline")

ARXIV_TZ = zoneinfo.ZoneInfo("America/New_York")


@dataclass
class RunResult:
    """What one run did. ``status``: "sent" (or "rendered" for a dry run), "empty" (arXiv announced
    nothing), "failed" (with ``error``), "pending" (digests built, some deliveries wait for a retry)."""

    status: str
    announced_on: dt.date | None = None
    digests: list[int] = field(default_factory=list)
    error: str | None = None
    counts: dict = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)


class RunError(Exception):
    """A stage failed in a way that stops this run; the message is the one line the user sees."""


class Run:
    """The ``runs`` row of this run and its ``run_stages``, so `digest status` can say what happened."""

    def __init__(self, db, trigger: str, day: dt.date | None):
        self.db = db
        with dbm.transaction(db):
            cursor = db.execute(
                "INSERT INTO runs (announced_on, trigger, status, pid, started_at) VALUES (?, ?, 'running', ?, ?)",
                [day.isoformat() if day else None, trigger, os.getpid(), dbm.now_iso()],
            )
        self.id = cursor.lastrowid

    @contextmanager
    def stage(self, name: str):
        counts: dict = {}
        started = time.monotonic()
        with dbm.transaction(self.db):
            self.db.execute("INSERT OR REPLACE INTO run_stages (run_id, stage, status, started_at) "
                            "VALUES (?, ?, 'running', ?)", [self.id, name, dbm.now_iso()])
            self.db.execute("UPDATE runs SET stage = ? WHERE id = ?", [name, self.id])
        log.info("stage %s: started", name)
        try:
            yield counts
        except BaseException as exc:
            self._end_stage(name, "failed", counts, started, _one_line(exc))
            raise
        self._end_stage(name, "done", counts, started, None)

    def _end_stage(self, name, status, counts, started, error):
        duration = time.monotonic() - started
        with dbm.transaction(self.db):
            self.db.execute(
                "UPDATE run_stages SET status=?, counts=?, error=?, finished_at=?, duration=? "
                "WHERE run_id=? AND stage=?",
                [status, json.dumps(counts), error, dbm.now_iso(), round(duration, 3), self.id, name],
            )
        shown = " ".join(f"{k}={v}" for k, v in counts.items())
        log.info("stage %s: %s in %.2fs%s%s", name, status, duration, " " + shown if shown else "",
                 f" ({error})" if error else "")

    def record_day(self, day: dt.date) -> None:
        """The day is known once the feed is read: recorded at once, so a run stopped later says which."""
        with dbm.transaction(self.db):
            self.db.execute("UPDATE runs SET announced_on = ? WHERE id = ?", [day.isoformat(), self.id])

    def finish(self, status: str, day: dt.date | None = None, error: str | None = None) -> None:
        with dbm.transaction(self.db):
            self.db.execute(
                "UPDATE runs SET status=?, error=?, finished_at=?, announced_on=COALESCE(?, announced_on) "
                "WHERE id=?",
                [status, error, dbm.now_iso(), day.isoformat() if day else None, self.id],
            )


@contextmanager
def run_lock(settings: Settings):
    """One run at a time per database, across processes: a daemon's run and a manual `digest run`
    wait for each other instead of racing. flock is released by the kernel if the holder dies."""
    with pid_lock(settings.database_path().with_suffix(".lock"), wait=True,
                  on_wait=lambda pid: log.info("waiting for another digest run (pid %s) to finish", pid)):
        yield


def arxiv_today(now: dt.datetime | None = None) -> dt.date:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(ARXIV_TZ).date()


def run_day(db, settings: Settings, *, day: dt.date | None = None, days: list[dt.date] | None = None,
            profiles: list[str] | None = None, dry_run: bool = False, resend: bool = False,
            trigger: str = "cli", fetch: bool = True) -> RunResult:
    """Produce and deliver the digest of ``day`` (default: the latest announcement in the feed).

    ``days`` (several) builds one merged catch-up digest covering all of them.
    """
    wanted = sorted(set(days or ([day] if day else [])))
    chosen = _choose_profiles(settings, profiles)
    with run_lock(settings):
        run = Run(db, trigger, wanted[-1] if wanted else None)
        try:
            result = _run(db, settings, run, wanted, chosen, dry_run=dry_run, resend=resend, fetch=fetch)
        except RunError as exc:
            run.finish("failed", error=str(exc))
            log.error("run failed: %s", exc)
            return RunResult("failed", wanted[-1] if wanted else None, error=str(exc))
        except BaseException as exc:
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
            run.finish("interrupted" if interrupted else "failed", error=_one_line(exc))
            raise
        run.finish({"sent": "done", "rendered": "done", "pending": "done"}.get(result.status, result.status),
                   result.announced_on, result.error)
        return result


def _choose_profiles(settings: Settings, names: list[str] | None) -> list[Profile]:
    if not names:
        return list(settings.profiles.values())
    unknown = [n for n in names if n not in settings.profiles]
    if unknown:
        raise KeyError(unknown[0])
    return [settings.profiles[n] for n in names]


def _run(db, settings, run: Run, wanted: list[dt.date], chosen: list[Profile], *, dry_run, resend,
         fetch) -> RunResult:
    with run.stage("fetch") as counts:
        days, status, error = _fetch_stage(db, settings, wanted, fetch, counts)
    if status == "failed":
        raise RunError(error)
    if status == "empty":
        log.info("arXiv announced nothing%s", f" on {wanted[-1]}" if wanted else " today")
        built = _empty_notes(db, settings, chosen, wanted[-1] if wanted else arxiv_today(), dry_run)
        _, waiting = _deliver_stage(db, settings, run, built, resend) if built else (None, None)
        return RunResult("empty", wanted[-1] if wanted else None, digests=[d for d, _ in built], error=waiting)
    last_day = days[-1]
    run.record_day(last_day)
    announcements = [a for d in days for a in dbm.announced_on(db, d)]
    pending = [p for p in chosen if dry_run or not _digest_id(db, p.name, last_day)]

    per_profile: dict[str, list[Announcement]] = {
        p.name: _for_profile(settings, p, announcements) for p in pending}
    papers = {a.paper.id: a.paper for items in per_profile.values() for a in items}

    rankings: dict[str, list[Ranked]] = {}
    if pending:
        with run.stage("embed") as counts:
            from . import embed
            vectors = embed.embed_papers(db, list(papers.values()), settings)
            counts.update(papers=len(papers))
        with run.stage("rank") as counts:
            rankings = _rank_stage(db, settings, per_profile, vectors, pending, counts)
        with run.stage("summarize") as counts:
            _summarize_stage(db, settings, rankings, counts)
    built: list[tuple[int | None, Profile]] = []
    previews: list[str] = []
    with run.stage("render") as counts:
        for profile in chosen:
            existing = _digest_id(db, profile.name, last_day)
            if existing and not dry_run:
                built.append((existing, profile))
                continue
            items = rankings.get(profile.name, [])
            if not items and not settings.digest.send_empty:
                continue
            view = _view(settings, profile, days, items)
            if dry_run:
                previews += _preview(settings, view)
            else:
                built.append((_store_digest(db, settings, view), profile))
        counts.update(digests=len(built), previews=len(previews))
    if dry_run:
        for path in previews:
            log.info("preview written: %s", path)
        return RunResult("rendered", last_day, previews=previews)
    status, waiting = _deliver_stage(db, settings, run, built, resend)
    return RunResult(status, last_day, digests=[d for d, _ in built], error=waiting)


# -- fetch ------------------------------------------------------------------------------------------

def _fetch_stage(db, settings, wanted: list[dt.date], fetch: bool, counts: dict):
    """The announcement days this run covers, whether arXiv announced anything, and why not."""
    from . import arxiv

    if not wanted:
        if not fetch:
            last = db.execute("SELECT MAX(announced_on) FROM announcements").fetchone()[0]
            if not last:
                return [], "failed", "nothing stored yet and fetching was turned off"
            return [dt.date.fromisoformat(last)], "announced", None
        result = arxiv.fetch_announcements(db, settings)
        counts.update(status=result.status, papers=result.count, skipped=result.skipped)
        if result.status == "failed":
            return [], "failed", f"fetching arXiv's feed failed: {result.error}"
        if result.status == "empty":
            return [], "empty", None
        return [result.announced_on], "announced", None

    errors = []
    feed_day = None
    for day in wanted:
        if _stored_day(db, day) or not fetch:
            continue
        if feed_day is None:
            result = arxiv.fetch_announcements(db, settings)
            feed_day = result.announced_on if result.status == "announced" else dt.date.min
            if result.status == "failed":
                errors.append(result.error)
        if feed_day == day:
            continue
        # The feed shows only the latest day; older days come from the API's submittedDate windows.
        summary = arxiv.backfill(db, settings, day, day)
        errors += summary.get("errors", []) if summary.get("failed") else []
    present = [d for d in wanted if _stored_day(db, d)]
    counts.update(days=len(present), failures=len(errors))
    if present:
        return present, "announced", None
    if errors:
        return [], "failed", f"fetching arXiv failed: {errors[0]}"
    return [], "empty", None


def _stored_day(db, day: dt.date) -> bool:
    return db.execute("SELECT 1 FROM announcements WHERE announced_on = ? LIMIT 1", [day.isoformat()]).fetchone() \
        is not None


def _for_profile(settings: Settings, profile: Profile, announcements: list[Announcement]) -> list[Announcement]:
    """This profile's share of the day: its category expression, with new/cross judged against it.

    One feed serves every profile, so arXiv's announce type is relative to the union of categories;
    a paper whose primary category is outside this profile's expression is a cross-list *for it*.
    """
    expression = settings.expression_for(profile)
    chosen, seen = [], set()
    for a in announcements:
        if a.paper.id in seen or not expression.matches(a.paper.categories):
            continue
        if a.kind.startswith("replace") and not settings.digest.include_replacements:
            continue
        seen.add(a.paper.id)
        kind = a.kind
        if kind in ("new", "cross"):
            kind = "new" if expression.matches([a.paper.primary_category]) else "cross"
        chosen.append(Announcement(a.paper, a.announced_on, kind, a.position))
    return chosen


# -- rank and summarize -----------------------------------------------------------------------------

def _rank_stage(db, settings, per_profile, vectors, pending, counts) -> dict[str, list[Ranked]]:
    from . import arxiv, profiles as profiles_module, rank

    rankings = {}
    for profile in pending:
        signals, warnings = profiles_module.profile_signals(db, settings, profile, fetch_papers=arxiv.fetch_papers)
        for warning in warnings:
            log.warning("profile %s: %s", profile.name, warning)
        rankings[profile.name] = rank.rank_papers(
            per_profile[profile.name], vectors, signals,
            top=settings.top_for(profile), rest_order=settings.digest.rest_order,
        )
        counts[profile.name] = len(rankings[profile.name])
    return rankings


def _summarize_stage(db, settings, rankings: dict[str, list[Ranked]], counts: dict) -> None:
    """Summaries for each profile's best papers; a paper in two profiles is summarized once. Every top
    paper gets a summary: the LLM's, or the abstract's opening sentences, labelled as such."""
    from . import summarize

    limit = settings.llm.summarize
    wanted = {}
    for items in rankings.values():
        best = [i for i in items if i.section != "replaced"]
        for item in best if limit == "all" else best[:limit]:
            wanted[item.paper.id] = item.paper
    fetch_text = None
    if settings.llm.full_text:
        from .arxiv import full_text_fetcher
        fetch_text = full_text_fetcher(settings)
    summaries = summarize.summarize_papers(db, settings, list(wanted.values()), fetch_text=fetch_text) \
        if wanted else {}
    for items in rankings.values():
        for item in items:
            item.summary = summaries.get(item.paper.id)
            if item.summary is None and item.section == "top":
                item.summary = summarize.fallback_summary(item.paper)
    counts.update(papers=len(wanted), llm=sum(1 for s in summaries.values() if not s.is_fallback))


# -- render and store -------------------------------------------------------------------------------

def _view(settings: Settings, profile: Profile, days: list[dt.date], items: list[Ranked]) -> DigestView:
    listed = [i for i in items if i.section != "replaced"]
    counts = {
        "announced": len(listed),
        "new": sum(1 for i in listed if i.kind == "new"),
        "cross": sum(1 for i in listed if i.kind == "cross"),
        "replace": sum(1 for i in items if i.section == "replaced"),
        "summarized": sum(1 for i in items if i.summary is not None and not i.summary.is_fallback),
    }
    return DigestView(profile=profile.name, days=list(days), categories=str(settings.expression_for(profile)),
                      items=items, counts=counts)


def _store_digest(db, settings: Settings, view: DigestView) -> int:
    """The checkpoint: digest, items and rendered formats in one transaction, or none of them."""
    from . import deliver, render

    c = view.counts
    with dbm.transaction(db):
        if _digest_id(db, view.profile, view.days[-1]):  # --resend of a day already built: keep it
            return _digest_id(db, view.profile, view.days[-1])
        cursor = db.execute(
            "INSERT INTO digests (profile, announced_on, days, categories, announced, new, cross, replaced, "
            "summarized, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [view.profile, view.days[-1].isoformat(), json.dumps([d.isoformat() for d in view.days]),
             view.categories, c["announced"], c["new"], c["cross"], c["replace"], c["summarized"], dbm.now_iso()],
        )
        view.digest_id = cursor.lastrowid
        db.conn.executemany(
            "INSERT INTO digest_items (digest_id, paper_id, rank, score, reason, section, kind) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(view.digest_id, i.paper.id, i.rank, i.score, i.reason, i.section, i.kind) for i in view.items],
        )
        rendered = render.render_digest(view, settings) if view.items else render.render_empty(view.days[-1],
                                                                                                 settings)
        db.execute("UPDATE digests SET subject = ? WHERE id = ?", [rendered.subject, view.digest_id])
        deliver.save_render(db, view.digest_id, rendered)
        # Queued in the same transaction: a digest never exists without its outbox rows, so a run killed
        # between here and the deliver stage cannot leave a day that looks done but was never sent.
        deliver.enqueue(db, view.digest_id, settings.channels_for(settings.profiles[view.profile]))
    return view.digest_id


def _empty_notes(db, settings, chosen, day: dt.date, dry_run: bool) -> list[tuple[int, Profile]]:
    """With digest.send_empty, a short "nothing announced" note, once per profile and day."""
    if not settings.digest.send_empty or dry_run:
        return []
    built = []
    for profile in chosen:
        existing = _digest_id(db, profile.name, day)
        view = _view(settings, profile, [day], [])
        built.append((existing or _store_digest(db, settings, view), profile))
    return built


def _preview(settings: Settings, view: DigestView) -> list[str]:
    """--dry-run: render to preview files, store nothing, send nothing."""
    from . import render

    rendered = render.render_digest(view, settings)
    folder = settings.database_path().parent / "preview"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{view.profile}-{view.days[-1].isoformat()}"
    paths = []
    for suffix, body in ((".html", rendered.html), (".txt", rendered.text), (".md", rendered.markdown)):
        path = stem.with_suffix(suffix)
        path.write_text(body, encoding="utf-8")
        paths.append(str(path))
    return paths


def _digest_id(db, profile: str, day: dt.date) -> int | None:
    row = db.execute("SELECT id FROM digests WHERE profile = ? AND announced_on = ?",
                     [profile, day.isoformat()]).fetchone()
    return row[0] if row else None


# -- deliver ----------------------------------------------------------------------------------------

def _deliver_stage(db, settings, run: Run, built, resend: bool) -> tuple[str, str | None]:
    """Queue each digest for its profile's channels, then send everything due. Returns "sent",
    "pending" (a retry is scheduled) or "failed" (for good), with a one-line description of the first
    delivery that did not go out."""
    from . import deliver

    with run.stage("deliver") as counts:
        queued = 0
        for digest_id, profile in built:
            queued += deliver.enqueue(db, digest_id, settings.channels_for(profile), resend=resend)
        outcomes = deliver.deliver_due(db, settings)
        counts.update(queued=queued, attempted=len(outcomes),
                      sent=sum(1 for o in outcomes if o.status == "sent"))
    ids = [d for d, _ in built]
    if not ids:
        return "sent", None
    marks = ",".join("?" * len(ids))
    waiting = list(db.query(
        f"SELECT channel, target, status, last_error, next_attempt_at FROM deliveries "
        f"WHERE digest_id IN ({marks}) AND status != 'sent' ORDER BY id", ids))
    if not waiting:
        return "sent", None
    first = waiting[0]
    where = f"{first['channel']}{' to ' + first['target'] if first['target'] else ''}"
    noun = "delivery" if len(waiting) == 1 else "deliveries"
    if any(w["status"] == "failed" for w in waiting):
        first = next(w for w in waiting if w["status"] == "failed")
        where = f"{first['channel']}{' to ' + first['target'] if first['target'] else ''}"
        return "failed", f"{len(waiting)} {noun} not sent; {where} failed: {first['last_error']}"
    return "pending", (f"{len(waiting)} {noun} waiting for a retry: {where}: {first['last_error']} "
                       f"(next attempt {first['next_attempt_at']})")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
