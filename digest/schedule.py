"""When the daemon fires, and what a firing owes: the schedule (APScheduler's own trigger, so `digest
status` and the daemon agree), and the days owed, worked out from the database alone (the ledger and
``fetches``), so a daemon started after a crash or a holiday knows what is still to do.

The day a firing is for: arXiv mails an announcement at 20:00 ET on the evening before its *feed day*
(Sun-Thu evenings, feed days Mon-Fri), so at any moment the latest feed day that should be out is the
ET date four hours later.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .arxiv.calendar import Calendar, announcement_day_at
from .storage import ledger, outbox
from .storage.papers import day_fetched, latest_feed_fetch
from .storage.runs import last_error_of_day
from .text import plural

if TYPE_CHECKING:
    from .config import Settings  # annotations only: pydantic is for validating

# -- when -----------------------------------------------------------------------------------------------

def schedule_trigger(settings: Settings):
    """APScheduler's trigger for ``schedule.time`` in ``schedule.timezone``: the daemon fires by it, and
    `digest status` asks it for the next firing, so the two agree even on a day the time does not exist
    (a DST gap)."""
    from apscheduler.triggers.cron import CronTrigger

    at = settings.schedule.time_of_day
    return CronTrigger(hour=at.hour, minute=at.minute, timezone=settings.schedule.tz)


def last_firing(settings: Settings, now: dt.datetime) -> dt.datetime:
    """The most recent scheduled time at or before ``now``."""
    tz = settings.schedule.tz
    local = now.astimezone(tz)
    firing = dt.datetime.combine(local.date(), settings.schedule.time_of_day, tzinfo=tz)
    if firing > local:
        firing = dt.datetime.combine(local.date() - dt.timedelta(days=1), settings.schedule.time_of_day, tzinfo=tz)
    return firing


def next_firing(settings: Settings, now: dt.datetime) -> dt.datetime:
    """The next time the daemon fires after ``now``, as APScheduler's trigger computes it. `digest status`
    asks this, and importing APScheduler costs it 0.05 s of CPU: away from a change of the clocks the
    firing is plainly today's or tomorrow's time of day; near one, APScheduler's own answer (it skips a
    day whose time the clocks jump over at midnight, and keeps 02:30 at the old offset at 02:00)."""
    after = now + dt.timedelta(seconds=1)
    tz, at = settings.schedule.tz, settings.schedule.time_of_day
    day = after.astimezone(tz).date()
    firing = dt.datetime.combine(day, at, tzinfo=tz)
    if firing < after:
        firing = dt.datetime.combine(day + dt.timedelta(days=1), at, tzinfo=tz)
    noons = [dt.datetime.combine(day + dt.timedelta(days=n), dt.time(12), tzinfo=tz) for n in range(-1, 3)]
    if len({moment.utcoffset() for moment in [*noons, after.astimezone(tz)]}) == 1:
        return firing
    return schedule_trigger(settings).get_next_fire_time(None, after)


def next_run(settings: Settings, now: dt.datetime) -> dt.datetime:
    """The next firing that owes an announcement day: the daemon fires every day, but on a weekend or an
    arXiv holiday it has nothing to fetch, so those firings are not "runs"."""
    calendar = Calendar.from_settings(settings)
    firing = next_firing(settings, now)
    while not calendar.expected(announcement_day_at(firing)):
        firing = next_firing(settings, firing)
    return firing


# -- which days are owed --------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a firing (or a start) owes: past announcement days not settled, the feed day to poll for
    (None when settled, or no announcement day), a holiday weekday to look at once, and the time to
    give up polling."""

    missed: list[dt.date] = field(default_factory=list)
    due: dt.date | None = None
    look: dt.date | None = None
    deadline: dt.datetime | None = None
    firing: dt.datetime | None = None


def plan_work(db, settings: Settings, now: dt.datetime, calendar: Calendar | None = None) -> Plan:
    """Work out, from the database alone, which announcement days are owed at ``now``.

    A missed day is an expected feed day after the first day ever covered (so a fresh install does not
    send a week of old digests), at most ``schedule.catch_up_days`` before the due day, and not settled:
    not fetched, or fetched with papers still owed to a profile.
    """
    calendar = calendar or Calendar.from_settings(settings)
    firing = last_firing(settings, now)
    day = announcement_day_at(firing)
    first = ledger.first_day(db)
    missed = []
    if first is not None:
        oldest = max(first + dt.timedelta(days=1), day - dt.timedelta(days=settings.schedule.catch_up_days))
        missed = [d for d in calendar.announcement_days(oldest, day - dt.timedelta(days=1))
                  if not ledger.day_settled(db, settings, d)]
    plan = Plan(missed, deadline=firing + dt.timedelta(seconds=settings.schedule.give_up_after), firing=firing)
    if not ledger.day_settled(db, settings, day, due=True):
        if calendar.expected(day):
            plan.due = day
        elif day.weekday() < 5:
            plan.look = day
    return plan


def why_not_settled(db, settings: Settings, day: dt.date) -> str:
    """For the poll's log and the give-up message: how the feed looked at the last fetch, or what is
    still owed."""
    if day_fetched(db, day, settings.feed_categories()) == "announced":
        owed = len(ledger.owed_on(db, settings, day, due=True))
        error = last_error_of_day(db, day)
        return f"{plural(owed, 'paper')} of {day} in no digest yet" + (f" (last error: {error})" if error else "")
    row = latest_feed_fetch(db)
    if row is None:
        return "arXiv's feed was never fetched"
    status, shown, error = row
    if status == "announced":
        return f"arXiv's feed still showed {shown}"
    if status == "empty":
        return "arXiv's feed was still empty"
    return f"fetching arXiv's feed still failed: {error}"


def undelivered(db, settings: Settings, day: dt.date) -> list[dict]:
    """Outbox rows not sent of the digests that cover ``day``."""
    ids = [d.id for name in settings.profiles for d in ledger.covering(db, name, day)]
    return [row for row in outbox.for_digests(db, ids) if row["status"] != "sent"]
