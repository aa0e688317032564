"""Talking to arXiv: ``get_*`` functions do HTTP, ``parse_*`` functions turn bytes into records (pure).

Sources: the daily Atom feed (``rss.arxiv.org/atom/<cats>``) is the source of each day's digest; the
API (through the ``arxiv`` package) serves papers asked for by id and backfills past days.

Every request goes through one :class:`PoliteSession`: one request at a time in the whole process,
``arxiv.min_interval`` seconds apart, a timeout, a User-Agent naming the project and the operator,
and retries with exponential backoff that honour Retry-After on 429/503.
"""

from __future__ import annotations

import collections
import datetime as dt
import email.utils
import logging
import re
import threading
import time
import zoneinfo
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Callable

import arxiv as arxiv_api
import requests
from lxml import etree

from . import db as dbm
from .config import Settings
from .records import ANNOUNCE_TYPES, Announcement, Paper
from .taxonomy import ARCHIVES, CategoryExpression

log = logging.getLogger("digest.arxiv")

ET = zoneinfo.ZoneInfo("America/New_York")
ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV_NS = "{http://arxiv.org/schemas/atom}"
DC = "{http://purl.org/dc/elements/1.1/}"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 600.0  # seconds; a longer wait is reported as a failure rather than blocking a run
API_PAGE_SIZE = 2000  # arXiv's maximum page; a day of even the busiest categories fits in one


class ArxivError(Exception):
    """arXiv could not be reached or refused a request; the message is one line for the user."""


class FeedError(ArxivError):
    """The answer is not a usable feed: an HTML page, truncated XML, or arXiv's "Feed error"."""


class InvalidArxivId(ValueError):
    pass


# -- identifiers ------------------------------------------------------------------------------------

_NEW_STYLE = re.compile(r"(?P<id>\d{2}(?:0[1-9]|1[0-2])\.\d{4,5})(?:v(?P<v>[1-9]\d*))?")
# Old style: archive, optional subject class (dropped: the id is archive/YYMMNNN), seven digits.
_OLD_STYLE = re.compile(r"(?P<archive>[a-z]+(?:-[a-z]+)?)(?:\.[A-Za-z-]{2,})?/(?P<num>\d{2}(?:0[1-9]|1[0-2])\d{3})"
                        r"(?:v(?P<v>[1-9]\d*))?")
_PREFIXES = re.compile(
    r"^(?:oai:arxiv\.org:|arxiv:|(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/)", re.IGNORECASE)


def normalize_id(text: str) -> tuple[str, int | None]:
    """``"2401.01234v2"`` -> ``("2401.01234", 2)``; ``"hep-th/9901001"`` -> ``("hep-th/9901001", None)``.

    Accepts an ``arXiv:`` prefix, the feed's ``oai:arXiv.org:`` guid, and abs/pdf URLs.
    """
    cleaned = _PREFIXES.sub("", text.strip())
    cleaned = cleaned.removesuffix(".pdf").rstrip("/")
    match = _NEW_STYLE.fullmatch(cleaned)
    if match:
        return match["id"], int(match["v"]) if match["v"] else None
    match = _OLD_STYLE.fullmatch(cleaned)
    if match:
        return f"{match['archive']}/{match['num']}", int(match["v"]) if match["v"] else None
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise InvalidArxivId(f'"{shown}" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)')


# -- the announcement schedule ----------------------------------------------------------------------

# Days on which arXiv's feed announces nothing although they are weekdays (arXiv's published schedule).
HOLIDAYS = frozenset(dt.date.fromisoformat(d) for d in (
    "2026-01-01", "2026-01-19", "2026-06-19", "2026-07-03", "2026-09-07", "2026-11-26", "2026-12-25",
    "2026-12-29", "2026-12-31",
))
SUBMISSION_DEADLINE = dt.time(14, 0)  # ET


def expected_announcement(day: dt.date) -> bool:
    """Whether the feed should carry an announcement dated ``day``: a weekday that is no arXiv holiday.

    ``day`` is a *feed day*: the date the feed stamps on an announcement (midnight ET), which is the
    morning after arXiv's Sun-Thu 20:00 ET mailing, so feed days run Monday to Friday.
    """
    return day.weekday() < 5 and day not in HOLIDAYS


