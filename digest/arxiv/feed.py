"""The daily Atom feed (``rss.arxiv.org/atom/<cats>``): the source of each day's digest.

One feed request covers every configured category and shows one announcement day: the latest. What it
said is recorded in ``fetches``, so a day arXiv positively announced nothing on (the feed's own empty
answer) is told apart from a failed fetch, which is retried.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import re
from dataclasses import dataclass, field

import requests

from ..config import Settings
from ..records import ANNOUNCE_TYPES, Announcement, Paper, is_replacement
from ..storage.papers import record_fetch, save_announcements
from ..text import plural
from .atom import (
    ARXIV_NS,
    ATOM,
    DC,
    EntryProblem,
    FeedError,
    atom_root,
    error_text,
    et_day,
    text,
)
from .http import ArxivError, session_for, where
from .ids import InvalidArxivId, normalize_id

log = logging.getLogger("digest.arxiv")


def feed_url(settings: Settings, categories: list[str]) -> str:
    return settings.arxiv.feed_url.rstrip("/") + "/" + "+".join(categories)


def get_feed(settings: Settings, categories: list[str], session: requests.Session) -> bytes:
    """The raw feed for ``categories``. Raises :class:`ArxivError` (or FeedError for arXiv's 400)."""
    url = feed_url(settings, categories)
    response = session.get(url)
    if response.status_code == 200:
        return response.content
    query = "+".join(categories)
    if response.status_code == 400:
        raise FeedError(f"arXiv's feed rejected the categories {query}: {error_text(response.content)}")
    hint = f" (Retry-After: {response.headers['Retry-After']})" if response.headers.get("Retry-After") else ""
    raise ArxivError(f"{where(url)}: HTTP {response.status_code} from arXiv{hint}")


@dataclass
class FeedParse:
    """A parsed feed: the day it announces, its entries in listing order, and what was skipped."""

    announced_on: dt.date | None
    announcements: list[Announcement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


_SUMMARY_HEAD = re.compile(r"^\s*arXiv:\S+\s+Announce Type:\s*(?P<kind>[\w-]+)\s*\n?\s*(?:Abstract:\s*)?", re.S)


def parse_feed(xml: bytes) -> FeedParse:
    """Turn a feed into announcements. Pure. Raises :class:`FeedError` when ``xml`` is not a feed.

    One malformed entry is skipped with a line in ``problems`` naming it and what it lacks; the
    others are kept.
    """
    root = atom_root(xml)
    entries = root.findall(f"{ATOM}entry")
    fields, problems = [], []
    for position, entry in enumerate(entries):
        try:
            fields.append((position, _entry_fields(entry)))
        except EntryProblem as exc:
            problems.append(f"entry {position + 1} ({exc.label}): {exc}")
    day = _feed_day(root, [f for _, f in fields])
    announcements, seen = [], set()
    for position, f in fields:
        if f["id"] in seen:
            continue
        seen.add(f["id"])
        announcements.append(Announcement(paper=f["paper"], announced_on=day, kind=f["kind"], position=position))
    return FeedParse(announced_on=day if announcements or fields else None, announcements=announcements,
                     problems=problems)


def _entry_fields(entry) -> dict:
    guid = text(entry.find(f"{ATOM}id"))
    if not guid:
        raise EntryProblem("no id", "missing <id>")
    try:
        paper_id, version = normalize_id(guid)
    except InvalidArxivId:
        raise EntryProblem(guid[:60], "its <id> is not an arXiv id") from None
    summary_element = entry.find(f"{ATOM}summary")
    summary = "".join(summary_element.itertext()) if summary_element is not None else ""
    head = _SUMMARY_HEAD.match(summary)
    kind = text(entry.find(f"{ARXIV_NS}announce_type")) or (head["kind"] if head else "")
    abstract = " ".join(summary[head.end():].split()) if head else " ".join(summary.split())
    title = text(entry.find(f"{ATOM}title"))
    categories = [c.get("term", "").strip() for c in entry.findall(f"{ATOM}category") if c.get("term", "").strip()]
    missing = [name for name, value in (("title", title), ("abstract", abstract), ("category", categories),
                                        ("announce type", kind)) if not value]
    if missing:
        raise EntryProblem(paper_id, "missing " + ", ".join(missing))
    if kind not in ANNOUNCE_TYPES:
        raise EntryProblem(paper_id, f'unknown announce type "{kind[:30]}"')
    authors = [a.strip() for a in text(entry.find(f"{DC}creator")).split(",") if a.strip()]
    paper = Paper(id=paper_id, version=version or 1, title=title, abstract=abstract, authors=authors,
                  categories=list(dict.fromkeys(categories)), primary_category=categories[0])
    return {"id": paper_id, "paper": paper, "kind": kind, "published": et_day(text(entry.find(f"{ATOM}published")))}


def _feed_day(root, fields: list[dict]) -> dt.date | None:
    """The announcement day: the entries' ``published`` (midnight ET), else the feed's ``updated``."""
    days = collections.Counter(f["published"] for f in fields if f["published"])
    if days:
        return days.most_common(1)[0][0]
    return et_day(text(root.find(f"{ATOM}updated")))


# -- fetching and recording a day -----------------------------------------------------------------

@dataclass
class FetchResult:
    """What one fetch found. ``status``: "announced", "empty" (arXiv positively announced nothing:
    a weekend, a holiday, nothing in these categories; ``detail`` says how we know) or "failed" (with
    ``error``, one line). ``announced_on`` is the day the answer speaks for, when it is known."""

    status: str
    announced_on: dt.date | None = None
    count: int = 0
    skipped: int = 0
    error: str | None = None
    detail: str | None = None
    kinds: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def fetch_announcements(db, settings: Settings, *, session: requests.Session | None = None) -> FetchResult:
    """Fetch the current feed for every configured category, store it, and record the fetch.

    Never raises for an arXiv or network failure: that is a "failed" fetch with its reason. Fetching
    the same day again changes no paper or announcement.
    """
    categories = settings.feed_categories()
    query = "+".join(categories)
    try:
        with session_for(settings, session) as polite:
            parsed = parse_feed(get_feed(settings, categories, polite))
    except (ArxivError, FeedError) as exc:
        return record(db, query, FetchResult("failed", error=str(exc)))
    for problem in parsed.problems:
        log.warning("feed %s: skipped %s", query, problem)
    if not parsed.announcements:
        if parsed.problems:
            error = f"all {len(parsed.problems)} entries of the feed were malformed; first: {parsed.problems[0]}"
            return record(db, query, FetchResult("failed", parsed.announced_on, skipped=len(parsed.problems),
                                                 error=error, problems=parsed.problems))
        # The feed's own "nothing new" answer. It names no day, and on a weekday it settles nothing: arXiv
        # may be late. A day counts as not announced only by the calendar, or when the API shows its
        # submissions announced on a later day (api.backfill_day).
        return record(db, query, FetchResult("empty", detail="its feed listed no entry: a weekend or a holiday"))
    save_announcements(db, parsed.announcements, source="feed")
    kinds = collections.Counter(a.kind for a in parsed.announcements)
    return record(db, query, FetchResult("announced", parsed.announced_on, count=len(parsed.announcements),
                                         skipped=len(parsed.problems), kinds=dict(kinds), problems=parsed.problems))


def record(db, categories: str, result: FetchResult, source: str = "feed") -> FetchResult:
    """The fetches row for ``result``, and its one log line."""
    record_fetch(db, announced_on=result.announced_on, categories=categories, source=source,
                     status=result.status, entries=result.count, skipped=result.skipped, error=result.error,
                     detail=result.detail)
    if result.status == "failed":
        log.error("fetch %s (%s): failed: %s", categories, source, result.error)
    elif result.status == "empty":
        log.info("fetch %s (%s): nothing announced%s: %s", categories, source,
                 f" on {result.announced_on}" if result.announced_on else "", result.detail)
    else:
        log.info("fetch %s (%s): %s announced, %s", categories, source, result.announced_on,
                 plural(result.count, "paper"))
    return result


def describe_fetch(result: FetchResult) -> str:
    """One line for the user: ``2026-06-23: 537 papers announced (412 new, 125 cross-lists)``."""
    if result.status == "empty":
        on = f" on {result.announced_on}" if result.announced_on else " today"
        return f"arXiv announced nothing{on} ({result.detail or 'a weekend or a holiday'})"
    if result.status == "failed":
        return f"fetching arXiv failed: {result.error}"
    parts = [f"{result.kinds.get('new', 0)} new", plural(result.kinds.get('cross', 0), "cross-list")]
    replaced = sum(count for kind, count in result.kinds.items() if is_replacement(kind))
    if replaced:
        parts.append(plural(replaced, "replacement"))
    skipped = f"; {plural(result.skipped, 'malformed entry', 'malformed entries')} skipped" if result.skipped else ""
    return f"{result.announced_on}: {plural(result.count, 'paper')} announced ({', '.join(parts)}){skipped}"
