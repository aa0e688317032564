"""One run: fetch an announcement day (or several, for a merged catch-up), and build and deliver each
profile's digest of what it is owed, stage by stage, resumable.

fetch -> embed -> rank -> summarize -> render -> deliver. Each stage records itself in ``run_stages`` and
logs one line with its counts and duration. What goes into a digest is what the ledger says the profile
is owed (:func:`digest.ledger.owed`); the digest, its items, the ledger rows of what it covers, its
rendered formats and its outbox rows are written in one transaction and never rebuilt afterwards. So a
crashed run started again skips every finished stage's effect and never sends a paper twice.

Longer than most modules on purpose: the stages are read top to bottom in the order a run takes them.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import embed, ledger, notices, rank, render, summarize
from .arxiv import api, feed
from .arxiv.calendar import Calendar, Clock, announcement_day_at
from .arxiv.fulltext import full_text_fetcher
from .arxiv.http import session_for
from .config import Profile, Settings
from .db import day_fetched, empty_detail, has_announcements, latest_day
from .deliver import deliver_due, outbox
from .locks import pid_lock
from .profiles import profile_signals
from .records import Announcement, DigestView, Ranked
from .runs import Run
from .text import one_line, plural

log = logging.getLogger("digest.pipeline")


class RunError(Exception):
    """A stage failed in a way that stops this run; the message is the one line the user sees."""


class NotAnnouncedYet(RunError):
    """``--day`` names a day arXiv has not announced yet: the user's mistake, and nothing is recorded."""


@dataclass
class ProfileOutcome:
    """What a run did for one profile. ``state``: "built" (a new digest), "exists" (built before),
    "covered" (every paper of the day is in an earlier digest, e.g. a merged catch-up), "none" (no paper
    in its categories), "previewed" (a dry run)."""

    profile: str
    state: str
    digest_id: int | None = None
    papers: int = 0
    summarized: int = 0
    covered_by: list[dt.date] = field(default_factory=list)


@dataclass
class RunResult:
    """What one run did. ``status``: "sent" (every digest of the day is delivered), "pending" (a
    delivery waits for a retry), "failed" (with ``error``), "empty" (arXiv announced nothing, with
    ``detail``), "rendered" (a dry run)."""

    status: str
    announced_on: dt.date | None = None
    digests: list[int] = field(default_factory=list)
    error: str | None = None
    detail: str | None = None
    previews: list[str] = field(default_factory=list)
    outcomes: list[ProfileOutcome] = field(default_factory=list)
    deliveries: list[dict] = field(default_factory=list)  # this run's digests' outbox rows


@contextmanager
def run_lock(settings: Settings):
    """One run at a time per database, across processes: a daemon's run and a manual `digest run`
    wait for each other instead of racing. flock is released by the kernel if the holder dies."""
    with pid_lock(settings.database_path().with_suffix(".lock"), wait=True,
                  on_wait=lambda pid: log.info("waiting for another digest run (pid %s) to finish", pid)):
        yield


def run_day(db, settings: Settings, *, days: list[dt.date] | None = None, profiles: list[str] | None = None,
            dry_run: bool = False, trigger: str = "cli", fetch: bool = True, clock: Clock | None = None) -> RunResult:
    """Build and deliver each profile's digest of ``days`` (default: the feed's latest day).

    Several ``days`` build one merged catch-up digest per profile. Raises :class:`NotAnnouncedYet`
    for a day arXiv has not announced, before anything is recorded.
    """
    clock = clock or Clock.from_environ(tz=settings.schedule.tz)
    wanted = sorted(set(days or []))
    chosen = _choose_profiles(settings, profiles)
    _refuse_future(wanted, announcement_day_at(clock.now()))
    with run_lock(settings):
        run = Run(db, trigger, wanted[-1] if wanted else None)
        try:
            result = _run(db, settings, run, wanted, chosen, dry_run=dry_run, fetch=fetch, clock=clock)
        except NotAnnouncedYet:
            run.forget()
            raise
        except (RunError, ledger.LedgerError) as exc:
            run.finish("failed", error=str(exc))
            log.error("run failed: %s", exc)
            return RunResult("failed", wanted[-1] if wanted else None, error=str(exc))
        except BaseException as exc:
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
            run.finish("interrupted" if interrupted else "failed", error=one_line(exc))
            raise
        status = {"failed": "failed", "empty": "empty"}.get(result.status, "done")
        run.finish(status, result.announced_on, result.error)
        return result