def announcement_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every expected feed day from ``start`` to ``end``, both included."""
    days = []
    day = start
    while day <= end:
        if expected_announcement(day):
            days.append(day)
        day += dt.timedelta(days=1)
    return days


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


def next_announcement(day: dt.date) -> dt.date:
    """The first expected feed day on or after ``day``."""
    while not expected_announcement(day):
        day += dt.timedelta(days=1)
    return day


def announced_on_for(submitted: dt.datetime) -> dt.date:
    """The feed day that announces a paper submitted at ``submitted`` (an aware datetime).

    arXiv's rule (info.arxiv.org/help/availability): submissions are due on weekdays at 14:00 ET and
    go out in the 20:00 ET mailing of the same day, except Friday's, which go out on Sunday:

        Mon 14:00 - Tue 14:00  ->  mailed Tue 20:00  ->  feed day Wed
        Thu 14:00 - Fri 14:00  ->  mailed Sun 20:00  ->  feed day Mon
        Fri 14:00 - Mon 14:00  ->  mailed Mon 20:00  ->  feed day Tue

    So a submission belongs to the next weekday deadline at or after it, and is announced on the
    feed day of the weekday following that deadline. A holiday feed day announces nothing; its
    papers move to the next expected feed day. (Moderation can still hold a paper back a day.)
    """
    local = submitted.astimezone(ET)
    deadline_day = local.date()
    if deadline_day.weekday() >= 5 or local.time() >= SUBMISSION_DEADLINE:
        deadline_day = _next_weekday(deadline_day)
    return next_announcement(_next_weekday(deadline_day))


def submission_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in ET of the submissions announced on feed day ``day`` (an expected day).

    The window ends at the deadline on the weekday before ``day`` and starts at the deadline that
    closed the previous expected feed day, so a holiday's submissions fall into the next day's window.
    """
    if not expected_announcement(day):
        raise ValueError(f"{day} is not an arXiv announcement day")
    previous = day - dt.timedelta(days=1)
    while not expected_announcement(previous):
        previous -= dt.timedelta(days=1)
    end = dt.datetime.combine(_previous_weekday(day), SUBMISSION_DEADLINE, tzinfo=ET)
    start = dt.datetime.combine(_previous_weekday(previous), SUBMISSION_DEADLINE, tzinfo=ET)
    return start, end


# -- the polite HTTP layer --------------------------------------------------------------------------

