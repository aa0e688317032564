"""arXiv's search API (``export.arxiv.org/api/query``): papers by id, and backfilling past days.

We read the API's Atom answers ourselves, with the same hardened parser as the feed, rather than through
the ``arxiv`` package: that package reads a maintenance page, an HTML proxy error or a damaged document
as "no results", and a day backfilled from such an answer would have been recorded as announcing nothing.
Here an answer that is not an API document (no ``opensearch:totalResults``) is a failed fetch.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Callable

import requests

from ..config import Settings
from ..records import Announcement, Paper
from ..storage.papers import day_fetched, later_feed_days, previous_feed_day, save_announcements
from ..taxonomy import ARCHIVES, CategoryExpression
from ..text import plural
from .atom import (
    ARXIV_NS,
    ATOM,
    OPENSEARCH,
    EntryProblem,
    FeedError,
    atom_root,
    error_text,
    iso_stamp,
    text,
)
from .calendar import Calendar
from .feed import FetchResult, record
from .http import ArxivError, session_for, where
from .ids import InvalidArxivId, normalize_id, title_key

log = logging.getLogger("digest.arxiv")

API_PAGE_SIZE = 2000  # arXiv's maximum page
ID_BATCH = 100  # ids asked for in one request


@dataclass
class ApiPage:
    """One page of an API answer: how many results the query has in all, and this page's papers."""

    total: int
    start: int
    papers: list[Paper] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def get_api(settings: Settings, session: requests.Session, params: dict) -> bytes:
    """One raw API answer. Raises :class:`ArxivError` with what arXiv said."""
    response = session.get(settings.arxiv.api_url, params=params)
    if response.status_code == 200:
        return response.content
    if response.status_code == 400:
        raise ArxivError(f"arXiv's API answered HTTP 400: {error_text(response.content)}")
    raise ArxivError(f"{where(settings.arxiv.api_url)}: HTTP {response.status_code} from arXiv's API")


def parse_api(xml: bytes) -> ApiPage:
    """An API answer -> its papers. Pure. Raises :class:`FeedError` when ``xml`` is not an API answer."""
    root = atom_root(xml)
    total = text(root.find(f"{OPENSEARCH}totalResults"))
    if not total.isdigit():
        raise FeedError("the answer is not from arXiv's API (it has no opensearch:totalResults)")
    start = text(root.find(f"{OPENSEARCH}startIndex"))
    page = ApiPage(total=int(total), start=int(start) if start.isdigit() else 0)
    for position, entry in enumerate(root.findall(f"{ATOM}entry")):
        try:
            page.papers.append(_paper(entry))
        except EntryProblem as exc:
            page.problems.append(f"entry {page.start + position + 1} ({exc.label}): {exc}")
    return page


def _paper(entry) -> Paper:
    link = text(entry.find(f"{ATOM}id"))
    try:
        paper_id, version = normalize_id(link)
    except InvalidArxivId:
        raise EntryProblem(link[:60] or "no id", "its <id> is not an arXiv id") from None
    title = text(entry.find(f"{ATOM}title"))
    abstract = text(entry.find(f"{ATOM}summary"))
    categories = list(dict.fromkeys(c.get("term", "").strip() for c in entry.findall(f"{ATOM}category")
                                    if c.get("term", "").strip()))
    missing = [name for name, value in (("title", title), ("abstract", abstract), ("category", categories))
               if not value]
    if missing:
        raise EntryProblem(paper_id, "missing " + ", ".join(missing))
    primary = entry.find(f"{ARXIV_NS}primary_category")
    return Paper(
        id=paper_id,
        version=version or 1,
        title=title,
        abstract=abstract,
        authors=[text(a.find(f"{ATOM}name")) for a in entry.findall(f"{ATOM}author") if text(a.find(f"{ATOM}name"))],
        categories=categories,
        primary_category=(primary.get("term", "").strip() if primary is not None else "") or categories[0],
        published=iso_stamp(text(entry.find(f"{ATOM}published"))),
        updated=iso_stamp(text(entry.find(f"{ATOM}updated"))),
        comment=text(entry.find(f"{ARXIV_NS}comment")) or None,
        journal_ref=text(entry.find(f"{ARXIV_NS}journal_ref")) or None,
        doi=text(entry.find(f"{ARXIV_NS}doi")) or None,
    )