def _refuse_future(wanted: list[dt.date], latest: dt.date) -> None:
    ahead = [d for d in wanted if d > latest]
    if ahead:
        raise NotAnnouncedYet(f"--day {ahead[0]}: arXiv has not announced that day yet (the latest announcement "
                              f"due now is {latest}'s)")


def _choose_profiles(settings: Settings, names: list[str] | None) -> list[Profile]:
    if not names:
        return list(settings.profiles.values())
    unknown = [n for n in names if n not in settings.profiles]
    if unknown:
        raise KeyError(unknown[0])
    return [settings.profiles[n] for n in names]


def _run(db, settings: Settings, run: Run, wanted: list[dt.date], chosen: list[Profile], *, dry_run: bool,
         fetch: bool, clock: Clock) -> RunResult:
    with run.stage("fetch") as counts:
        fetched = _fetch_stage(db, settings, wanted, fetch, clock, counts)
    if fetched.status == "failed":
        raise RunError(fetched.error)
    if fetched.status == "empty":
        if fetched.day:
            run.on_day(fetched.day)
        return _nothing_announced(db, settings, run, chosen, fetched, dry_run, clock)
    days = fetched.days
    run.on_day(days[-1])
    outcomes, owed = _plan(db, settings, chosen, days, dry_run)
    rankings = _rank(db, settings, run, owed, dry_run) if owed else {}
    previews: list[str] = []
    caught_up = [] if dry_run else notices.caught_up(db)
    with run.stage("render") as counts:
        for profile in chosen:
            if profile.name not in owed:
                continue
            view = _view(db, settings, profile, days, rankings[profile.name], owed[profile.name])
            view.caught_up = caught_up
            if dry_run:
                previews += _preview(settings, view)
                outcomes[profile.name] = ProfileOutcome(profile.name, "previewed", papers=view.counts["announced"])
                continue
            rendered = render.render_digest(view, settings)
            digest_id = ledger.store_digest(db, view, rendered, settings.channels_for(profile))
            outcomes[profile.name] = ProfileOutcome(profile.name, "built", digest_id, view.counts["announced"],
                                                    view.counts["summarized"])
        counts.update(digests=sum(o.state == "built" for o in outcomes.values()), previews=len(previews))
    if caught_up and counts["digests"]:
        notices.mark_reported(db)
    result = RunResult("rendered", days[-1], outcomes=[outcomes[p.name] for p in chosen], previews=previews,
                       error=fetched.error)
    if dry_run:
        for path in previews:
            log.info("preview written: %s", path)
        return result
    return _deliver_stage(db, settings, run, result)


# -- fetch ----------------------------------------------------------------------------------------------

@dataclass
class Fetched:
    """The days a run covers, or why it covers none. ``error`` on an "announced" run names the wanted
    days that could not be fetched (they stay owed and are fetched again at the next run)."""

    status: str  # announced, empty, failed
    days: list[dt.date] = field(default_factory=list)
    day: dt.date | None = None  # for "empty": the day arXiv announced nothing on, when known
    detail: str | None = None
    error: str | None = None