class RequestGate:
    """One request to arXiv at a time in the whole process, and a minimum pause between two.

    arXiv's limit is per client machine, not per caller, so there is one gate per process
    (:data:`GATE`), shared by the feed, the API client and anything else that talks to arXiv.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.last_finished: float | None = None

    def pause(self, min_interval: float, at_least: float = 0.0) -> None:
        """Sleep until ``min_interval`` has passed since the last request ended (and ``at_least``)."""
        wait = at_least
        if self.last_finished is not None:
            wait = max(wait, self.last_finished + min_interval - time.monotonic())
        if wait > 0:
            time.sleep(wait)


GATE = RequestGate()


def user_agent(settings: Settings) -> str:
    try:
        own_version = package_version("digest")
    except PackageNotFoundError:
        own_version = "0"
    contact = settings.arxiv.contact or "no contact configured"
    return f"digest/{own_version} (mailto:{contact})"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class PoliteSession(requests.Session):
    """A requests session that is polite to arXiv on every request, whoever makes it.

    The ``arxiv`` package sets no timeout and its own User-Agent; giving its client this session
    (``client._session``) puts the package's requests under the same gate, timeout and retries.
    ``last_response`` keeps the final answer so an error can quote what arXiv said.
    """

    def __init__(self, settings: Settings, gate: RequestGate = GATE):
        super().__init__()
        self.arxiv = settings.arxiv
        self.gate = gate
        self.headers["User-Agent"] = user_agent(settings)
        self.last_response: requests.Response | None = None

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.arxiv.timeout)
        headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items() if k.lower() != "user-agent"}
        with self.gate.lock:
            response = self._with_retries(method, url, headers, kwargs)
        self.last_response = response
        return response

    def _with_retries(self, method, url, headers, kwargs) -> requests.Response:
        wait_for = 0.0
        for attempt in range(self.arxiv.retries + 1):
            self.gate.pause(self.arxiv.min_interval, wait_for)
            last_try = attempt == self.arxiv.retries
            try:
                response = super().request(method, url, headers=headers, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                self.gate.last_finished = time.monotonic()
                if last_try:
                    raise ArxivError(f"{_where(url)}: {_network_reason(exc)} after {attempt + 1} attempts") from None
                wait_for = self._backoff(attempt)
                log.warning("%s: %s; retrying in %.1fs", _where(url), _network_reason(exc), wait_for)
                continue
            self.gate.last_finished = time.monotonic()
            if response.status_code not in RETRY_STATUSES or last_try:
                return response
            asked = retry_after_seconds(response.headers.get("Retry-After"))
            if asked is not None and asked > MAX_RETRY_AFTER:
                return response
            wait_for = max(asked or 0.0, self._backoff(attempt))
            response.close()
            log.warning("%s: HTTP %d; retrying in %.1fs", _where(url), response.status_code, wait_for)
        raise AssertionError("unreachable")  # the loop returns or raises on its last try

    def _backoff(self, attempt: int) -> float:
        """Exponential, starting at the configured spacing (3 s against arXiv: 3, 6, 12, 24 ...)."""
        return max(self.arxiv.min_interval, 0.05) * 2 ** attempt


def _where(url: str) -> str:
    return url.split("?")[0]


def _network_reason(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "IncompleteRead" in text or "Response ended prematurely" in text:
        return "the response was cut off"
    return f"connection failed ({type(exc).__name__})"


@contextmanager
def _session_for(settings: Settings, session: requests.Session | None):
    own = session is None
    session = session or PoliteSession(settings)
    try:
        yield session
    finally:
        if own:
            session.close()


# -- full text (for llm.full_text) ----------------------------------------------------------------

def get_full_text(settings: Settings, paper: Paper, session: requests.Session) -> bytes | None:
    """arXiv's HTML rendering of ``paper`` at its version, or None where arXiv has none (HTTP 404:
    older papers and those whose LaTeX did not convert). Other failures raise :class:`ArxivError`."""
    url = f"{settings.arxiv.html_url.rstrip('/')}/{paper.id}v{paper.version}"
    response = session.get(url)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise ArxivError(f"{_where(url)}: HTTP {response.status_code} from arXiv")
    return response.content


def parse_full_text(html_bytes: bytes) -> str:
    """The readable text of an arXiv HTML paper: paragraphs and headings, without scripts, styles,
    navigation or the bibliography (which would spend the token cap on references)."""
    extractor = _TextExtractor()
    extractor.feed(html_bytes.decode("utf-8", errors="replace"))
    extractor.close()
    return re.sub(r"[ \t]+", " ", "\n".join(extractor.lines)).strip()


class _TextExtractor(HTMLParser):
    SKIP = {"script", "style", "nav", "header", "footer", "math", "button", "svg"}
    BREAK = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "br", "tr", "figcaption"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.skipping = 0
        self.in_bibliography = False
        self.current = ""

    def handle_starttag(self, tag, attrs):
        classes = dict(attrs).get("class") or ""
        if tag in self.SKIP:
            self.skipping += 1
        if "ltx_bibliography" in classes:
            self.in_bibliography = True
        if tag in self.BREAK:
            self._flush()

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        if tag in self.BREAK:
            self._flush()

    def handle_data(self, data):
        if not self.skipping and not self.in_bibliography:
            self.current += data

    def _flush(self):
        if self.current.strip():
            self.lines.append(" ".join(self.current.split()))
        self.current = ""

    def close(self):
        super().close()
        self._flush()


def full_text_fetcher(settings: Settings) -> Callable[[Paper], str | None]:
    """``fetch_text(paper)`` for the summarizer: polite like every arXiv request, None when missing."""

    def fetch_text(paper: Paper) -> str | None:
        with _session_for(settings, None) as session:
            body = get_full_text(settings, paper, session)
        return parse_full_text(body) if body else None

    return fetch_text


# -- the feed -----------------------------------------------------------------------------------------

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
        raise FeedError(f"arXiv's feed rejected the categories {query}: {_error_text(response.content)}")
    hint = f" (Retry-After: {response.headers['Retry-After']})" if response.headers.get("Retry-After") else ""
    raise ArxivError(f"{_where(url)}: HTTP {response.status_code} from arXiv{hint}")


def _error_text(body: bytes) -> str:
    """What arXiv's error document says, in one short line."""
    try:
        parse_feed(body)
    except FeedError as exc:
        return str(exc)
    return "HTTP 400"


