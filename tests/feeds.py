"""Day feeds in the exact format of arXiv's rss.arxiv.org Atom feed, built from the real listing
``data/listing_2026-06-22_to_06-30.jsonl.gz``, and a loopback route that serves them day by day.

Days: every ``day`` here is a *feed day*, the date the feed stamps on an announcement (its
``published``, midnight ET) and the ``announced_on`` stored in the database. The listing's own
``announced_date_et`` is the evening of the announcement (Sun-Thu 20:00 ET; its file holds
2026-06-28, a Sunday), so a listing row belongs to the feed of the *next* calendar day. The listing
therefore covers feed days 2026-06-23 (Tue) to 2026-07-01 (Wed): 06-25 is partial (26 rows, a failed
crawl upstream), 06-27/06-28 is a weekend (arXiv serves an empty feed), and 2026-06-19, outside it, was
an arXiv holiday.

    feeds = serve_feeds(http_server, {d: feed_xml(d, ["cs.AI"]) for d in LISTING_DAYS})
    feeds.day = dt.date(2026, 6, 23)   # what /atom/<cats> answers now; move it to advance time
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import json
import re
import zoneinfo
from typing import Callable
from xml.sax.saxutils import escape, quoteattr

from conftest import LISTING
from loopback import Reply, Request

ET = zoneinfo.ZoneInfo("America/New_York")
KIND_ORDER = ("new", "cross", "replace", "replace-cross")  # the order arXiv lists a day's entries in
LICENSE = "http://creativecommons.org/licenses/by/4.0/"


@functools.cache
def _all_rows() -> tuple[dict, ...]:
    with gzip.open(LISTING, "rt", encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle if line.strip())


def feed_day(row: dict) -> dt.date:
    """The feed day of a listing row: the calendar day after its evening announcement."""
    return dt.date.fromisoformat(row["announced_date_et"]) + dt.timedelta(days=1)


LISTING_DAYS: tuple[dt.date, ...] = tuple(sorted({feed_day(r) for r in _all_rows()}))


def listing_papers(day: dt.date | None = None) -> list[dict]:
    """Rows of the listing in file order (copies), all of them or those of one feed day.

    A weekday the listing does not cover is a mistake in the test, so it raises instead of
    quietly returning nothing; a weekend day inside the covered range gives [].
    """
    rows = [dict(r) for r in _all_rows()]
    if day is None:
        return rows
    chosen = [r for r in rows if feed_day(r) == day]
    if not chosen and day.weekday() < 5:
        raise ValueError(f"the listing has no feed day {day}; it covers {', '.join(map(str, LISTING_DAYS))}")
    return chosen


def published_stamp(day: dt.date) -> str:
    """Midnight ET of ``day`` as the feed writes it: ``2026-06-23T00:00:00-04:00`` (-05:00 in winter)."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=ET).isoformat()


def _updated_stamp(day: dt.date, micro: int) -> str:
    midnight = dt.datetime.combine(day, dt.time(0), tzinfo=ET).astimezone(dt.timezone.utc)
    return (midnight + dt.timedelta(seconds=19, microseconds=micro)).isoformat()


def _matches(row_categories: list[str], categories: list[str]) -> bool:
    return any(c == code or c.startswith(code + ".") for c in row_categories for code in categories)


def _entry(row: dict, kind: str, day: dt.date, micro: int) -> str:
    version = int(row.get("version") or (2 if kind.startswith("replace") else 1))
    paper_id = row["id"]
    categories = "".join(f"\n    <category term={quoteattr(c)}/>" for c in row["categories"])
    return (
        f"  <entry>\n"
        f"    <id>oai:arXiv.org:{paper_id}v{version}</id>\n"
        f"    <title>{escape(row['title'])}</title>\n"
        f"    <updated>{_updated_stamp(day, micro)}</updated>\n"
        f"    <link href=\"https://arxiv.org/abs/{paper_id}\" rel=\"alternate\" type=\"text/html\"/>\n"
        f"    <summary>arXiv:{paper_id}v{version} Announce Type: {kind} \n"
        f"Abstract: {escape(row['abstract'])}</summary>"
        f"{categories}\n"
        f"    <published>{published_stamp(day)}</published>\n"
        f"    <arxiv:announce_type>{kind}</arxiv:announce_type>\n"
        f"    <dc:rights>{row.get('license') or LICENSE}</dc:rights>\n"
        f"    <dc:creator>{escape(', '.join(row['authors']))}</dc:creator>\n"
        f"  </entry>\n"
    )