def _fetch_stage(db, settings: Settings, wanted: list[dt.date], fetch: bool, clock: Clock, counts: dict) -> Fetched:
    if not wanted:
        return _fetch_latest(db, settings, fetch, clock, counts)
    calendar = Calendar.from_settings(settings)
    categories = settings.feed_categories()
    present, empty, errors = [], [], []
    latest = None  # what the feed shows now, asked once per run
    for day in wanted:
        state = day_fetched(db, day, categories)
        if state is None and not fetch and has_announcements(db, day):
            state = "announced"  # --no-fetch: what is stored is what there is
        if state is None and fetch:
            if latest is None:
                latest = feed.fetch_announcements(db, settings)
            if latest.status == "announced" and day > latest.announced_on and day >= announcement_day_at(clock.now()):
                raise NotAnnouncedYet(f"--day {day}: arXiv has not announced that day yet (its feed still shows "
                                      f"{latest.announced_on})")
            state = day_fetched(db, day, categories)
            if state is None and not calendar.expected(day):
                empty.append((day, "no announcement day (a weekend or an arXiv holiday)"))
                continue
            if state is None:
                result = _backfill_day(db, settings, calendar, day, categories)
                state = "announced" if result.status == "announced" else result.status
                if result.status == "failed":
                    errors.append(f"{day}: {result.error}")
        if state == "announced":
            present.append(day)
        elif state == "empty":
            empty.append((day, empty_detail(db, day) or "arXiv announced nothing"))
        elif not fetch:
            errors.append(f"{day}: nothing stored and fetching was turned off")
    counts.update(days=len(present), empty=len(empty), failures=len(errors))
    if present:
        return Fetched("announced", present, error="; ".join(errors) or None)
    if errors:
        counts["error"] = errors[0]
        return Fetched("failed", error=f"fetching arXiv failed: {errors[0]}")
    day, detail = empty[-1]
    return Fetched("empty", day=day, detail=detail)


def _fetch_latest(db, settings: Settings, fetch: bool, clock: Clock, counts: dict) -> Fetched:
    if not fetch:
        last = latest_day(db)
        if last is None:
            return Fetched("failed", error="nothing stored yet and fetching was turned off")
        return Fetched("announced", [last])
    result = feed.fetch_announcements(db, settings)
    counts.update(status=result.status, papers=result.count, skipped=result.skipped)
    if result.status == "failed":
        counts["error"] = result.error
        return Fetched("failed", error=f"fetching arXiv's feed failed: {result.error}")
    if result.status == "empty":
        return Fetched("empty", day=result.announced_on, detail=result.detail)
    return Fetched("announced", [result.announced_on])


def _backfill_day(db, settings: Settings, calendar: Calendar, day: dt.date, categories: list[str]):
    with session_for(settings, None) as session:
        return api.backfill_day(db, settings, session, day, categories, calendar)


# -- what each profile is owed --------------------------------------------------------------------------

def _plan(db, settings: Settings, chosen: list[Profile], days: list[dt.date],
          dry_run: bool) -> tuple[dict[str, ProfileOutcome], dict[str, list[Announcement]]]:
    """Per profile: the papers its digest of ``days`` will cover, or why it needs no new digest."""
    outcomes: dict[str, ProfileOutcome] = {}
    owed: dict[str, list[Announcement]] = {}
    for profile in chosen:
        existing = ledger.digest_for(db, profile.name, days[-1])
        if existing and not dry_run:
            outcomes[profile.name] = ProfileOutcome(profile.name, "exists", existing.id, existing.announced,
                                                    existing.summarized)
            continue
        items = ledger.owed(db, settings, profile, days[-1], first_day=days[0])
        if items:
            owed[profile.name] = items
            continue
        covered_by = sorted({d.day for day in days for d in ledger.covering(db, profile.name, day)})
        if covered_by:
            outcomes[profile.name] = ProfileOutcome(profile.name, "covered", covered_by=covered_by)
        elif settings.digest.send_empty and not dry_run:
            digest_id = _store_empty_note(db, settings, profile, days[-1])
            outcomes[profile.name] = ProfileOutcome(profile.name, "built", digest_id)
        else:
            outcomes[profile.name] = ProfileOutcome(profile.name, "none")
    return outcomes, owed