@dataclass
class FeedParse:
    """A parsed feed: the day it announces, its entries in listing order, and what was skipped."""

    announced_on: dt.date | None
    announcements: list[Announcement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


_XML_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)
_SUMMARY_HEAD = re.compile(r"^\s*arXiv:\S+\s+Announce Type:\s*(?P<kind>[\w-]+)\s*\n?\s*(?:Abstract:\s*)?", re.S)


def parse_feed(xml: bytes) -> FeedParse:
    """Turn a feed into announcements. Pure. Raises :class:`FeedError` when ``xml`` is not a feed.

    One malformed entry is skipped with a line in ``problems`` naming it and what it lacks; the
    others are kept.
    """
    root = _feed_root(xml)
    _raise_if_error_document(root)
    entries = root.findall(f"{ATOM}entry")
    fields, problems = [], []
    for position, entry in enumerate(entries):
        try:
            fields.append((position, _entry_fields(entry)))
        except _EntryProblem as exc:
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


def _raise_if_error_document(root) -> None:
    """arXiv reports errors inside a feed: the RSS service titles it "Feed error for query: ...",
    the API sends one entry whose id points at api/errors and whose summary says what is wrong."""
    title = _text(root.find(f"{ATOM}title"))
    if title.lower().startswith("feed error"):
        raise FeedError(title)
    first = root.find(f"{ATOM}entry")
    if first is not None and "/api/errors" in _text(first.find(f"{ATOM}id")):
        raise FeedError(_text(first.find(f"{ATOM}summary")) or "arXiv reported an error")


def _feed_root(xml: bytes):
    if not isinstance(xml, (bytes, bytearray)):
        raise FeedError(f"expected the feed as bytes, got {type(xml).__name__}")
    head = bytes(xml[:512]).lstrip().lower()
    if head.startswith(b"<!doctype html") or head.startswith(b"<html"):
        raise FeedError(f"arXiv answered with an HTML page instead of a feed{_html_headline(xml)}")
    if not head:
        raise FeedError("arXiv answered with an empty document instead of a feed")
    try:
        root = etree.fromstring(bytes(xml), etree.XMLParser(**_XML_PARSER_OPTIONS))
    except etree.XMLSyntaxError as exc:
        reason = (exc.msg or "unreadable").split(",")[0][:120]
        line, column = exc.position if exc.position else (0, 0)
        raise FeedError(f"the feed is not valid XML (cut off or damaged) at line {line}, column {column}: "
                        f"{reason}") from None
    except (ValueError, etree.LxmlError) as exc:
        raise FeedError(f"the feed is not valid XML: {str(exc)[:160]}") from None
    if root is None or not isinstance(root.tag, str):
        raise FeedError("the feed is not valid XML: no root element")
    if root.tag.lower().endswith("html"):
        raise FeedError(f"arXiv answered with an HTML page instead of a feed{_html_headline(xml)}")
    if root.tag != f"{ATOM}feed":
        raise FeedError(f"expected an Atom <feed>, got <{etree.QName(root).localname}>")
    return root


def _html_headline(xml: bytes) -> str:
    match = re.search(rb"<(?:title|h1)[^>]*>([^<]{1,120})<", bytes(xml[:4096]), re.I)
    if not match:
        return ""
    return f" ({' '.join(match.group(1).decode('utf-8', 'replace').split())})"


class _EntryProblem(ValueError):
    def __init__(self, label: str, message: str):
        super().__init__(message)
        self.label = label


