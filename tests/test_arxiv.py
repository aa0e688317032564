"""arXiv ingestion against real recorded arXiv answers (tests/data/) served from loopback."""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
import re
import threading
import time
import urllib.parse
import zlib

import pytest
from click.testing import CliRunner
from conftest import DATA
from feeds import (
    LISTING_DAYS,
    arxiv_section,
    empty_feed_xml,
    feed_error_xml,
    feed_xml,
    listing_papers,
    serve_fake_api,
    serve_feeds,
)
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from loopback import Reply

from digest.arxiv import api, atom, calendar, feed, http, ids
from digest.arxiv.calendar import Calendar
from digest.arxiv.days import fetch_days
from digest.cli import cli
from digest.config import parse_settings
from digest.http_retry import retry_after_seconds
from digest.storage.db import open_db

RSS = DATA / "rss"
API = DATA / "api"
SUBSET7 = RSS / "atom_cs.AI_2025-08-20_subset7.xml"
FIRST86 = RSS / "atom_cs.AI_2025-08-20_first86_repaired.xml"
OAI_503 = DATA / "oai" / "oaipmh-listrecords---should-list-identifiers-from-arxiv_0_503.xml"
D = dt.date
CALENDAR = Calendar()  # the known holiday lists, no corrections


def make_settings(url: str, categories: str = "cs.AI", **arxiv_options):
    text = arxiv_section(url, categories=categories, **arxiv_options)
    return parse_settings(text + '\n[profiles.me]\ninterests = ["agents"]\n')


def counts(db) -> dict[str, int]:
    return {t: db[t].count for t in ("papers", "announcements")}


def fetch_rows(db) -> list[dict]:
    return list(db.query("SELECT announced_on, categories, source, status, entries, skipped, error FROM fetches "
                         "ORDER BY id"))


# -- identifiers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2401.01234v2", ("2401.01234", 2)),
    ("2401.01234", ("2401.01234", None)),
    ("arXiv:2401.01234v12", ("2401.01234", 12)),
    ("https://arxiv.org/abs/2401.01234v3", ("2401.01234", 3)),
    ("http://export.arxiv.org/pdf/2401.01234v3.pdf", ("2401.01234", 3)),
    ("oai:arXiv.org:2508.13426v1", ("2508.13426", 1)),
    ("0704.0001", ("0704.0001", None)),
    ("hep-th/9901001", ("hep-th/9901001", None)),
    ("quant-ph/0201082v1", ("quant-ph/0201082", 1)),
    ("https://arxiv.org/abs/astro-ph/0601001", ("astro-ph/0601001", None)),
    ("math.AG/0101001", ("math/0101001", None)),
])
def test_normalize_id(text, expected):
    assert ids.normalize_id(text) == expected


@pytest.mark.parametrize("text", ["abc", "2413.00001", "2401.1234v0", "2401.01234v", "", "hep-th/990100"])
def test_normalize_id_rejects_what_is_not_an_id(text):
    with pytest.raises(ids.InvalidArxivId) as info:
        ids.normalize_id(text)
    assert str(info.value) == f'"{text}" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)'


@given(yymm=st.tuples(st.integers(7, 99), st.integers(1, 12)), number=st.integers(0, 99999),
       version=st.one_of(st.none(), st.integers(1, 40)),
       wrap=st.sampled_from(["{}", "arXiv:{}", "https://arxiv.org/abs/{}", "https://arxiv.org/pdf/{}.pdf", " {} "]))
def test_normalize_id_property_new_style(yymm, number, version, wrap):
    digits = 4 if yymm[0] < 15 else 5
    paper_id = f"{yymm[0]:02d}{yymm[1]:02d}.{number % 10 ** digits:0{digits}d}"
    text = wrap.format(paper_id + (f"v{version}" if version else ""))
    assert ids.normalize_id(text) == (paper_id, version)


@given(archive=st.sampled_from(["hep-th", "quant-ph", "astro-ph", "math", "cond-mat", "gr-qc"]),
       year=st.integers(91, 106), month=st.integers(1, 12), number=st.integers(1, 999),
       version=st.one_of(st.none(), st.integers(1, 9)))
def test_normalize_id_property_old_style(archive, year, month, number, version):
    paper_id = f"{archive}/{year % 100:02d}{month:02d}{number:03d}"
    assert ids.normalize_id(paper_id + (f"v{version}" if version else "")) == (paper_id, version)


# -- parsing feeds (pure) ---------------------------------------------------------------------------------