def _rank(db, settings: Settings, run: Run, owed: dict[str, list[Announcement]],
          dry_run: bool) -> dict[str, list[Ranked]]:
    """Embed every owed paper once, rank each profile's, and attach summaries to the best."""
    papers = {a.paper.id: a.paper for items in owed.values() for a in items}
    with run.stage("embed") as counts:
        vectors = embed.embed_papers(db, list(papers.values()), settings)
        counts.update(papers=len(papers))
    rankings: dict[str, list[Ranked]] = {}
    with run.stage("rank") as counts:
        for name, items in owed.items():
            profile = settings.profiles[name]
            signals, warnings = profile_signals(db, settings, profile, fetch_papers=api.fetch_papers,
                                                find_title=api.find_by_title)
            for warning in warnings:
                log.warning("profile %s: %s", name, warning)
            rankings[name] = rank.rank_papers(_one_per_paper(items), vectors, signals,
                                              top=settings.top_for(profile), rest_order=settings.digest.rest_order)
            counts[name] = len(rankings[name])
    with run.stage("summarize") as counts:
        _summarize_stage(db, settings, rankings, counts, dry_run)
    return rankings


def _one_per_paper(items: list[Announcement]) -> list[Announcement]:
    """A digest lists a paper once: as its submission when that is owed too, else as its replacement."""
    chosen: dict[str, Announcement] = {}
    for a in items:
        if a.paper.id not in chosen or (chosen[a.paper.id].replacement and not a.replacement):
            chosen[a.paper.id] = a
    return list(chosen.values())


def _summarize_stage(db, settings: Settings, rankings: dict[str, list[Ranked]], counts: dict, dry_run: bool) -> None:
    """Summaries for each profile's best papers; a paper in two profiles is summarized once. Every top
    paper gets a summary: the LLM's, or the abstract's opening sentences, labelled as such. A dry run
    calls no LLM (and so stores no summary): its top papers show their abstracts."""
    limit = settings.llm.summarize
    wanted = {}
    for items in rankings.values():
        best = [i for i in items if i.section != "replaced"]
        for item in best if limit == "all" else best[:limit]:
            wanted[item.paper.id] = item.paper
    fetch_text = full_text_fetcher(settings) if settings.llm.full_text else None
    summaries = {} if dry_run or not wanted else \
        summarize.summarize_papers(db, settings, list(wanted.values()), fetch_text=fetch_text)
    for items in rankings.values():
        for item in items:
            item.summary = summaries.get(item.paper.id)
            if item.summary is None and item.section == "top":
                item.summary = summarize.fallback_summary(item.paper)
    counts.update(papers=len(wanted), llm=sum(1 for s in summaries.values() if not s.is_fallback))


# -- render and store -------------------------------------------------------------------------------------

def _view(db, settings: Settings, profile: Profile, days: list[dt.date], items: list[Ranked],
          covers: list[Announcement]) -> DigestView:
    """The digest as the renderer sees it; a paper of an earlier day says when it was announced."""
    announced = {a.paper.id: a.announced_on for a in covers if not a.replacement}
    earlier = {d for d in announced.values() if d not in days}
    late = ledger.covered_days(db, profile.name, earlier)
    for item in items:
        day = announced.get(item.paper.id)
        if day is not None and day not in days:
            item.note = f"announced {day}" + (", after that day's digest" if day in late else "")
    listed = [i for i in items if i.section != "replaced"]
    counts = {
        "announced": len(listed),
        "new": sum(1 for i in listed if i.kind == "new"),
        "cross": sum(1 for i in listed if i.kind == "cross"),
        "replace": sum(1 for i in items if i.section == "replaced"),
        # what the reader sees: LLM summaries in the top section (the others show abstracts)
        "summarized": sum(1 for i in items if i.section == "top" and i.summary is not None
                          and not i.summary.is_fallback),
    }
    return DigestView(profile=profile.name, days=list(days), categories=str(settings.expression_for(profile)),
                      items=items, counts=counts, covers=covers)


def _store_empty_note(db, settings: Settings, profile: Profile, day: dt.date) -> int:
    """With digest.send_empty, a short "nothing announced" note, once per profile and day."""
    existing = ledger.digest_for(db, profile.name, day)
    if existing:
        return existing.id
    view = DigestView(profile=profile.name, days=[day], categories=str(settings.expression_for(profile)),
                      counts={"announced": 0, "new": 0, "cross": 0, "replace": 0, "summarized": 0})
    return ledger.store_digest(db, view, render.render_empty(day, settings), settings.channels_for(profile))