def _text(element) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def _entry_fields(entry) -> dict:
    guid = _text(entry.find(f"{ATOM}id"))
    if not guid:
        raise _EntryProblem("no id", "missing <id>")
    try:
        paper_id, version = normalize_id(guid)
    except InvalidArxivId:
        raise _EntryProblem(guid[:60], "its <id> is not an arXiv id") from None
    label = paper_id
    summary_element = entry.find(f"{ATOM}summary")
    summary = "".join(summary_element.itertext()) if summary_element is not None else ""
    head = _SUMMARY_HEAD.match(summary)
    kind = _text(entry.find(f"{ARXIV_NS}announce_type")) or (head["kind"] if head else "")
    abstract = " ".join(summary[head.end():].split()) if head else " ".join(summary.split())
    title = _text(entry.find(f"{ATOM}title"))
    categories = [c.get("term", "").strip() for c in entry.findall(f"{ATOM}category") if c.get("term", "").strip()]
    missing = [name for name, value in (("title", title), ("abstract", abstract), ("category", categories),
                                        ("announce type", kind)) if not value]
    if missing:
        raise _EntryProblem(label, "missing " + ", ".join(missing))
    if kind not in ANNOUNCE_TYPES:
        raise _EntryProblem(label, f'unknown announce type "{kind[:30]}"')
    authors = [a.strip() for a in _text(entry.find(f"{DC}creator")).split(",") if a.strip()]
    paper = Paper(id=paper_id, version=version or 1, title=title, abstract=abstract, authors=authors,
                  categories=list(dict.fromkeys(categories)), primary_category=categories[0])
    return {"id": paper_id, "paper": paper, "kind": kind, "published": _day_of(_text(entry.find(f"{ATOM}published")))}


def _day_of(stamp: str) -> dt.date | None:
    """The ET date of an ISO timestamp; None when it cannot be read."""
    if not stamp:
        return None
    try:
        moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(ET).date()


def _feed_day(root, fields: list[dict]) -> dt.date | None:
    """The announcement day: the entries' ``published`` (midnight ET), else the feed's ``updated``."""
    days = collections.Counter(f["published"] for f in fields if f["published"])
    if days:
        return days.most_common(1)[0][0]
    return _day_of(_text(root.find(f"{ATOM}updated")))


# -- fetching a day's announcements ---------------------------------------------------------------

@dataclass
class FetchResult:
    """What one fetch found. ``status``: "announced", "empty" (arXiv announced nothing: a weekend or
    a holiday) or "failed" (with ``error``, one line)."""

    status: str
    announced_on: dt.date | None = None
    count: int = 0
    skipped: int = 0
    error: str | None = None
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
        with _session_for(settings, session) as polite:
            parsed = parse_feed(get_feed(settings, categories, polite))
    except ArxivError as exc:
        return _record(db, query, FetchResult("failed", error=str(exc)))
    for problem in parsed.problems:
        log.warning("feed %s: skipped %s", query, problem)
    if not parsed.announcements:
        if parsed.problems:
            error = f"all {len(parsed.problems)} entries of the feed were malformed; first: {parsed.problems[0]}"
            return _record(db, query, FetchResult("failed", parsed.announced_on, skipped=len(parsed.problems),
                                                  error=error, problems=parsed.problems))
        return _record(db, query, FetchResult("empty"))
    dbm.save_announcements(db, parsed.announcements, source="feed")
    kinds = collections.Counter(a.kind for a in parsed.announcements)
    return _record(db, query, FetchResult("announced", parsed.announced_on, count=len(parsed.announcements),
                                          skipped=len(parsed.problems), kinds=dict(kinds), problems=parsed.problems))


def _record(db, categories: str, result: FetchResult, source: str = "feed") -> FetchResult:
    dbm.record_fetch(db, announced_on=result.announced_on, categories=categories, source=source,
                     status=result.status, entries=result.count, skipped=result.skipped, error=result.error)
    if result.status == "failed":
        log.error("fetch %s (%s): failed: %s", categories, source, result.error)
    else:
        log.info("fetch %s (%s): %s %s, %d papers", categories, source, result.status,
                 result.announced_on or "", result.count)
    return result