def test_parse_real_feed_of_seven():
    parsed = feed.parse_feed(SUBSET7.read_bytes())
    assert parsed.announced_on == D(2025, 8, 20)
    assert parsed.problems == []
    assert collections.Counter(a.kind for a in parsed.announcements) == {"new": 2, "cross": 5}
    first = parsed.announcements[0]
    assert (first.position, first.kind, first.announced_on) == (0, "cross", D(2025, 8, 20))
    paper = first.paper
    assert (paper.id, paper.version) == ("2508.13426", 1)
    assert paper.title == ("ALIGN: Word Association Learning for Cross-Cultural Generalization in Large "
                           "Language Models")
    assert paper.authors == ["Chunhua Liu", "Kabir Manandhar Shrestha", "Sukai Huang"]
    assert paper.categories == ["cs.CL", "cs.AI"] and paper.primary_category == "cs.CL"
    assert paper.abstract.startswith("As large language models (LLMs) increasingly mediate")
    assert paper.abstract.endswith("improving cultural alignment in AI models.")
    assert "Announce Type" not in paper.abstract
    assert [a.paper.id for a in parsed.announcements if a.kind == "new"] == ["2508.14001", "2508.14002"]


def test_parse_real_feed_of_86():
    parsed = feed.parse_feed(FIRST86.read_bytes())
    assert parsed.announced_on == D(2025, 8, 20)
    assert collections.Counter(a.kind for a in parsed.announcements) == {"new": 41, "cross": 45}
    assert [a.position for a in parsed.announcements] == list(range(86))
    assert len({a.paper.id for a in parsed.announcements}) == 86
    assert parsed.announcements[0].paper.id == "2508.13167"
    assert all(a.paper.title and a.paper.abstract and a.paper.authors for a in parsed.announcements)


def test_built_feed_parses_like_the_listing():
    day = D(2026, 6, 23)
    rows = [r for r in listing_papers(day) if set(r["categories"]) & {"cs.AI", "cs.LG"}]
    replaced = rows[-1]["id"]
    parsed = feed.parse_feed(feed_xml(day, ["cs.AI", "cs.LG"], kinds={replaced: "replace"}))
    assert parsed.announced_on == day and parsed.problems == []
    by_id = {a.paper.id: a for a in parsed.announcements}
    assert set(by_id) == {r["id"] for r in rows}
    assert by_id[replaced].kind == "replace" and by_id[replaced].paper.version == 2
    for row in rows[:50]:
        paper = by_id[row["id"]].paper
        assert paper.title == " ".join(row["title"].split())
        assert paper.abstract == " ".join(row["abstract"].split())
        assert paper.authors == row["authors"] and paper.categories == row["categories"]
        expected_kind = "new" if row["primary_category"] in ("cs.AI", "cs.LG") else "cross"
        if row["id"] != replaced:
            assert by_id[row["id"]].kind == expected_kind


def test_winter_feed_day_is_read_in_eastern_time():
    # -05:00 in winter: midnight ET is 05:00 UTC, still the same announcement day.
    xml = feed_xml(D(2026, 1, 5), ["cs.AI"], rows=listing_papers(D(2026, 6, 23))[:3])
    assert b"2026-01-05T00:00:00-05:00" in xml
    assert feed.parse_feed(xml).announced_on == D(2026, 1, 5)