def _head(categories: list[str], day: dt.date) -> str:
    joined = "+".join(categories)
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns="http://www.w3.org/2005/Atom" xml:lang="en-us">\n'
        f"  <id>http://rss.arxiv.org/atom/{joined}</id>\n"
        f"  <title>{joined} updates on arXiv.org</title>\n"
        f"  <updated>{_updated_stamp(day, 866_337)}</updated>\n"
        f'  <link href="http://rss.arxiv.org/atom/{joined}" rel="self" type="application/atom+xml"/>\n'
        f"  <subtitle>{joined} updates on the arXiv.org e-print archive.</subtitle>\n"
    )


def feed_xml(day: dt.date, categories: list[str], rows: list[dict] | None = None,
             kinds: dict[str, str] | None = None) -> bytes:
    """The feed of ``day`` for ``categories``: one entry per row in any of them, new ones first.

    A row's announce type is "new" when its primary category is asked for, else "cross", unless
    ``kinds`` (paper id -> type) says otherwise. A row may carry "version" (default 1, 2 for a
    replacement) and "license".
    """
    rows = listing_papers(day) if rows is None else rows
    kinds = kinds or {}
    chosen = []
    for row in rows:
        if not _matches(row["categories"], categories):
            continue
        default = "new" if _matches([row["primary_category"]], categories) else "cross"
        chosen.append((row, kinds.get(row["id"], default)))
    chosen.sort(key=lambda pair: KIND_ORDER.index(pair[1]))  # stable: listing order within a type
    entries = "".join(_entry(row, kind, day, 900_000 - i) for i, (row, kind) in enumerate(chosen))
    return (_head(categories, day) + entries + "</feed>\n").encode("utf-8")


def empty_feed_xml(categories: list[str], day: dt.date | None = None) -> bytes:
    """What arXiv serves on a weekend or holiday: a valid feed with no entries."""
    return (_head(categories, day or dt.date(2026, 6, 27)) + "</feed>\n").encode("utf-8")


class FeedRoute:
    """``/atom/<cats>`` on a loopback server, answering with the feed of the current ``day``.

    ``by_day`` maps a feed day to the feed bytes (or a loopback ``Reply``, to script an error), or
    is a callable ``(day, categories) -> bytes | Reply``. A day with nothing mapped gets the empty
    feed, as on a weekend. ``requests`` are the feed requests received so far.
    """

    def __init__(self, http_server, by_day: dict[dt.date, bytes | Reply] | Callable, day: dt.date | None = None):
        self.server = http_server
        self.by_day = by_day
        self.day = day if day is not None else (min(by_day) if isinstance(by_day, dict) and by_day else None)
        self.url = f"{http_server.url}/atom/"
        http_server.routes["/atom/"] = self._answer

    def _answer(self, request: Request) -> Reply:
        categories = request.path[len("/atom/"):].split("+")
        if callable(self.by_day):
            answer = self.by_day(self.day, categories)
        else:
            answer = self.by_day.get(self.day)
        if answer is None:
            answer = empty_feed_xml(categories, self.day)
        return answer if isinstance(answer, Reply) else Reply(body=answer)

    @property
    def requests(self) -> list[Request]:
        return [r for r in self.server.requests if r.path.startswith("/atom/")]


def serve_feeds(http_server, by_day: dict[dt.date, bytes | Reply] | Callable, day: dt.date | None = None) -> FeedRoute:
    """Route ``/atom/`` on ``http_server`` to day feeds; set ``.day`` on the result to move time."""
    return FeedRoute(http_server, by_day, day)


def arxiv_section(url: str, categories: str = "cs.AI", min_interval: float = 0.0, retries: int = 1,
                  timeout: float = 5.0, contact: str = "tester@example.org") -> str:
    """The ``[arxiv]`` TOML table pointing every arXiv URL at a loopback server."""
    return (
        "[arxiv]\n"
        f'categories = "{categories}"\n'
        f'contact = "{contact}"\n'
        f'feed_url = "{url}/atom/"\n'
        f'api_url = "{url}/api/query"\n'
        f'oai_url = "{url}/oai"\n'
        f"min_interval = {float(min_interval)}\n"
        f"timeout = {float(timeout)}\n"
        f"retries = {int(retries)}\n"
    )


def feed_error_xml(query: str) -> bytes:
    """The body of arXiv's HTTP 400 for a query it cannot serve: a feed titled "Feed error for query"
    (the title other arXiv clients check; no recorded copy exists, so this one is built)."""
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en-us">\n'
        f"  <id>http://rss.arxiv.org/atom/{query}</id>\n"
        f"  <title>Feed error for query: {query}</title>\n"
        "  <updated>2026-06-23T04:00:19.866337+00:00</updated>\n"
        "</feed>\n"
    ).encode("utf-8")