def describe_fetch(result: FetchResult) -> str:
    """One line for the user: ``2026-06-23: 537 papers announced (412 new, 125 cross-lists)``."""
    if result.status == "empty":
        return "arXiv announced nothing today (a weekend or a holiday)"
    if result.status == "failed":
        return f"fetching arXiv failed: {result.error}"
    parts = [f"{result.kinds.get('new', 0)} new", f"{result.kinds.get('cross', 0)} cross-lists"]
    replaced = result.kinds.get("replace", 0) + result.kinds.get("replace-cross", 0)
    if replaced:
        parts.append(f"{replaced} replacements")
    skipped = f"; {result.skipped} malformed entries skipped" if result.skipped else ""
    return f"{result.announced_on}: {result.count} papers announced ({', '.join(parts)}){skipped}"


# -- the API: papers by id, and backfill ------------------------------------------------------------

def api_client(settings: Settings, session: requests.Session, page_size: int = 100) -> arxiv_api.Client:
    """The ``arxiv`` package's client, pointed at ``arxiv.api_url`` and made polite by ``session``.

    Its own delay and retries are turned off: the session spaces, times out and retries every request.
    """
    client = arxiv_api.Client(page_size=page_size, delay_seconds=0, num_retries=0)
    client.query_url_format = settings.arxiv.api_url + "?{}"
    client._session = session  # the package has no public hook for a session or a timeout
    return client


def paper_from_result(result: arxiv_api.Result) -> Paper:
    paper_id, version = normalize_id(result.entry_id)
    return Paper(
        id=paper_id,
        version=version or 1,
        title=" ".join(result.title.split()),
        abstract=" ".join(result.summary.split()),
        authors=[a.name for a in result.authors],
        categories=list(dict.fromkeys(result.categories)),
        primary_category=result.primary_category or (result.categories[0] if result.categories else ""),
        published=result.published.isoformat() if result.published else None,
        updated=result.updated.isoformat() if result.updated else None,
        comment=result.comment or None,
        journal_ref=result.journal_ref or None,
        doi=result.doi or None,
    )


def _run_search(client: arxiv_api.Client, search: arxiv_api.Search, session: requests.Session) -> list[Paper]:
    """All results of ``search``, as papers. Raises ArxivError with what arXiv said."""
    try:
        return [paper_from_result(r) for r in client.results(search)]
    except arxiv_api.HTTPError as exc:
        said = ""
        response = getattr(session, "last_response", None)
        if response is not None and response.status_code == exc.status:
            said = f": {_error_text(response.content)}"
        raise ArxivError(f"arXiv's API answered HTTP {exc.status}{said}") from None
    except arxiv_api.UnexpectedEmptyPageError:
        raise ArxivError("arXiv's API returned an empty page in the middle of the results") from None
    except (requests.RequestException, etree.LxmlError, ValueError) as exc:
        raise ArxivError(f"arXiv's API answer could not be read: {type(exc).__name__}") from None


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
    with _session_for(settings, session) as polite:
        client = api_client(settings, polite)
        for start in range(0, len(asked), 100):
            batch = asked[start:start + 100]
            try:
                found += _run_search(client, arxiv_api.Search(id_list=batch, max_results=len(batch)), polite)
            except ArxivError as exc:
                if raise_errors:
                    raise
                log.warning("fetching %d papers by id failed: %s", len(batch), exc)
    got = {p.id for p in found} | {f"{p.id}v{p.version}" for p in found}
    missing = [given for given in ids if not _was_found(given, got)]
    return found, missing


def _was_found(given: str, got: set[str]) -> bool:
    try:
        paper_id, version = normalize_id(given)
    except InvalidArxivId:
        return False
    return (f"{paper_id}v{version}" if version else paper_id) in got


def _api_category_query(categories: list[str]) -> str:
    terms = [f"cat:{c}.*" if c in ARCHIVES and "." not in c else f"cat:{c}" for c in categories]
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"


def _api_stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M")


def backfill_query(categories: list[str], day: dt.date) -> str:
    """The API query for the new submissions announced on feed day ``day`` (times in GMT, as the API wants)."""
    start, end = submission_window(day)
    last_minute = end - dt.timedelta(minutes=1)  # the API's range includes both ends
    return f"{_api_category_query(categories)} AND submittedDate:[{_api_stamp(start)} TO {_api_stamp(last_minute)}]"