@pytest.mark.parametrize("body, reason", [
    (b"<html><body>\n<h1>Retry after 10 seconds</h1>\n</body></html>",
     "arXiv answered with an HTML page instead of a feed (Retry after 10 seconds)"),
    (SUBSET7.read_bytes()[:3000],
     "the feed is not valid XML (cut off or damaged) at line 27, column 36: Premature end of data in tag summary "
     "line 27"),
    (feed_error_xml("cs.XY"), "Feed error for query: cs.XY"),
    ((API / "id_abc_s0_m100_b79c8dcf6bc3.xml").read_bytes(), "incorrect id format for abc"),
    (b"", "arXiv answered with an empty document instead of a feed"),
    (b'<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "expected an Atom <feed>, got <rss>"),
])
def test_parse_rejects_what_is_not_a_feed(body, reason):
    with pytest.raises(atom.FeedError) as info:
        feed.parse_feed(body)
    assert str(info.value) == reason


def _without_title_of_third_entry(xml: bytes) -> bytes:
    text = xml.decode()
    starts = [m.start() for m in re.finditer("<entry>", text)]
    third = text[starts[2]:starts[3]]
    return (text[:starts[2]] + re.sub(r"<title>.*?</title>", "", third, count=1) + text[starts[3]:]).encode()


def test_one_malformed_entry_is_skipped_with_a_reason():
    parsed = feed.parse_feed(_without_title_of_third_entry(SUBSET7.read_bytes()))
    assert parsed.problems == ["entry 3 (2508.13429): missing title"]
    assert len(parsed.announcements) == 6
    assert "2508.13429" not in {a.paper.id for a in parsed.announcements}
    assert [a.position for a in parsed.announcements] == [0, 1, 3, 4, 5, 6]


def test_an_empty_feed_has_no_day():
    parsed = feed.parse_feed(empty_feed_xml(["cs.AI"]))
    assert parsed.announcements == [] and parsed.problems == [] and parsed.announced_on is None


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parser_raises_only_feed_error_on_arbitrary_bytes(data):
    try:
        feed.parse_feed(data)
    except atom.FeedError:
        pass


@hsettings(max_examples=150, deadline=None)
@given(cut=st.integers(0, 11_000), junk=st.binary(max_size=20))
def test_parser_raises_only_feed_error_on_damaged_real_feeds(cut, junk):
    data = SUBSET7.read_bytes()
    try:
        feed.parse_feed(data[:cut] + junk + data[cut + len(junk):])
    except atom.FeedError:
        pass


# -- fetching the feed over HTTP --------------------------------------------------------------------------

def test_fetch_stores_the_day_and_is_idempotent(http_server, db):
    day = D(2026, 6, 23)
    feeds = serve_feeds(http_server, {day: feed_xml(day, ["cs.AI", "cs.LG"])}, day=day)
    settings = make_settings(http_server.url, "cs.AI+cs.LG-cs.CY")
    result = feed.fetch_announcements(db, settings)
    rows = [r for r in listing_papers(day) if set(r["categories"]) & {"cs.AI", "cs.LG"}]
    new = sum(1 for r in rows if r["primary_category"] in ("cs.AI", "cs.LG"))
    assert (result.status, result.announced_on, result.count, result.skipped) == ("announced", day, len(rows), 0)
    assert feed.describe_fetch(result) == f"2026-06-23: {len(rows)} papers announced ({new} new, " \
                                           f"{len(rows) - new} cross-lists)"
    assert feeds.requests[0].path == "/atom/cs.AI+cs.LG"
    before = counts(db)
    assert before == {"papers": len(rows), "announcements": len(rows)}
    stored = db.execute("SELECT kind, source, version FROM announcements WHERE paper_id = ?", [rows[0]["id"]])
    assert stored.fetchone() == ("new" if rows[0]["primary_category"] in ("cs.AI", "cs.LG") else "cross", "feed", 1)
    again = feed.fetch_announcements(db, settings)
    assert (again.status, again.count) == ("announced", len(rows))
    assert counts(db) == before
    assert [r["status"] for r in fetch_rows(db)] == ["announced", "announced"]
    assert fetch_rows(db)[0] == {"announced_on": "2026-06-23", "categories": "cs.AI+cs.LG", "source": "feed",
                                 "status": "announced", "entries": len(rows), "skipped": 0, "error": None}


def test_a_replacement_bumps_the_stored_version(http_server, db):
    first, second = D(2026, 6, 23), D(2026, 6, 24)
    row = listing_papers(first)[0]
    feeds = serve_feeds(http_server, {first: feed_xml(first, ["cs"], rows=[row]),
                                      second: feed_xml(second, ["cs"], rows=[{**row, "version": 2}],
                                                       kinds={row["id"]: "replace"})}, day=first)
    settings = make_settings(http_server.url, "cs")
    feed.fetch_announcements(db, settings)
    feeds.day = second
    result = feed.fetch_announcements(db, settings)
    assert result.kinds == {"replace": 1}
    assert db.execute("SELECT version FROM papers WHERE id = ?", [row["id"]]).fetchone() == (2,)
    assert list(db.query("SELECT announced_on, kind, version FROM announcements ORDER BY announced_on")) == [
        {"announced_on": "2026-06-23", "kind": "new", "version": 1},
        {"announced_on": "2026-06-24", "kind": "replace", "version": 2},
    ]


def test_a_weekend_feed_is_recorded_empty_not_failed(http_server, db):
    serve_feeds(http_server, {}, day=D(2026, 6, 27))
    result = feed.fetch_announcements(db, make_settings(http_server.url))
    assert (result.status, result.error) == ("empty", None)
    assert feed.describe_fetch(result) == "arXiv announced nothing today (its feed listed no entry: a weekend or a holiday)"
    assert counts(db) == {"papers": 0, "announcements": 0}
    assert [(r["status"], r["announced_on"], r["error"]) for r in fetch_rows(db)] == [("empty", None, None)]


@pytest.mark.parametrize("reply, error", [
    (Reply(200, OAI_503.read_bytes(), content_type="text/html"),
     "arXiv answered with an HTML page instead of a feed (Retry after 10 seconds)"),
    (Reply(200, SUBSET7.read_bytes()[:3000]),
     "the feed is not valid XML (cut off or damaged) at line 27, column 36: Premature end of data in tag summary "
     "line 27"),
    (Reply(400, feed_error_xml("cs.AI")),
     "arXiv's feed rejected the categories cs.AI: Feed error for query: cs.AI"),
    (Reply(404, "not found", content_type="text/plain"), "/atom/cs.AI: HTTP 404 from arXiv"),
])
def test_a_bad_answer_is_recorded_failed_with_its_reason(http_server, db, reply, error):
    serve_feeds(http_server, lambda day, cats: reply)
    result = feed.fetch_announcements(db, make_settings(http_server.url))
    assert result.status == "failed"
    assert result.error.removeprefix(http_server.url) == error
    assert [(r["status"], r["error"].removeprefix(http_server.url)) for r in fetch_rows(db)] == [("failed", error)]
    assert counts(db) == {"papers": 0, "announcements": 0}


def test_nothing_listening_is_a_failed_fetch_not_an_exception(db):
    settings = make_settings("http://127.0.0.1:9", retries=1)
    result = feed.fetch_announcements(db, settings)
    assert result.status == "failed"
    assert result.error == "http://127.0.0.1:9/atom/cs.AI: connection refused after 2 attempts"


def test_a_malformed_entry_is_logged_and_the_rest_stored(http_server, db, caplog):
    serve_feeds(http_server, lambda day, cats: _without_title_of_third_entry(SUBSET7.read_bytes()))
    result = feed.fetch_announcements(db, make_settings(http_server.url))
    assert (result.status, result.count, result.skipped) == ("announced", 6, 1)
    assert counts(db) == {"papers": 6, "announcements": 6}
    assert fetch_rows(db)[0]["skipped"] == 1
    assert "feed cs.AI: skipped entry 3 (2508.13429): missing title" in caplog.text


# -- politeness ------------------------------------------------------------------------------------------

def test_requests_are_spaced_serial_and_name_the_operator(http_server, tmp_path):
    day = D(2026, 6, 23)
    serve_feeds(http_server, lambda d, cats: Reply(body=feed_xml(day, cats), delay=0.05))
    settings = make_settings(http_server.url, min_interval=0.3, contact="ops@example.org")
    open_db(tmp_path / "digest.db")  # migrated once, then one connection per thread
    threads = [threading.Thread(target=lambda: feed.fetch_announcements(open_db(tmp_path / "digest.db"), settings))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times = [r.at for r in http_server.requests]
    assert len(times) == 3
    assert http_server.max_in_flight == 1
    # each request starts at least min_interval after the previous one *ended* (0.05 s of serving)
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.3 + 0.05
    user_agent = http_server.requests[0].headers["user-agent"]
    assert re.fullmatch(r"digest/\S+ \(mailto:ops@example\.org\)", user_agent)


def test_retry_after_is_honoured_on_503(http_server, db):
    day = D(2026, 6, 23)
    answers = [Reply(503, OAI_503.read_bytes(), headers={"Retry-After": "1"}, content_type="text/html"),
               Reply(body=feed_xml(day, ["cs.AI"]))]
    serve_feeds(http_server, lambda d, cats: answers.pop(0))
    result = feed.fetch_announcements(db, make_settings(http_server.url, retries=2))
    assert result.status == "announced"
    first, second = http_server.requests
    assert second.at - first.at >= 1.0


def test_retries_run_out_into_a_failed_fetch(http_server, db):
    serve_feeds(http_server, lambda d, cats: Reply(503, OAI_503.read_bytes(), headers={"Retry-After": "0"},
                                                   content_type="text/html"))
    result = feed.fetch_announcements(db, make_settings(http_server.url, retries=2))
    assert len(http_server.requests) == 3
    assert result.error.removeprefix(http_server.url) == "/atom/cs.AI: HTTP 503 from arXiv (Retry-After: 0)"


def test_a_server_dripping_a_byte_at_a_time_fails_the_fetch_within_the_whole_answers_time(http_server, db):
    """Each byte comes well within the 1 s per-read timeout, so only the bound on the whole answer stops it."""
    day = D(2026, 6, 23)
    serve_feeds(http_server, lambda d, cats: Reply(body=feed_xml(day, cats), drip=0.05))
    started = time.monotonic()
    result = feed.fetch_announcements(db, make_settings(http_server.url, retries=1, timeout=1.0))
    assert time.monotonic() - started < 15  # two tries of WHOLE_ANSWER_TIMEOUTS (4) x 1 s, and a pause
    assert result.status == "failed"
    assert result.error.removeprefix(http_server.url) == ("/atom/cs.AI: the answer took longer than 4 s in all "
                                                          "after 2 attempts")
    assert counts(db) == {"papers": 0, "announcements": 0}


def test_a_compressed_drip_that_never_decompresses_to_anything_fails_within_the_whole_answers_time(
        http_server, db):
    """A gzip header whose file name never ends: a decoder that reads on until it has output never returns."""
    endless_name = bytes([0x1F, 0x8B, 8, 0x08, 0, 0, 0, 0, 0, 3]) + b"a" * 2000
    serve_feeds(http_server, lambda d, cats: Reply(body=endless_name, headers={"Content-Encoding": "gzip"},
                                                   drip=0.05))
    started = time.monotonic()
    result = feed.fetch_announcements(db, make_settings(http_server.url, retries=0, timeout=1.0))
    assert time.monotonic() - started < 8
    assert result.error.removeprefix(http_server.url) == ("/atom/cs.AI: the answer took longer than 4 s in all "
                                                          "after 1 attempts")


@pytest.mark.parametrize("encoding, pack", [("deflate", zlib.compress),
                                            ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS))])