def search(settings: Settings, session: requests.Session, params: dict,
           page_size: int = API_PAGE_SIZE) -> tuple[list[Paper], list[str]]:
    """Every result of one query, page by page: (papers, problems with single entries)."""
    papers: list[Paper] = []
    problems: list[str] = []
    start = 0
    while True:
        page = parse_api(get_api(settings, session, {**params, "start": start, "max_results": page_size}))
        papers += page.papers
        problems += page.problems
        got = len(page.papers) + len(page.problems)
        start += got
        if start >= page.total:
            return papers, problems
        if got == 0:
            raise ArxivError(f"arXiv's API returned an empty page at result {start + 1} of {page.total}")


# -- papers by id ------------------------------------------------------------------------------------

def fetch_papers(settings: Settings, ids: list[str], *, session: requests.Session | None = None,
                 raise_errors: bool = False) -> tuple[list[Paper], list[str]]:
    """Papers by id from the API: (found, missing ids). Invalid ids count as missing.

    Degrades instead of failing: when arXiv cannot be reached every id not yet found is missing
    and a warning is logged, unless ``raise_errors`` (``digest show``), which raises ArxivError.
    """
    wanted: dict[str, str] = {}  # what to ask for -> the id as given
    for given in ids:
        try:
            paper_id, version = normalize_id(given)
        except InvalidArxivId as exc:
            log.warning("%s", exc)
            continue
        wanted[f"{paper_id}v{version}" if version else paper_id] = given
    found: list[Paper] = []
    asked = list(wanted)
    with session_for(settings, session) as polite:
        for start in range(0, len(asked), ID_BATCH):
            batch = asked[start:start + ID_BATCH]
            try:
                papers, _ = search(settings, polite, {"search_query": "", "id_list": ",".join(batch)},
                                   page_size=ID_BATCH)
                found += papers
            except (ArxivError, FeedError) as exc:
                if raise_errors:
                    raise ArxivError(str(exc)) from None
                log.warning("fetching %d papers by id failed: %s", len(batch), exc)
    got = {p.id for p in found} | {f"{p.id}v{p.version}" for p in found}
    missing = [given for given in ids if not _was_found(given, got)]
    return found, missing


def find_by_title(settings: Settings, title: str, *, session: requests.Session | None = None) -> Paper | None:
    """The paper whose title is exactly ``title`` (case, punctuation and spacing aside), or None. For a
    library entry with no arXiv id (digest/library.py). Raises ArxivError when arXiv cannot answer."""
    wanted = title_key(title)
    with session_for(settings, session) as polite:
        try:  # one page only: the exact title, when arXiv has it, is among the first answers
            page = parse_api(get_api(settings, polite, {"search_query": f'ti:"{wanted}"', "start": 0,
                                                        "max_results": 10}))
        except FeedError as exc:
            raise ArxivError(str(exc)) from None
    return next((p for p in page.papers if title_key(p.title) == wanted), None)


def _was_found(given: str, got: set[str]) -> bool:
    try:
        paper_id, version = normalize_id(given)
    except InvalidArxivId:
        return False
    return (f"{paper_id}v{version}" if version else paper_id) in got


# -- backfilling past days ---------------------------------------------------------------------------

def _category_query(categories: list[str]) -> str:
    terms = [f"cat:{c}.*" if c in ARCHIVES and "." not in c else f"cat:{c}" for c in categories]
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M")


def backfill_query(calendar: Calendar, categories: list[str], day: dt.date) -> str:
    """The API query for the new submissions announced on feed day ``day`` (times in GMT, as the API wants)."""
    start, end = calendar.submission_window(day)
    last_minute = end - dt.timedelta(minutes=1)  # the API's range includes both ends
    return f"{_category_query(categories)} AND submittedDate:[{_stamp(start)} TO {_stamp(last_minute)}]"