def parse_backfill(papers: list[Paper], day: dt.date, categories: list[str]) -> list[Announcement]:
    """API results -> the day's announcements, in id order (arXiv's listing order for new papers).

    A paper whose submission time maps to another day is left out: the window is only a query.
    """
    expression = CategoryExpression(tuple(categories), ())
    chosen = []
    for paper in sorted({p.id: p for p in papers}.values(), key=lambda p: p.id):
        if paper.published and announced_on_for(dt.datetime.fromisoformat(paper.published)) != day:
            continue
        kind = "new" if expression.matches([paper.primary_category]) else "cross"
        chosen.append(Announcement(paper=paper, announced_on=day, kind=kind, position=len(chosen)))
    return chosen


def backfill(db, settings: Settings, start: dt.date, end: dt.date, *,
             progress: Callable[[dt.date, FetchResult], None] | None = None,
             session: requests.Session | None = None, refetch: bool = False) -> dict:
    """Fill the history of feed days ``start``..``end`` from the API (source "api").

    Days that already have a complete fetch are skipped unless ``refetch``. Each day is one query
    of at most one page of 2,000 (arXiv's maximum); a day with more is stored as far as it goes and
    reported. Returns counts: days, announced, empty, failed, skipped, papers, and the errors.
    """
    categories = settings.feed_categories()
    summary = {"days": 0, "announced": 0, "empty": 0, "failed": 0, "skipped": 0, "papers": 0, "errors": []}
    with _session_for(settings, session) as polite:
        client = api_client(settings, polite, page_size=API_PAGE_SIZE)
        for day in announcement_days(start, end):
            summary["days"] += 1
            if not refetch and _fetched(db, day):
                summary["skipped"] += 1
                result = FetchResult("stored", day)  # already complete; not recorded again
            else:
                result = backfill_day(db, settings, client, polite, day, categories)
                summary[result.status] += 1
                summary["papers"] += result.count
                if result.error:
                    summary["errors"].append(f"{day}: {result.error}")
            if progress:
                progress(day, result)
    return summary


def backfill_day(db, settings: Settings, client: arxiv_api.Client, session: requests.Session, day: dt.date,
                 categories: list[str]) -> FetchResult:
    query = "+".join(categories)
    search = arxiv_api.Search(query=backfill_query(categories, day), max_results=API_PAGE_SIZE,
                              sort_by=arxiv_api.SortCriterion.SubmittedDate,
                              sort_order=arxiv_api.SortOrder.Ascending)
    try:
        papers = _run_search(client, search, session)
    except ArxivError as exc:
        return _record(db, query, FetchResult("failed", day, error=str(exc)), source="api")
    announcements = parse_backfill(papers, day, categories)
    if not announcements:
        return _record(db, query, FetchResult("empty", day), source="api")
    dbm.save_announcements(db, announcements, source="api")
    kinds = dict(collections.Counter(a.kind for a in announcements))
    error = None
    if len(papers) >= API_PAGE_SIZE:
        error = f"more than {API_PAGE_SIZE} papers; only the first {API_PAGE_SIZE} were stored"
        log.warning("backfill %s: %s", day, error)
    return _record(db, query, FetchResult("announced", day, count=len(announcements), kinds=kinds, error=error),
                   source="api")


def _fetched(db, day: dt.date) -> bool:
    row = db.execute("SELECT 1 FROM fetches WHERE announced_on = ? AND status = 'announced' LIMIT 1",
                     [day.isoformat()]).fetchone()
    return row is not None


def describe_backfill(start: dt.date, end: dt.date, summary: dict) -> str:
    """One line: ``2026-06-22..2026-06-26: 5 announcement days, 1,204 papers stored (1 already stored)``."""
    parts = [f"{summary['days']} announcement days", f"{summary['papers']:,} papers stored"]
    if summary["skipped"]:
        parts.append(f"{summary['skipped']} already stored")
    if summary["empty"]:
        parts.append(f"{summary['empty']} with nothing announced")
    if summary["failed"]:
        parts.append(f"{summary['failed']} failed")
    return f"{start}..{end}: " + ", ".join(parts)