def test_a_deflated_feed_is_read_as_zlib_or_as_raw_deflate(http_server, db, encoding, pack):
    day = D(2026, 6, 23)
    serve_feeds(http_server, lambda d, cats: Reply(body=pack(feed_xml(day, cats)),
                                                   headers={"Content-Encoding": encoding}))
    result = feed.fetch_announcements(db, make_settings(http_server.url))
    assert result.status == "announced" and counts(db)["papers"] > 0
    assert http_server.requests[0].headers["accept-encoding"] == "gzip, deflate"


def test_an_answer_compressed_as_was_not_asked_is_refused_in_one_line(http_server, db):
    serve_feeds(http_server, lambda d, cats: Reply(body=b"\x00" * 100, headers={"Content-Encoding": "br"}))
    result = feed.fetch_announcements(db, make_settings(http_server.url, retries=2))
    assert len(http_server.requests) == 1
    assert result.error.removeprefix(http_server.url) == ("/atom/cs.AI: the answer is compressed as 'br', which was "
                                                          "not asked for")


def test_a_gzip_bomb_is_refused_once_decompressed_past_the_bound_not_read_into_memory(http_server, db):
    bomb = gzip.compress(b"<feed>" + b" " * (http.LARGEST_ANSWER + 1), compresslevel=9)
    assert len(bomb) < 200_000
    serve_feeds(http_server, lambda d, cats: Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    result = feed.fetch_announcements(db, make_settings(http_server.url, retries=2))
    assert len(http_server.requests) == 1  # not retried: it would say the same again
    assert result.status == "failed"
    assert result.error.removeprefix(http_server.url) == ("/atom/cs.AI: the answer is over 64 MiB (decompressed); "
                                                          "refused")


def test_a_large_compressed_answer_within_the_bound_is_read_whole(http_server, db):
    day = D(2026, 6, 23)
    serve_feeds(http_server, lambda d, cats: Reply(body=gzip.compress(feed_xml(day, cats)),
                                                   headers={"Content-Encoding": "gzip"}))
    result = feed.fetch_announcements(db, make_settings(http_server.url))
    assert result.status == "announced" and counts(db)["papers"] > 0


def test_retry_after_as_an_http_date():
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("soon") is None


# -- papers by id through the arxiv package ---------------------------------------------------------------

def serve_api(http_server):
    """Route /api/query to the recorded API answers, chosen by id_list as index.json says."""
    index = json.loads((API / "index.json").read_text())
    by_ids = {}
    for item in index:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(item["url"]).query)
        if query.get("id_list"):
            by_ids[query["id_list"][0]] = (item["file"], item["status_code"])

    def answer(request):
        ids = request.query.get("id_list", [""])[0]
        file, status = by_ids[ids]
        return Reply.file(API / file, status=status)

    http_server.routes["/api/query"] = answer


