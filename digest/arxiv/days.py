"""The one call a run makes to arXiv: :func:`fetch_days`, the days it wants as stored, each fetched the
way it needs when it is not stored yet.

The latest day comes from the daily feed (one request for every category); a day the feed no longer
shows comes from the search API; a day already fetched for the configured categories is never fetched
again. What arXiv said each time is in ``fetches`` (:mod:`digest.storage.papers`), so a day it announced
nothing on is told apart from one that could not be fetched, which stays owed and is fetched again at
the next run. The pipeline reads the :class:`Fetched` record and chooses no source itself.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Callable

from ..config import Settings
from ..storage.papers import day_fetched, empty_detail, has_announcements, latest_day
from . import api, feed
from .calendar import Calendar, Clock, announcement_day_at
from .http import session_for

class NotAnnouncedYet(Exception):
    """``--day`` names a day arXiv has not announced yet: the user's mistake, and nothing is recorded."""


@dataclass
class Fetched:
    """The days a run covers, or why it covers none. ``error`` on an "announced" run names the wanted
    days that could not be fetched (they stay owed and are fetched again at the next run). ``counts``
    are the fetch stage's, as ``run_stages`` keeps them (an ``error`` among them marks the stage failed)."""

    status: str  # announced, empty, failed
    days: list[dt.date] = field(default_factory=list)
    day: dt.date | None = None  # for "empty": the day arXiv announced nothing on, when known
    detail: str | None = None
    error: str | None = None
    counts: dict = field(default_factory=dict)


def fetch_days(db, settings: Settings, days: list[dt.date], clock: Clock, *, fetch: bool = True) -> Fetched:
    """``days`` (in order; none: the feed's latest day) as stored, fetching each one not stored yet
    unless ``fetch`` is off (then what is stored is what there is).

    Raises :class:`NotAnnouncedYet` for a wanted day after the one the feed shows, when that day is not
    due yet either.
    """
    if not days:
        return _latest(db, settings, fetch)
    calendar = Calendar.from_settings(settings)
    feed_now = functools.cache(lambda: feed.fetch_announcements(db, settings))  # asked once per run, if at all
    present, empty, errors = [], [], []
    for day in days:
        state, why = _day(db, settings, calendar, day, fetch, clock, feed_now)
        if state == "announced":
            present.append(day)
        elif state == "empty":
            empty.append((day, why))
        else:
            errors.append(f"{day}: {why}")
    counts = {"days": len(present), "empty": len(empty), "failures": len(errors)}
    if present:
        return Fetched("announced", present, error="; ".join(errors) or None, counts=counts)
    if errors:
        return Fetched("failed", error=f"fetching arXiv failed: {errors[0]}", counts={**counts, "error": errors[0]})
    day, detail = empty[-1]
    return Fetched("empty", day=day, detail=detail, counts=counts)


def _latest(db, settings: Settings, fetch: bool) -> Fetched:
    """The day the feed shows now, or with fetching off the latest day stored."""
    if not fetch:
        last = latest_day(db)
        if last is None:
            return Fetched("failed", error="nothing stored yet and fetching was turned off")
        return Fetched("announced", [last])
    result = feed.fetch_announcements(db, settings)
    counts = {"status": result.status, "papers": result.count, "skipped": result.skipped}
    if result.status == "failed":
        return Fetched("failed", error=f"fetching arXiv's feed failed: {result.error}",
                       counts={**counts, "error": result.error})
    if result.status == "empty":
        return Fetched("empty", day=result.announced_on, detail=result.detail, counts=counts)
    return Fetched("announced", [result.announced_on], counts=counts)


def _day(db, settings: Settings, calendar: Calendar, day: dt.date, fetch: bool, clock: Clock,
         feed_now: Callable[[], feed.FetchResult]) -> tuple[str, str | None]:
    """What is known of one wanted ``day``, fetched first if it must be: ("announced", None), ("empty",
    how we know) or ("failed", why). The feed is asked first, since it may show the day (and says
    whether the day is announced yet); a day it does not show is asked of the API."""
    categories = settings.feed_categories()
    state = day_fetched(db, day, categories)
    if state is None and not fetch:
        if has_announcements(db, day):
            return "announced", None  # --no-fetch: what is stored is what there is
        return "failed", "nothing stored and fetching was turned off"
    if state is None:
        latest = feed_now()
        if latest.status == "announced" and day > latest.announced_on and day >= announcement_day_at(clock.now()):
            raise NotAnnouncedYet(f"--day {day}: arXiv has not announced that day yet (its feed still shows "
                                  f"{latest.announced_on})")
        state = day_fetched(db, day, categories)
        if state is None and not calendar.expected(day):
            return "empty", "no announcement day (a weekend or an arXiv holiday)"
    if state is None:
        with session_for(settings, None) as session:
            result = api.backfill_day(db, settings, session, day, categories, calendar)
        if result.status == "failed":
            return "failed", result.error
        state = result.status
    if state == "empty":
        return "empty", empty_detail(db, day) or "arXiv announced nothing"
    return "announced", None
