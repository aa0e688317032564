"""The digest as the reader's mail client shows it, from a real `digest run` process on a 602-paper day.

Gmail clips a message whose HTML passes about 102 KB behind "[Message clipped]"; most readers never open it.
So the email's HTML body stays under 100,000 bytes, every announced paper still reaches the reader in the same
message (the body, the text part and the attached complete digest), every entry starts with the number its
place follows, each reason adds up to that number, identifiers are shown as arXiv writes them, and the text
part keeps to 80 columns. The day is the two busiest cs.AI days of tests/data/cs.AI_2025-09-29_and_30.jsonl.gz
served as one feed, with an LLM, feedback links and SMTP on loopback.
"""

from __future__ import annotations

import datetime as dt
import gzip
import html as htmllib
import json
import re
import sqlite3

import pytest
from conftest import DATA
from feeds import arxiv_section, feed_xml, serve_feeds
from llm_server import LLMServer
from smtp_server import SMTPServer
from world import SMTP_PASSWORD, SMTP_USER, digest_process

from digest.rank import reason_values
from digest.taxonomy import CATEGORIES

pytestmark = pytest.mark.slow

DAY = dt.date(2026, 6, 26)
READER = "reader@example.org"
ENTRY = re.compile(r'<div id="arxiv-([^"]+)"(.*?)(?=<div id="arxiv-|<p class="(?:label|muted rule)")', re.S)
NUMBER = re.compile(r"-?\d+\.\d+")


def two_busy_days() -> list[dict]:
    with gzip.open(DATA / "cs.AI_2025-09-29_and_30.jsonl.gz", "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def entries(page: str) -> list[tuple[str, str]]:
    """(id, visible text) of each paper's entry, in page order."""
    return [(paper_id, " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", body)).split()))
            for paper_id, body in ENTRY.findall(page)]


def first_numbers(page: str) -> list[float]:
    return [float(NUMBER.search(text)[0]) for _, text in entries(page)]


@pytest.fixture(scope="module")
def big_day(tmp_path_factory):
    """One real run of `digest run` on the 602-paper day; what arrived, and the database it kept."""
    from loopback import LoopbackServer

    rows = two_busy_days()
    folder = tmp_path_factory.mktemp("reader")
    with LoopbackServer() as http, SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as smtp, LLMServer() as llm:
        serve_feeds(http, {DAY: feed_xml(DAY, ["cs.AI"], rows)}, day=DAY)
        config = folder / "config.toml"
        config.write_text(
            arxiv_section(http.url, categories="cs.AI")
            + smtp.settings_toml(user=SMTP_USER, password=SMTP_PASSWORD)
            + f'[storage]\npath = "{folder / "digest.db"}"\n'
            + f'[llm]\nmodel = "gpt-test"\nbase_url = "{llm.url}"\napi_key = "sk-test"\n'
            + '[feedback]\nlisten = "127.0.0.1:8425"\npublic_url = "https://digest.example.org"\n'
            + f'key = "{"ab" * 32}"\n'
            + '[profiles.me]\ninterests = ["large language model agents", "reinforcement learning"]\n'
            + f'email_to = ["{READER}"]\n', encoding="utf-8")
        done = digest_process(["--config", str(config), "run", "--day", DAY.isoformat()], timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        [mail] = smtp.messages
    return rows, mail, folder / "digest.db"


def test_the_html_body_stays_under_gmails_clipping_size_and_names_what_it_leaves_out(big_day):
    rows, mail, _ = big_day
    body = mail.part("html")
    assert len(body.encode("utf-8")) <= 100_000
    [sent] = [p for p in mail.message.walk() if p.get_content_type() == "text/html" and not p.is_attachment()]
    assert sent["Content-Transfer-Encoding"] == "quoted-printable"
    assert len(sent.get_payload().encode()) <= 100_000  # also as it went over the wire, encoded
    shown = [paper_id for paper_id, _ in entries(body)]
    attachment = mail.attachments()[f"digest-me-{DAY}.html"]
    complete = [paper_id for paper_id, _ in entries(attachment)]
    assert shown == complete[:len(shown)], "the body shows the first papers, in the complete digest's order"
    assert f"{len(rows) - len(shown)} more papers, ranked, are in the attached digest-me-{DAY}.html" in body
    assert "Top 15" in body and all(f'id="arxiv-{i}"' in body for i in complete[:15])  # the top section is whole


def test_every_announced_paper_is_in_the_message_once_per_part(big_day):
    rows, mail, _ = big_day
    ids = sorted(r["id"] for r in rows)
    assert sorted(paper_id for paper_id, _ in entries(mail.attachments()[f"digest-me-{DAY}.html"])) == ids
    assert sorted(re.findall(r"arXiv:(\d{4}\.\d{4,5})", mail.part("plain"))) == ids


def test_no_identifier_is_taken_for_a_link(big_day):
    _, mail, _ = big_day
    message = mail.raw.decode("utf-8", "replace") + "".join(mail.attachments().values()) + mail.part("plain")
    assert "[link removed]" not in message
    body = mail.part("html")
    assert body.count("cs.AI") >= 15 and "· cs.AI" in body


def test_the_first_number_of_each_entry_never_rises_down_the_page(big_day):
    _, mail, _ = big_day
    for page in (mail.part("html"), mail.attachments()[f"digest-me-{DAY}.html"]):
        numbers = first_numbers(page)
        assert len(numbers) > 100
        assert numbers == sorted(numbers, reverse=True)
    text_numbers = [float(n) for n in re.findall(r"^(-?\d+\.\d\d)  ", mail.part("plain"), re.M)]
    assert text_numbers == sorted(text_numbers, reverse=True) and len(text_numbers) == 602


def test_each_reason_adds_up_to_the_score_shown(big_day):
    _, mail, path = big_day
    with sqlite3.connect(path) as db:
        items = db.execute("SELECT score, reason FROM digest_items ORDER BY rank").fetchall()
    assert len(items) == 602
    for score, reason in items:
        assert sum(reason_values(reason)) == pytest.approx(float(f"{score:.2f}"), abs=1e-9), reason
    shown = {paper_id: text for paper_id, text in entries(mail.attachments()[f"digest-me-{DAY}.html"])}
    assert not any(re.search(r'about "[^"]+" \+0\.0\d\b', text) for text in shown.values()), \
        "a paper close to nothing says so instead of 'about X (0.03)'"
    assert any("close to none of your interests or papers" in text for text in shown.values())


def test_the_text_part_keeps_to_80_columns_and_signs_off_properly(big_day):
    _, mail, _ = big_day
    text = mail.part("plain")
    too_long = [line for line in text.splitlines() if len(line) > 80 and not re.fullmatch(r"https?://\S+", line)]
    assert too_long == []
    assert "\n-- \n" in text.replace("\r\n", "\n")


@pytest.mark.parametrize("code", sorted(CATEGORIES))
def test_every_category_code_of_arxivs_taxonomy_survives_the_cleaner(code):
    from digest.text import clean_untrusted

    title = f"Benchmarks for {code} agents ({code}/0101001), cf. {code}."
    assert clean_untrusted(title) == title


def test_on_a_phone_the_received_body_reads_as_a_list_with_tap_targets(big_day, tmp_path):
    from test_render_browser import CHROMIUM, phone_layout

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _, mail, _ = big_day
    layout = phone_layout(tmp_path, mail.part("html"))
    starts = dict(layout["heads"])
    assert starts["Every other paper (587)"] <= 6_100, layout["heads"]
    assert len(layout["votes"]) == 30 and all(w >= 44 and h >= 44 for w, h in layout["votes"]), layout["votes"]