def test_fetch_papers_by_id_from_the_real_api_answers(http_server):
    serve_api(http_server)
    settings = make_settings(http_server.url, contact="ops@example.org")
    found, missing = api.fetch_papers(settings, ["quant-ph/0201082v1"])
    assert missing == []
    (paper,) = found
    assert (paper.id, paper.version) == ("quant-ph/0201082", 1)
    request = http_server.requests[0]
    assert request.query["id_list"] == ["quant-ph/0201082v1"] and request.query["max_results"] == ["100"]
    assert "mailto:ops@example.org" in request.headers["user-agent"]
    assert "arxiv.py" not in request.headers["user-agent"]


def test_fetch_papers_reports_missing_and_invalid_ids(http_server):
    serve_api(http_server)
    settings = make_settings(http_server.url)
    found, missing = api.fetch_papers(settings, ["0808.05394", "1707.08567", "not-an-id"])
    assert [p.id for p in found] == ["1707.08567"]
    assert missing == ["0808.05394", "not-an-id"]
    paper = found[0]
    assert paper.title and paper.abstract and paper.authors and paper.published.startswith("2017-")


def test_the_real_400_of_the_api_is_quoted(http_server):
    # arXiv answers HTTP 400 with an error feed; here it is served for a well-formed id to reach it.
    http_server.routes["/api/query"] = lambda r: Reply.file(API / "id_abc_s0_m100_b79c8dcf6bc3.xml", status=400)
    settings = make_settings(http_server.url)
    with pytest.raises(http.ArxivError) as info:
        api.fetch_papers(settings, ["2401.01234"], raise_errors=True)
    assert str(info.value) == "arXiv's API answered HTTP 400: incorrect id format for abc"
    assert api.fetch_papers(settings, ["2401.01234"]) == ([], ["2401.01234"])  # degraded, not raised