def _nothing_announced(db, settings: Settings, run: Run, chosen: list[Profile], fetched: Fetched,
                       dry_run: bool, clock: Clock) -> RunResult:
    """No paper for any wanted day. With digest.send_empty, a note for a day that is positively not an
    announcement day (never for a weekday whose feed is merely empty: arXiv may be late, and the note
    would take the day's place in the ledger)."""
    log.info("arXiv announced nothing%s: %s", f" on {fetched.day}" if fetched.day else "", fetched.detail)
    day = fetched.day or announcement_day_at(clock.now())
    result = RunResult("empty", fetched.day, detail=fetched.detail)
    settled = fetched.day is not None or not Calendar.from_settings(settings).expected(day)
    if settings.digest.send_empty and settled and not dry_run:
        result.outcomes = [ProfileOutcome(p.name, "built", _store_empty_note(db, settings, p, day))
                           for p in chosen]
        delivered = _deliver_stage(db, settings, run, result)
        result.status = "empty" if delivered.status == "sent" else delivered.status
    return result


def _preview(settings: Settings, view: DigestView) -> list[str]:
    """--dry-run: render to preview files beside the database; nothing goes into the ledger or outbox."""
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


# -- deliver -------------------------------------------------------------------------------------------------

def _deliver_stage(db, settings: Settings, run: Run, result: RunResult) -> RunResult:
    """Send everything due (this run's digests and any retry whose time has come), then say where this
    run's digests stand: all sent, some waiting for a retry, or some failed for good."""
    with run.stage("deliver") as counts:
        outcomes = deliver_due(db, settings)
        counts.update(attempted=len(outcomes), sent=sum(1 for o in outcomes if o.status == "sent"))
    result.digests = [o.digest_id for o in result.outcomes if o.digest_id]
    result.deliveries = outbox.for_digests(db, result.digests)
    waiting = [d for d in result.deliveries if d["status"] != "sent"]
    failed = [d for d in waiting if d["status"] == "failed"]
    if failed:
        result.status = "failed"
        result.error = (f"{plural(len(waiting), 'delivery', 'deliveries')} not sent; {outbox.where(failed[0])} "
                        f"failed: {failed[0]['last_error']}")
    elif waiting:
        result.status = "pending"
        result.error = (f"{plural(len(waiting), 'delivery', 'deliveries')} waiting for a retry: "
                        f"{outbox.where(waiting[0])}: {waiting[0]['last_error'] or 'not sent yet'} "
                        f"(next attempt {waiting[0]['next_attempt_at'] or 'now'})")
    else:
        result.status = "sent"
    return result


def describe_run(result: RunResult) -> list[str]:
    """What a person reads after `digest run`: one line per profile, saying what was done and what not."""
    day = result.announced_on
    if result.status == "empty":
        return [f"{day or 'Today'}: arXiv announced nothing ({result.detail or 'a weekend or a holiday'}); "
                f"no digest to send."]
    if result.status == "rendered":
        return ["Dry run; no digest stored, no LLM called, nothing sent. Previews:"] + \
            [f"  {p}" for p in result.previews]
    if result.status == "failed" and not result.outcomes:
        return [f"{day or 'Today'}: the run failed."]
    lines = []
    for o in result.outcomes:
        rows = [d for d in result.deliveries if d["digest_id"] == o.digest_id]
        sent = bool(rows) and all(d["status"] == "sent" for d in rows)
        papers = plural(o.papers, "paper")
        if o.state == "built":
            verb = "sent to" if sent else "built for"
            lines.append(f"{day}: {verb} {o.profile} ({papers}, {o.summarized} summarized)")
        elif o.state == "exists":
            lines.append(f"{day}: already sent to {o.profile} ({papers}), nothing to do" if sent
                         else f"{day}: already built for {o.profile} ({papers}); its delivery is still waiting")
        elif o.state == "covered":
            shown = ", ".join(map(str, o.covered_by))
            lines.append(f"{day}: every paper is already in {o.profile}'s digest of {shown}, nothing to do")
        elif o.state == "none":
            lines.append(f"{day}: no paper in {o.profile}'s categories")
    return lines
