"""One run: fetch an announcement day (or several, for a merged catch-up), and build and deliver each
profile's digest of what it is owed, stage by stage, resumable.

fetch -> embed -> rank -> summarize -> render -> deliver. Each stage records itself in ``run_stages`` and logs
one line with its counts and duration. Fetching is one call, :func:`digest.arxiv.days.fetch_days`: the arxiv
package chooses between what is stored, the feed and the API, and the run only reads which days it got, which
arXiv announced nothing on, and which failed. What goes into a digest is what the ledger says the profile is
owed (:func:`digest.storage.ledger.owed`); the digest, its items, the ledger rows of what it covers, its
rendered formats and its outbox rows are written in one transaction and never rebuilt afterwards. So a crashed
run started again skips every finished stage's effect and never sends a paper twice.

The day's papers are embedded once for every profile; then rank, summarize and render take turns, one
profile at a time (:func:`_build_digest`), and a profile's digest is stored and queued before the next is
ranked. So a run holds the day's papers, vectors and summaries plus one profile's work, whatever the
number of profiles (tests/test_pipeline.py measures it; bench/bench_profiles.py up to 1,000 profiles).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from . import embed, learn, notices, rank, render, summarize
from .arxiv import api
from .arxiv.calendar import Calendar, Clock, announcement_day_at
from .arxiv.days import Fetched, NotAnnouncedYet, fetch_days
from .arxiv.fulltext import full_text_fetcher
from .config import Profile, Settings
from .deliver import deliver_due
from .locks import run_lock
from .profiles import profile_signals
from .records import Announcement, DigestView, Paper, Ranked, Summary
from .storage import ledger, outbox
from .storage.runs import Run, Turns
from .text import one_line, plural

log = logging.getLogger("digest.pipeline")


class RunError(Exception):
    """A stage failed in a way that stops this run; the message is the one line the user sees."""


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
    settings.check_profiles(names)
    return [settings.profiles[n] for n in names]


def _run(db, settings: Settings, run: Run, wanted: list[dt.date], chosen: list[Profile], *, dry_run: bool,
         fetch: bool, clock: Clock) -> RunResult:
    with run.stage("fetch") as counts:
        fetched = fetch_days(db, settings, wanted, clock, fetch=fetch)
        counts.update(fetched.counts)
    if fetched.status == "failed":
        raise RunError(fetched.error)
    if fetched.status == "empty":
        if fetched.day:
            run.on_day(fetched.day)
        return _nothing_announced(db, settings, run, chosen, fetched, dry_run, clock)
    days = fetched.days
    run.on_day(days[-1])
    outcomes, owing, papers = _plan(db, settings, chosen, days, dry_run)
    previews: list[str] = []
    caught_up = [] if dry_run else notices.caught_up(db)
    if owing:
        shared = _Shared(settings, _embed_stage(db, settings, run, papers))
        del papers  # the vectors are what the profiles need; the papers come back with each one's items
        with run.turns("rank", "summarize", "render") as turns:
            for profile in owing:
                outcomes[profile.name] = _build_digest(db, settings, profile, days, shared, turns, caught_up,
                                                       previews, dry_run)
            turns.counts["rank"].update(profiles=len(owing))
            turns.counts["summarize"].update(papers=len(shared.wanted), llm=shared.from_llm())
            digests = _count_render(turns.counts["render"], outcomes, previews)
    else:
        with run.stage("render") as counts:
            digests = _count_render(counts, outcomes, previews)
    if caught_up and digests:
        notices.mark_reported(db)
    result = RunResult("rendered", days[-1], outcomes=[outcomes[p.name] for p in chosen], previews=previews,
                       error=fetched.error)
    if dry_run:
        for path in previews:
            log.info("preview written: %s", path)
        return result
    return _deliver_stage(db, settings, run, result)


# -- what each profile is owed --------------------------------------------------------------------------

def _plan(db, settings: Settings, chosen: list[Profile], days: list[dt.date],
          dry_run: bool) -> tuple[dict[str, ProfileOutcome], list[Profile], dict[str, Paper]]:
    """Which profiles are owed papers for a digest of ``days`` (and every paper owed to any of them,
    to embed once), and why each other profile needs no new digest. Only the papers are kept: each
    profile's own share is asked of the ledger again when its turn comes, so that what is held for
    the run does not grow with the number of profiles."""
    outcomes: dict[str, ProfileOutcome] = {}
    owing: list[Profile] = []
    papers: dict[str, Paper] = {}
    for profile in chosen:
        existing = ledger.digest_for(db, profile.name, days[-1])
        if existing and not dry_run:
            outcomes[profile.name] = ProfileOutcome(profile.name, "exists", existing.id, existing.announced,
                                                    existing.summarized)
            continue
        items = ledger.owed(db, settings, profile, days[-1], first_day=days[0])
        if items:
            owing.append(profile)
            for a in items:
                papers.setdefault(a.paper.id, a.paper)
            continue
        covered_by = sorted({d.day for day in days for d in ledger.covering(db, profile.name, day)})
        if covered_by:
            outcomes[profile.name] = ProfileOutcome(profile.name, "covered", covered_by=covered_by)
        elif settings.digest.send_empty and not dry_run:
            digest_id = _store_empty_note(db, settings, profile, days[-1])
            outcomes[profile.name] = ProfileOutcome(profile.name, "built", digest_id)
        else:
            outcomes[profile.name] = ProfileOutcome(profile.name, "none")
    return outcomes, owing, papers


def _embed_stage(db, settings: Settings, run: Run, papers: dict[str, Paper]) -> dict:
    """Every owed paper embedded once, whichever profiles it is owed to."""
    with run.stage("embed") as counts:
        vectors = embed.embed_papers(db, list(papers.values()), settings)
        counts.update(papers=len(papers))
    return vectors


class _Shared:
    """What every profile's digest of a run draws on, held for the run and no longer: the day's vectors,
    the words its learned models read (learn.Words), and the summaries made so far, with what is left
    of the run's LLM deadline and of its full-text papers (both are per run, as llm.deadline and
    llm.full_text say, however many profiles ask for summaries)."""

    def __init__(self, settings: Settings, vectors: dict):
        self.vectors = vectors
        self.words = learn.Words()
        self.summaries: dict[str, Summary] = {}
        self.wanted: set[str] = set()
        self.deadline = time.monotonic() + settings.llm.deadline
        self.full_text_left = settings.llm.full_text
        self.fetch_text = full_text_fetcher(settings) if settings.llm.full_text else None

    def from_llm(self) -> int:
        return sum(1 for s in self.summaries.values() if not s.is_fallback)


def _build_digest(db, settings: Settings, profile: Profile, days: list[dt.date], shared: _Shared, turns: Turns,
                  caught_up: list[str], previews: list[str], dry_run: bool) -> ProfileOutcome:
    """One profile's digest, from what it is owed to stored and queued (or previewed). Nothing of it
    outlives this call but its outcome: the next profile's turn starts from the shared day alone."""
    with turns("rank") as counts:
        covers = ledger.owed(db, settings, profile, days[-1], first_day=days[0])
        items = _rank_profile(db, settings, profile, covers, shared)
        counts["papers"] = counts.get("papers", 0) + len(items)
    with turns("summarize"):
        _summarize_profile(db, settings, items, shared, dry_run)
    with turns("render"):
        view = _view(db, settings, profile, days, items, covers)
        view.caught_up = caught_up
        if dry_run:
            previews += _preview(settings, view)
            return ProfileOutcome(profile.name, "previewed", papers=view.counts["announced"])
        rendered = render.render_digest(view, settings)
        digest_id = ledger.store_digest(db, view, rendered, settings.channels_for(profile))
        return ProfileOutcome(profile.name, "built", digest_id, view.counts["announced"], view.counts["summarized"])


