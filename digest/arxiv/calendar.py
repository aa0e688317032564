"""arXiv's calendar: which feed days carry an announcement, which submissions each one announces, and
what time it is.

Feed days: arXiv mails its announcement at 20:00 ET on Sunday to Thursday evenings; the feed stamps it
with the next day's date (midnight ET), so feed days run Monday to Friday. A weekday is no feed day on an
arXiv holiday. Holidays are data (``holidays.toml`` beside this file, and the user's ``arxiv.holidays`` /
``arxiv.not_holidays``), never trusted alone: whether a day was announced is decided by what arXiv
answered, and the coverage ledger makes a wrong guess cost a day's delay at most.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import tomllib
import zoneinfo
from dataclasses import dataclass
from importlib import resources

ET = zoneinfo.ZoneInfo("America/New_York")
MAILING_LEAD = dt.timedelta(hours=4)  # 20:00 ET mailing -> midnight ET feed day
SUBMISSION_DEADLINE = dt.time(14, 0)  # ET
PRETEND_TODAY_ENV = "DIGEST_PRETEND_TODAY"  # tests only: see Clock.from_environ


class ClockError(ValueError):
    """DIGEST_PRETEND_TODAY is not a date."""


@dataclass(frozen=True)
class Clock:
    """Now, shifted by whole days in tests.

    ``DIGEST_PRETEND_TODAY=2026-06-23`` makes every digest process (the daemon and the runs it starts)
    believe today is that date in the schedule's timezone while keeping the real time of day, so
    APScheduler's real-time firings still happen at the configured time.
    """

    shift: dt.timedelta = dt.timedelta(0)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.shift

    @classmethod
    def from_environ(cls, environ=None, tz: dt.tzinfo = ET) -> "Clock":
        environ = os.environ if environ is None else environ
        pretend = environ.get(PRETEND_TODAY_ENV)
        if not pretend:
            return cls()
        try:
            day = dt.date.fromisoformat(pretend)
        except ValueError:
            raise ClockError(f"{PRETEND_TODAY_ENV}: expected a date as YYYY-MM-DD, got {pretend!r}") from None
        today = dt.datetime.now(tz).date()
        return cls(dt.timedelta(days=(day - today).days))


def announcement_day_at(moment: dt.datetime) -> dt.date:
    """The latest feed day whose 20:00 ET mailing (the evening before) is due by ``moment``."""
    wall = moment.astimezone(ET).replace(tzinfo=None)  # wall-clock arithmetic: DST-proof
    return (wall + MAILING_LEAD).date()


# -- holidays ---------------------------------------------------------------------------------------

@functools.cache
def _holiday_data() -> dict:
    return tomllib.loads(resources.files(__package__).joinpath("holidays.toml").read_text(encoding="utf-8"))


@functools.cache
def default_holidays(year: int) -> frozenset[dt.date]:
    """arXiv's holidays of ``year``: as published, else derived from the US holidays it observes."""
    data = _holiday_data()
    published = data["published"].get(str(year))
    if published is not None:
        return frozenset(published)
    import holidays  # only for a year arXiv has not published

    observed = set(data["derived"]["observed"])
    us = holidays.country_holidays("US", years=year, observed=True, language="en_US")
    return frozenset(day for day, name in us.items()
                     if day.weekday() < 5 and any(n.removesuffix(" (observed)") in observed for n in name.split("; ")))


@dataclass(frozen=True)
class Calendar:
    """The expected announcement days. ``added`` and ``removed`` are the user's corrections."""

    added: frozenset[dt.date] = frozenset()
    removed: frozenset[dt.date] = frozenset()

    @classmethod
    def from_settings(cls, settings) -> "Calendar":
        return cls(frozenset(settings.arxiv.holidays), frozenset(settings.arxiv.not_holidays))

    def is_holiday(self, day: dt.date) -> bool:
        return day in self.added or (day not in self.removed and day in default_holidays(day.year))

    def expected(self, day: dt.date) -> bool:
        """Whether the feed should carry an announcement dated ``day``: a weekday that is no holiday."""
        return day.weekday() < 5 and not self.is_holiday(day)

    def announcement_days(self, start: dt.date, end: dt.date) -> list[dt.date]:
        """Every expected feed day from ``start`` to ``end``, both included."""
        return [d for d in _days(start, end) if self.expected(d)]

    def next_announcement(self, day: dt.date) -> dt.date:
        """The first expected feed day on or after ``day``."""
        while not self.expected(day):
            day += dt.timedelta(days=1)
        return day

    def announced_on_for(self, submitted: dt.datetime) -> dt.date:
        """The feed day that announces a paper submitted at ``submitted`` (an aware datetime).

        arXiv's rule (info.arxiv.org/help/availability): submissions are due on weekdays at 14:00 ET and
        go out in the 20:00 ET mailing of the same day, except Friday's, which go out on Sunday:

            Mon 14:00 - Tue 14:00  ->  mailed Tue 20:00  ->  feed day Wed
            Thu 14:00 - Fri 14:00  ->  mailed Sun 20:00  ->  feed day Mon
            Fri 14:00 - Mon 14:00  ->  mailed Mon 20:00  ->  feed day Tue

        So a submission belongs to the next weekday deadline at or after it, and is announced on the
        feed day of the weekday following that deadline. A holiday announces nothing; its papers move
        to the next expected feed day. (Moderation can still hold a paper back a day.)
        """
        local = submitted.astimezone(ET)
        deadline_day = local.date()
        if deadline_day.weekday() >= 5 or local.time() >= SUBMISSION_DEADLINE:
            deadline_day = _next_weekday(deadline_day)
        return self.next_announcement(_next_weekday(deadline_day))

    def submission_window(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) in ET of the submissions announced on feed day ``day`` (an expected day).

        The window ends at the deadline on the weekday before ``day`` and starts at the deadline that
        closed the previous expected feed day, so a holiday's submissions fall into the next day's window.
        """
        if not self.expected(day):
            raise ValueError(f"{day} is not an arXiv announcement day")
        previous = day - dt.timedelta(days=1)
        while not self.expected(previous):
            previous -= dt.timedelta(days=1)
        end = dt.datetime.combine(_previous_weekday(day), SUBMISSION_DEADLINE, tzinfo=ET)
        start = dt.datetime.combine(_previous_weekday(previous), SUBMISSION_DEADLINE, tzinfo=ET)
        return start, end


def _days(start: dt.date, end: dt.date):
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


def _previous_weekday(day: dt.date) -> dt.date:
    day -= dt.timedelta(days=1)
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def _next_weekday(day: dt.date) -> dt.date:
    day += dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day