# -- the announcement schedule ----------------------------------------------------------------------------

def et(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=calendar.ET)


@pytest.mark.parametrize("submitted, day", [
    (et(2026, 6, 22, 13, 59), D(2026, 6, 23)),   # Mon before the deadline -> mailed Mon 20:00 -> Tue
    (et(2026, 6, 22, 14, 0), D(2026, 6, 24)),    # Mon at the deadline -> next day's mailing
    (et(2026, 6, 24, 9, 0), D(2026, 6, 25)),     # Wed -> Thu
    (et(2026, 6, 25, 13, 0), D(2026, 6, 26)),    # Thu -> mailed Thu 20:00 -> Fri
    (et(2026, 6, 25, 15, 0), D(2026, 6, 29)),    # Thu after 14:00 -> mailed Sun 20:00 -> Mon
    (et(2026, 6, 26, 13, 0), D(2026, 6, 29)),    # Fri before 14:00 -> Mon
    (et(2026, 6, 26, 14, 30), D(2026, 6, 30)),   # Fri after 14:00 -> mailed Mon 20:00 -> Tue
    (et(2026, 6, 27, 12, 0), D(2026, 6, 30)),    # Saturday -> Tue
    (et(2026, 6, 28, 21, 0), D(2026, 6, 30)),    # Sunday night -> Tue
    (et(2026, 6, 18, 10, 0), D(2026, 6, 22)),    # Thu before Juneteenth: Fri 06-19 is a holiday -> Mon
    (et(2026, 7, 2, 10, 0), D(2026, 7, 6)),      # Thu before the 07-03 holiday -> Mon
    (dt.datetime(2026, 6, 22, 17, 59, tzinfo=dt.timezone.utc), D(2026, 6, 23)),  # 13:59 EDT
])
def test_announcement_day_of_a_submission(submitted, day):
    assert CALENDAR.announced_on_for(submitted) == day


def test_expected_announcement_days_on_the_2026_calendar():
    assert CALENDAR.announcement_days(D(2026, 6, 15), D(2026, 7, 6)) == [
        D(2026, 6, 15), D(2026, 6, 16), D(2026, 6, 17), D(2026, 6, 18),          # 06-19 holiday
        D(2026, 6, 22), D(2026, 6, 23), D(2026, 6, 24), D(2026, 6, 25), D(2026, 6, 26),
        D(2026, 6, 29), D(2026, 6, 30), D(2026, 7, 1), D(2026, 7, 2),            # 07-03 holiday
        D(2026, 7, 6),
    ]
    assert not CALENDAR.expected(D(2026, 6, 27))
    assert set(LISTING_DAYS) <= set(CALENDAR.announcement_days(D(2026, 6, 1), D(2026, 7, 31)))


def test_submission_windows_tile_time_and_agree_with_the_rule():
    days = CALENDAR.announcement_days(D(2026, 1, 1), D(2026, 12, 31))
    windows = [CALENDAR.submission_window(d) for d in days]
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert CALENDAR.submission_window(D(2026, 6, 22)) == (et(2026, 6, 17, 14), et(2026, 6, 19, 14))
    assert CALENDAR.submission_window(D(2026, 6, 23)) == (et(2026, 6, 19, 14), et(2026, 6, 22, 14))
    with pytest.raises(ValueError):
        CALENDAR.submission_window(D(2026, 6, 19))