def _rank_profile(db, settings: Settings, profile: Profile, covers: list[Announcement],
                  shared: _Shared) -> list[Ranked]:
    signals, warnings = profile_signals(db, settings, profile, fetch_papers=api.fetch_papers,
                                        find_title=api.find_by_title)
    for warning in warnings:
        log.warning("profile %s: %s", profile.name, warning)
    return rank.rank_papers(_one_per_paper(covers), shared.vectors, signals, top=settings.top_for(profile),
                            rest_order=settings.digest.rest_order, words=shared.words)


def _count_render(counts: dict, outcomes: dict[str, ProfileOutcome], previews: list[str]) -> int:
    counts.update(digests=sum(o.state == "built" for o in outcomes.values()), previews=len(previews))
    return counts["digests"]


def _one_per_paper(items: list[Announcement]) -> list[Announcement]:
    """A digest lists a paper once: as its submission when that is owed too, else as its replacement."""
    chosen: dict[str, Announcement] = {}
    for a in items:
        if a.paper.id not in chosen or (chosen[a.paper.id].replacement and not a.replacement):
            chosen[a.paper.id] = a
    return list(chosen.values())


def _summarize_profile(db, settings: Settings, items: list[Ranked], shared: _Shared, dry_run: bool) -> None:
    """Summaries for the profile's best papers; a paper in two profiles is summarized once (the run
    keeps what it made). The profile's best papers show them, so a digest is the same whichever other
    profiles share the run. Every top paper gets a summary: the LLM's, or the abstract's opening
    sentences, labelled as such. A dry run calls no LLM (and so stores no summary): its top papers show
    their abstracts."""
    limit = settings.llm.summarize
    best = [i for i in items if i.section != "replaced"]
    wanted = {i.paper.id: i.paper for i in (best if limit == "all" else best[:limit])}
    shared.wanted.update(wanted)
    missing = [p for paper_id, p in wanted.items() if paper_id not in shared.summaries]
    if missing and not dry_run:
        shared.summaries.update(summarize.summarize_papers(db, _run_budget(settings, shared, len(missing)),
                                                           missing, fetch_text=shared.fetch_text))
    for item in items:
        item.summary = shared.summaries.get(item.paper.id) if item.paper.id in wanted else None
        if item.summary is None and item.section == "top":
            item.summary = summarize.fallback_summary(item.paper)


def _run_budget(settings: Settings, shared: _Shared, papers: int) -> Settings:
    """The settings for one profile's summaries: what is left of the run's deadline and full-text
    papers, so that many profiles asking in turn take no longer, and read no more, than one run."""
    left = max(shared.deadline - time.monotonic(), 0.001)
    full_text = min(shared.full_text_left, papers)
    shared.full_text_left -= full_text
    llm = settings.llm.model_copy(update={"deadline": left, "full_text": full_text})
    return settings.model_copy(update={"llm": llm})


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