def parse_backfill(calendar: Calendar, papers: list[Paper], day: dt.date,
                   categories: list[str]) -> list[Announcement]:
    """API results -> the day's announcements, in id order (arXiv's listing order for new papers).

    A paper whose submission time maps to another day is left out: the window is only a query.
    """
    expression = CategoryExpression(tuple(categories), ())
    chosen = []
    for paper in sorted({p.id: p for p in papers}.values(), key=lambda p: p.id):
        if paper.published and calendar.announced_on_for(dt.datetime.fromisoformat(paper.published)) != day:
            continue
        kind = "new" if expression.matches([paper.primary_category]) else "cross"
        chosen.append(Announcement(paper=paper, announced_on=day, kind=kind, position=len(chosen)))
    return chosen


def backfill(db, settings: Settings, start: dt.date, end: dt.date, *, calendar: Calendar | None = None,
             progress: Callable[[dt.date, FetchResult], None] | None = None,
             session: requests.Session | None = None, refetch: bool = False) -> dict:
    """Fill the history of feed days ``start``..``end`` from the API (source "api").

    Days already fetched for these categories are skipped unless ``refetch``. Returns counts: days,
    announced, empty, failed, skipped, papers, and the errors.
    """
    calendar = calendar or Calendar.from_settings(settings)
    categories = settings.feed_categories()
    summary = {"days": 0, "announced": 0, "empty": 0, "failed": 0, "skipped": 0, "papers": 0, "errors": []}
    with session_for(settings, session) as polite:
        for day in calendar.announcement_days(start, end):
            summary["days"] += 1
            if not refetch and day_fetched(db, day, categories) == "announced":
                summary["skipped"] += 1
                result = FetchResult("stored", day)  # already complete; not recorded again
            else:
                result = backfill_day(db, settings, polite, day, categories, calendar)
                summary[result.status] += 1
                summary["papers"] += result.count
                if result.error:
                    summary["errors"].append(f"{day}: {result.error}")
            if progress:
                progress(day, result)
    return summary


def backfill_day(db, settings: Settings, session: requests.Session, day: dt.date, categories: list[str],
                 calendar: Calendar) -> FetchResult:
    """One past feed day from the API, recorded in ``fetches`` as announced, empty or failed.

    "Empty" needs arXiv's word for it: the day's submissions were all announced on a later day of the
    feed (the day was skipped: a holiday the calendar did not know). No result at all on a day the
    calendar expects is a failure, retried at the next run, never an empty day.
    """
    query = "+".join(categories)
    try:
        papers, problems = search(settings, session, {"search_query": backfill_query(calendar, categories, day),
                                                      "sortBy": "submittedDate", "sortOrder": "ascending"})
    except (ArxivError, FeedError) as exc:
        return record(db, query, FetchResult("failed", day, error=str(exc)), source="api")
    for problem in problems:
        log.warning("backfill %s: skipped %s", day, problem)
    announcements = parse_backfill(calendar, papers, day, categories)
    if not announcements:
        error = (f"arXiv's API returned no paper for {day}, a day arXiv should have announced"
                 + (f" ({len(problems)} malformed entries)" if problems else ""))
        return record(db, query, FetchResult("failed", day, skipped=len(problems), error=error), source="api")
    later = later_feed_days(db, [a.paper.id for a in announcements], day)
    if len(later) == len(announcements):
        before = previous_feed_day(db, day)
        went = f"the feed went from {before} to {min(later.values())}" if before else \
            f"its submissions were announced on {min(later.values())}"
        return record(db, query, FetchResult("empty", day, detail=f"not announced ({went})"), source="api")
    save_announcements(db, announcements, source="api")
    kinds = dict(collections.Counter(a.kind for a in announcements))
    return record(db, query, FetchResult("announced", day, count=len(announcements), kinds=kinds,
                                         skipped=len(problems)), source="api")


def describe_backfill(start: dt.date, end: dt.date, summary: dict) -> str:
    """One line: ``2026-06-22..2026-06-26: 5 announcement days, 1,204 papers stored (1 already stored)``."""
    parts = [plural(summary["days"], "announcement day"), f"{plural(summary['papers'], 'paper')} stored"]
    if summary["skipped"]:
        parts.append(f"{summary['skipped']} already stored")
    if summary["empty"]:
        parts.append(f"{summary['empty']} with nothing announced")
    if summary["failed"]:
        parts.append(f"{summary['failed']} failed")
    return f"{start}..{end}: " + ", ".join(parts)