@given(st.datetimes(min_value=dt.datetime(2026, 1, 5), max_value=dt.datetime(2026, 12, 20)))
def test_every_submission_falls_in_the_window_of_its_day(moment):
    submitted = moment.replace(tzinfo=calendar.ET)
    day = CALENDAR.announced_on_for(submitted)
    start, end = CALENDAR.submission_window(day)
    assert start <= submitted < end


# -- backfill through the API ------------------------------------------------------------------------------

def test_backfill_stores_each_paper_on_its_announcement_day(http_server, db):
    serve_fake_api(http_server, {"cs.AI", "cs.CL"})
    settings = make_settings(http_server.url, "cs.AI+cs.CL")
    seen = []
    summary = api.backfill(db, settings, D(2026, 6, 22), D(2026, 6, 28), progress=lambda d, r: seen.append(d))
    assert seen == [D(2026, 6, 22), D(2026, 6, 23), D(2026, 6, 24), D(2026, 6, 25), D(2026, 6, 26)]
    expected = {day: {r["id"] for r in listing_papers(day) if set(r["categories"]) & {"cs.AI", "cs.CL"}}
                for day in seen if day in LISTING_DAYS}
    stored = collections.defaultdict(set)
    for row in db.query("SELECT announced_on, paper_id FROM announcements WHERE source = 'api'"):
        stored[D.fromisoformat(row["announced_on"])].add(row["paper_id"])
    assert stored == expected
    # The listing begins on 06-23: no paper at all for Monday 06-22, a day arXiv announces, is a failure (retried
    # at the next run), never an "empty" day that would be taken as settled.
    assert summary == {"days": 5, "announced": 4, "empty": 0, "failed": 1, "skipped": 0,
                       "papers": sum(map(len, expected.values())),
                       "errors": ["2026-06-22: arXiv's API returned no paper for 2026-06-22, a day arXiv should have "
                                  "announced"]}
    query = http_server.requests[1].query["search_query"][0]
    assert query == "(cat:cs.AI OR cat:cs.CL) AND submittedDate:[202606191800 TO 202606221759]"
    assert http_server.requests[1].query["sortBy"] == ["submittedDate"]
    assert [(r["announced_on"], r["source"], r["status"]) for r in fetch_rows(db)][:2] == [
        ("2026-06-22", "api", "failed"), ("2026-06-23", "api", "announced")]
    # a second run asks arXiv nothing for the days it already has
    before, asked = counts(db), len(http_server.requests)
    again = api.backfill(db, settings, D(2026, 6, 22), D(2026, 6, 28))
    assert (again["skipped"], again["announced"], counts(db)) == (4, 0, before)
    assert len(http_server.requests) == asked + 1  # only the failed day is asked again


# -- the days a run wants ---------------------------------------------------------------------------------

def clock_at(day: dt.date) -> calendar.Clock:
    """Noon ET on ``day``: that day's announcement is out, the next one is not."""
    return calendar.Clock(dt.datetime.combine(day, dt.time(12), tzinfo=calendar.ET) - dt.datetime.now(dt.timezone.utc))


def api_queries(http_server) -> list[str]:
    return [r.query["search_query"][0] for r in http_server.requests if r.path == "/api/query"]


def test_fetch_days_takes_each_day_from_the_feed_the_api_or_the_calendar(http_server, db):
    """A catch-up on Tuesday 06-30: the feed shows that day, the API has Friday's, and Saturday is settled by
    the calendar alone. With fetching off, what is stored is what there is, and arXiv is asked nothing."""
    tuesday, friday, saturday = D(2026, 6, 30), D(2026, 6, 26), D(2026, 6, 27)
    feeds = serve_feeds(http_server, {tuesday: feed_xml(tuesday, ["cs.AI"])}, day=tuesday)
    serve_fake_api(http_server, {"cs.AI"})
    settings = make_settings(http_server.url)
    fetched = fetch_days(db, settings, [friday, saturday, tuesday], clock_at(tuesday))
    assert (fetched.status, fetched.days, fetched.error) == ("announced", [friday, tuesday], None)
    assert fetched.counts == {"days": 2, "empty": 1, "failures": 0}
    assert len(feeds.requests) == 1
    assert api_queries(http_server) == ["cat:cs.AI AND submittedDate:[202606241800 TO 202606251759]"]
    assert [(r["announced_on"], r["source"], r["status"]) for r in fetch_rows(db)] == [
        ("2026-06-30", "feed", "announced"), ("2026-06-26", "api", "announced")]

    asked = len(http_server.requests)
    stored = fetch_days(db, settings, [D(2026, 6, 25), friday, tuesday], clock_at(tuesday), fetch=False)
    assert (stored.status, stored.days) == ("announced", [friday, tuesday])
    assert stored.error == "2026-06-25: nothing stored and fetching was turned off"
    assert len(http_server.requests) == asked