def api_feed_xml(papers: list[tuple[dict, dt.datetime]], total: int | None = None) -> bytes:
    """An arXiv API (export.arxiv.org/api/query) answer in the recorded files' format, for listing rows
    with the submission time each was given (the listing has none)."""
    entries = []
    for row, submitted in papers:
        stamp = submitted.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        version = int(row.get("version") or 1)
        categories = "".join(f'\n    <category term={quoteattr(c)} scheme="http://arxiv.org/schemas/atom"/>'
                             for c in row["categories"])
        authors = "".join(f"\n    <author>\n      <name>{escape(a)}</name>\n    </author>" for a in row["authors"])
        entries.append(
            f"  <entry>\n"
            f"    <id>http://arxiv.org/abs/{row['id']}v{version}</id>\n"
            f"    <title>{escape(row['title'])}</title>\n"
            f"    <updated>{stamp}</updated>\n"
            f"    <link href=\"https://arxiv.org/abs/{row['id']}v{version}\" rel=\"alternate\" type=\"text/html\"/>\n"
            f"    <summary>{escape(row['abstract'])}</summary>"
            f"{categories}\n"
            f"    <published>{stamp}</published>\n"
            f"    <arxiv:primary_category term={quoteattr(row['primary_category'])}/>"
            f"{authors}\n"
            f"  </entry>\n"
        )
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" xmlns:arxiv="http://arxiv.org/schemas/atom" '
        'xmlns="http://www.w3.org/2005/Atom">\n'
        "  <id>https://arxiv.org/api/built-for-tests</id>\n"
        "  <title>arXiv Query</title>\n"
        "  <updated>2026-07-01T00:00:00Z</updated>\n"
        f"  <opensearch:itemsPerPage>{len(entries)}</opensearch:itemsPerPage>\n"
        f"  <opensearch:totalResults>{len(entries) if total is None else total}</opensearch:totalResults>\n"
        "  <opensearch:startIndex>0</opensearch:startIndex>\n"
        + "".join(entries) + "</feed>\n"
    ).encode("utf-8")


# A submission time for the listing rows of each feed day, read off arXiv's schedule table by hand.
def _et(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=ET)


SUBMITTED = {
    dt.date(2026, 6, 23): _et(2026, 6, 20, 12, 0),   # Saturday -> Tue
    dt.date(2026, 6, 24): _et(2026, 6, 22, 16, 0),   # Mon after 14:00 -> Wed
    dt.date(2026, 6, 25): _et(2026, 6, 24, 9, 0),    # Wed morning -> Thu
    dt.date(2026, 6, 26): _et(2026, 6, 25, 13, 59),  # Thu just before the deadline -> Fri
    dt.date(2026, 6, 29): _et(2026, 6, 26, 11, 0),   # Fri morning -> Mon
    dt.date(2026, 6, 30): _et(2026, 6, 26, 14, 1),   # Fri after the deadline -> Tue
    dt.date(2026, 7, 1): _et(2026, 6, 30, 10, 0),    # Tue -> Wed
}


def serve_fake_api(http_server, categories: set[str], papers: list[tuple[dict, dt.datetime]] | None = None):
    """A small arXiv API on ``/api/query``: answers a submittedDate window with the rows submitted in it
    (by default the listing's rows at their SUBMITTED times). Returns the list it serves, to edit."""
    if papers is None:
        papers = [(row, SUBMITTED[day]) for day in LISTING_DAYS for row in listing_papers(day)
                  if set(row["categories"]) & categories]

    def answer(request):
        query = request.query["search_query"][0]
        low, high = re.search(r"submittedDate:\[(\d{12}) TO (\d{12})\]", query).groups()
        wanted = set(re.findall(r"cat:([\w.-]+)", query))
        chosen = [(row, when) for row, when in papers
                  if low <= when.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M") <= high
                  and set(row["categories"]) & wanted]
        return Reply(body=api_feed_xml(chosen))

    http_server.routes["/api/query"] = answer
    return papers


if __name__ == "__main__":  # by hand: the recorded days as arXiv's feed and API, one day at a time
    import sys

    from loopback import LoopbackServer, serve_until_interrupted

    categories = sys.argv[1] if len(sys.argv) > 1 else "cs.CL"
    day = dt.date.fromisoformat(sys.argv[2]) if len(sys.argv) > 2 else LISTING_DAYS[-1]
    server = LoopbackServer()
    codes = categories.replace("-", "+").split("+")
    serve_feeds(server, {d: feed_xml(d, codes) for d in LISTING_DAYS}, day=day)
    serve_fake_api(server, set(codes))
    serve_until_interrupted(server, f"arXiv's {categories} feed of {day} (usage: feeds.py CATEGORIES [DAY]); "
                                    "put this in digest's configuration:", "", arxiv_section(server.url, categories))