def test_a_day_arxiv_announced_nothing_on_is_settled_and_a_day_it_could_not_be_fetched_for_stays_owed(
        http_server, db):
    """arXiv skipped Friday 06-26 (a closure no list knows): its submissions came out on Monday 06-29. The API
    shows it, and the day is empty for good. Monday 06-22 is a day the API has no paper for: a failure, the
    stage marked failed, and the API is asked again next time."""
    monday = D(2026, 6, 29)
    serve_feeds(http_server, {monday: feed_xml(monday, ["cs.AI"], rows=listing_papers(D(2026, 6, 26)))}, day=monday)
    serve_fake_api(http_server, {"cs.AI"})
    settings = make_settings(http_server.url)
    skipped = fetch_days(db, settings, [D(2026, 6, 26)], clock_at(monday))
    assert (skipped.status, skipped.day, skipped.error) == ("empty", D(2026, 6, 26), None)
    assert skipped.detail == "not announced (its submissions were announced on 2026-06-29)"
    assert "error" not in skipped.counts

    failed = fetch_days(db, settings, [D(2026, 6, 22)], clock_at(monday))
    error = "2026-06-22: arXiv's API returned no paper for 2026-06-22, a day arXiv should have announced"
    assert (failed.status, failed.days, failed.error) == ("failed", [], f"fetching arXiv failed: {error}")
    assert failed.counts == {"days": 0, "empty": 0, "failures": 1, "error": error}

    asked = len(api_queries(http_server))
    assert fetch_days(db, settings, [D(2026, 6, 26)], clock_at(monday)).status == "empty"
    assert len(api_queries(http_server)) == asked  # settled: the API is not asked again
    assert fetch_days(db, settings, [D(2026, 6, 22)], clock_at(monday)).status == "failed"
    assert len(api_queries(http_server)) == asked + 1  # still owed: asked again


# -- the command ------------------------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_fetch_command_prints_one_line(http_server, write_config):
    day = D(2026, 6, 23)
    serve_feeds(http_server, {day: feed_xml(day, ["cs.AI"])}, day=day)
    write_config(arxiv_section(http_server.url) + '\n[profiles.me]\ninterests = ["agents"]\n')
    rows = [r for r in listing_papers(day) if "cs.AI" in r["categories"]]
    new = sum(1 for r in rows if r["primary_category"] == "cs.AI")
    result = run("fetch")
    assert result.exit_code == 0
    assert result.stdout == f"2026-06-23: {len(rows)} papers announced ({new} new, {len(rows) - new} cross-lists)\n"


def test_fetch_command_failure_and_usage_errors(http_server, write_config):
    serve_feeds(http_server, lambda d, cats: Reply(400, feed_error_xml("cs.AI")))
    write_config(arxiv_section(http_server.url) + '\n[profiles.me]\ninterests = ["agents"]\n')
    failed = run("fetch")
    assert failed.exit_code == 1
    # stderr also carries the logged line; the error is the last line
    assert failed.output.splitlines()[-1] == ("Error: fetching arXiv failed: arXiv's feed rejected the categories "
                                              "cs.AI: Feed error for query: cs.AI")
    backwards = run("fetch", "--since", "2026-06-25", "--until", "2026-06-22")
    assert (backwards.exit_code, backwards.output) == (2, "Error: --since 2026-06-25 is after --until 2026-06-22\n")
    bad = run("fetch", "--since", "June")
    assert (bad.exit_code, bad.output) == (2, 'Error: --since: expected a date as YYYY-MM-DD, got "June"\n')


def test_fetch_command_backfills_with_a_summary(http_server, write_config):
    serve_fake_api(http_server, {"cs.AI"})
    write_config(arxiv_section(http_server.url) + '\n[profiles.me]\ninterests = ["agents"]\n')
    total = sum(1 for day in (D(2026, 6, 29), D(2026, 6, 30)) for r in listing_papers(day)
                if "cs.AI" in r["categories"])
    result = run("fetch", "--since", "2026-06-27", "--until", "2026-06-30")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == f"2026-06-27..2026-06-30: 2 announcement days, {total:,} papers stored"
