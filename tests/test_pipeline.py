"""One whole run, end to end: recorded-format arXiv feeds, the real embedding model, a real SMTP server
with STARTTLS and AUTH, and an OpenAI-compatible LLM server, all on loopback."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from feeds import arxiv_section, feed_xml, listing_papers, serve_feeds
from loopback import Reply
from world import SMTP_PASSWORD, SMTP_USER, assert_ledger

from digest import embed, pipeline
from digest.cli import cli
from digest.config import parse_settings
from digest.records import Announcement, Paper
from digest.storage import db as dbm
from digest.storage import papers as paper_rows

DAY = dt.date(2026, 6, 26)  # a real feed day of the listing in tests/data/
CATEGORIES = ["cs.CL"]

pytestmark = pytest.mark.slow


def ids_in(text: str) -> list[str]:
    """Every paper id the digest links to, once per paper (the abstract link)."""
    return re.findall(r"https://arxiv\.org/abs/(\d{4}\.\d{4,5})\b", text)


def expected_ids(day: dt.date, expression) -> set[str]:
    return {r["id"] for r in listing_papers(day) if expression.matches(r["categories"])}


@pytest.fixture
def loopback_day(http_server, smtp, write_config, tmp_path):
    """A configured digest pointed at loopback arXiv and SMTP, with the feed showing DAY."""
    route = serve_feeds(http_server, {DAY: feed_xml(DAY, CATEGORIES)}, day=DAY)

    def configure(extra: str = "", llm: str = "", profiles: str | None = None):
        body = (
            arxiv_section(http_server.url, categories="+".join(CATEGORIES))
            + smtp.settings_toml(user=SMTP_USER, password=SMTP_PASSWORD)
            + f'[storage]\npath = "{tmp_path / "digest.db"}"\n'
            + f'[files]\ndir = "{tmp_path / "files"}"\n'
            + llm
            + extra
            + (profiles if profiles is not None else
               '[profiles.me]\ninterests = ["speech recognition for low-resource languages"]\n'
               'email_to = ["reader@example.org"]\n')
        )
        path = write_config(body)
        return parse_settings(body, environ={}, source=str(path))

    return route, configure


def run(settings, **kwargs):
    db = dbm.open_db(settings.database_path())
    try:
        return db, pipeline.run_day(db, settings, **kwargs)
    finally:
        assert_ledger(db, settings)


def test_a_day_arrives_once_with_every_paper(loopback_day, smtp):
    route, configure = loopback_day
    settings = configure()
    db, result = run(settings)
    assert result.status == "sent", result.error
    assert result.announced_on == DAY
    assert len(smtp.messages) == 1
    message = smtp.messages[0]
    assert message.rcpt_tos == ["reader@example.org"]
    expected = expected_ids(DAY, settings.expression_for(settings.profiles["me"]))
    text = message.part("plain")
    found = ids_in(text)
    assert sorted(set(found)) == sorted(expected)
    assert len(found) == len(expected)  # each paper exactly once
    digest = db.execute("SELECT announced, new, cross FROM digests").fetchone()
    assert digest[0] == len(expected) == digest[1] + digest[2]
    assert db.execute("SELECT COUNT(*) FROM digest_items").fetchone()[0] == len(expected)
    stages = [r[0] for r in db.execute("SELECT stage FROM run_stages ORDER BY started_at, rowid")]
    assert stages == ["fetch", "embed", "rank", "summarize", "render", "deliver"]

    # A second run of the same day sends nothing and changes nothing stored.
    counts = {t: db[t].count for t in ("papers", "announcements", "digests", "digest_items", "embeddings")}
    db, again = run(settings)
    assert again.status == "sent"
    assert len(smtp.messages) == 1
    assert {t: db[t].count for t in counts} == counts


def test_no_llm_still_sends_abstracts(loopback_day, smtp):
    route, configure = loopback_day
    # A model is configured but nothing listens on its port: every call fails, the digest still goes.
    settings = configure(llm='[llm]\nmodel = "gpt-test"\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "sk-x"\n'
                             'timeout = 2.0\ndeadline = 10.0\n')
    db, result = run(settings)
    assert result.status == "sent", result.error
    text = smtp.messages[0].part("plain")
    assert "no LLM summary" in text


def test_empty_feed_is_not_a_failure_and_sends_nothing(loopback_day, smtp):
    route, configure = loopback_day
    route.day = dt.date(2026, 6, 27)  # a Saturday: the feed is empty
    settings = configure()
    db, result = run(settings)
    assert result.status == "empty"
    assert smtp.messages == []
    assert db.execute("SELECT status FROM fetches").fetchall() == [("empty",)]
    assert db.execute("SELECT status FROM runs").fetchall() == [("empty",)]


def test_failed_fetch_is_recorded_with_its_reason(loopback_day, smtp, http_server):
    route, configure = loopback_day
    route.by_day = {DAY: Reply(503, "<html><body><h1>Service Unavailable</h1></body></html>",
                               content_type="text/html")}
    settings = configure()
    db, result = run(settings)
    assert result.status == "failed"
    assert result.error.startswith("fetching arXiv's feed failed: ")
    assert smtp.messages == []
    status, error = db.execute("SELECT status, error FROM runs").fetchone()
    assert status == "failed" and error == result.error


def test_smtp_down_waits_in_the_outbox_then_sends_once(loopback_day, smtp):
    route, configure = loopback_day
    settings = configure()
    smtp.fail_data("451 4.3.0 temporary failure, try again later", times=1)
    db, result = run(settings)
    assert result.status == "pending"
    assert "451" in result.error
    row = db.execute("SELECT status, attempts FROM deliveries").fetchone()
    assert row == ("pending", 1)
    db.execute("UPDATE deliveries SET next_attempt_at = NULL")  # the retry is due now
    db, again = run(settings)
    assert again.status == "sent"
    assert len(smtp.messages) == 1
    assert db.execute("SELECT status FROM deliveries").fetchone() == ("sent",)


def test_dry_run_renders_and_stores_nothing(loopback_day, smtp):
    route, configure = loopback_day
    settings = configure()
    db, result = run(settings, dry_run=True)
    assert result.status == "rendered"
    assert smtp.messages == []
    assert db["digests"].count == 0
    html = open(next(p for p in result.previews if p.endswith(".html"))).read()
    assert sorted(set(ids_in(html))) == sorted(expected_ids(DAY, settings.expression_for(settings.profiles["me"])))


def test_profiles_each_get_their_own_categories(loopback_day, smtp, http_server):
    route, configure = loopback_day
    route.by_day = {DAY: feed_xml(DAY, ["cs.CL", "cs.AI"])}
    settings = configure(profiles=(
        '[profiles.speech]\ninterests = ["speech"]\ncategories = "cs.CL-cs.AI"\nemail_to = ["a@example.org"]\n'
        '[profiles.agents]\ninterests = ["agents"]\ncategories = "cs.AI"\nemail_to = ["b@example.org"]\n'),
        extra="")
    db, result = run(settings)
    assert result.status == "sent", result.error
    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
    assert set(by_rcpt) == {"a@example.org", "b@example.org"}
    for address, profile in (("a@example.org", "speech"), ("b@example.org", "agents")):
        expected = expected_ids(DAY, settings.expression_for(settings.profiles[profile]))
        assert sorted(ids_in(by_rcpt[address].part("plain"))) == sorted(expected)
    # Each paper is embedded once, however many profiles rank it.
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT paper_id) FROM embeddings").fetchone()[0] == \
        db.execute("SELECT COUNT(DISTINCT paper_id) FROM embeddings").fetchone()[0]


def test_cli_run_exit_status(loopback_day, smtp, http_server):
    route, configure = loopback_day
    configure()
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"2026-06-26: sent to me \(\d+ papers, 0 summarized\)\n", result.stdout)
    route.day = dt.date(2026, 6, 29)
    route.by_day = {route.day: Reply(200, "<html><body>Bad gateway</body></html>", content_type="text/html")}
    failed = CliRunner().invoke(cli, ["run"])
    assert failed.exit_code == 1
    assert failed.stderr.splitlines()[-2].startswith("Error: fetching arXiv's feed failed: ")
    assert failed.stderr.splitlines()[-1] == "`digest status` shows the details (is this machine offline?)"
    unknown = CliRunner().invoke(cli, ["run", "--profile", "nobody"])
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith('Error: --profile: no profile named "nobody" in ')


def test_summaries_for_the_top_section_and_a_rerun_costs_nothing(loopback_day, smtp):
    from llm_server import LLMServer

    route, configure = loopback_day
    with LLMServer() as llm:
        settings = configure(llm=f'[llm]\nmodel = "gpt-test"\nbase_url = "{llm.url}"\napi_key = "sk-loopback-123"\n'
                                 'summarize = 5\n[digest]\ntop = 8\n')
        db, result = run(settings)
        assert result.status == "sent", result.error
        assert len(llm.requests) == 5
        top = [r[0] for r in db.execute(
            "SELECT paper_id FROM digest_items WHERE section = 'top' ORDER BY rank")]
        assert len(top) == 8
        assert sorted(r.paper_id for r in llm.requests) == sorted(top[:5])
        text = " ".join(smtp.messages[0].part("plain").split())  # the text part wraps long lines
        for paper_id in top[:5]:
            title = db.execute("SELECT title FROM papers WHERE id = ?", [paper_id]).fetchone()[0]
            assert f"TL;DR of {title}" in text
        assert text.count("no LLM summary") == 3  # ranks 6-8: the abstract, labelled
        assert db.execute("SELECT summarized FROM digests").fetchone()[0] == 5

        # A dry run asks the LLM nothing.
        run(settings, days=[DAY], dry_run=True)
        assert len(llm.requests) == 5


def test_full_text_mode_summarizes_the_top_paper_from_arxivs_html(loopback_day, smtp, http_server):
    from llm_server import LLMServer

    route, configure = loopback_day
    page = ("<html><head><style>p {color: red}</style><script>var leak = 1;</script></head><body>"
            "<nav>arXiv navigation</nav><h2>1 Introduction</h2><p>The hidden method uses a zebra-striped "
            "attention mask.</p><section class='ltx_bibliography'><p>[1] Some reference.</p></section>"
            "</body></html>")
    http_server.routes["/html/"] = lambda request: Reply(body=page, content_type="text/html")
    with LLMServer() as llm:
        settings = configure(
            extra=f'[llm]\nmodel = "gpt-test"\nbase_url = "{llm.url}"\napi_key = "sk-x"\nsummarize = 3\nfull_text = 1\n'
                  '[digest]\ntop = 3\n')
        settings = settings.model_copy(update={"arxiv": settings.arxiv.model_copy(
            update={"html_url": f"{http_server.url}/html/"})})
        db, result = run(settings)
        assert result.status == "sent", result.error
        first = db.execute("SELECT paper_id FROM digest_items WHERE rank = 1").fetchone()[0]
        prompts = {r.paper_id: r.prompt for r in llm.requests}
        assert "zebra-striped attention mask" in prompts[first]
        assert "var leak" not in prompts[first] and "Some reference" not in prompts[first]
        assert all("zebra" not in prompt for pid, prompt in prompts.items() if pid != first)
        html_requests = [r.path for r in http_server.requests if r.path.startswith("/html/")]
        assert html_requests == [f"/html/{first}v1"]


def test_a_run_killed_after_storing_its_digest_still_sends_it(loopback_day, smtp, monkeypatch):
    route, configure = loopback_day
    settings = configure()

    def killed(*args, **kwargs):  # stands in for SIGTERM between the render and deliver stages
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "deliver_due", killed)
    with pytest.raises(KeyboardInterrupt):
        run(settings)
    monkeypatch.undo()
    db = dbm.open_db(settings.database_path())
    assert db.execute("SELECT status FROM deliveries").fetchall() == [("pending",)]
    db, result = run(settings)
    assert result.status == "sent"
    assert len(smtp.messages) == 1


def test_a_model_that_cannot_load_is_one_line_and_exit_2(loopback_day, smtp):
    route, configure = loopback_day
    configure(extra='[embedding]\nmodel = "/nonexistent/model-dir"\n')
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith("Error: embedding.model /nonexistent/model-dir: cannot load")


# -- many profiles ------------------------------------------------------------------------------------------

BIG_DAY = dt.date(2026, 6, 23)  # 537 papers: a profile's work is then large enough to see if it were kept
# `digest run` with its own peak resident memory (VmHWM) written at exit to the file named first: a child's
# rusage would carry the high-water mark of this test process (bench/peak_rss.py says why).
PEAK_OF_RUN = ("import atexit, sys\nout = sys.argv.pop(1)\n"
               "def peak():\n    status = open('/proc/self/status').read()\n"
               "    open(out, 'w').write(status.split('VmHWM:')[1].split()[0])\n"
               "atexit.register(peak)\nfrom digest.cli import main\nsys.argv[0] = 'digest'\nmain()\n")


@pytest.fixture(scope="module")
def embedded_day(tmp_path_factory):
    """BIG_DAY stored and embedded once for the module, as its fetch and embed stages leave it."""
    path = tmp_path_factory.mktemp("big-day") / "digest.db"
    papers = [Paper(id=r["id"], version=1, title=r["title"], abstract=r["abstract"], authors=r["authors"],
                    categories=r["categories"], primary_category=r["primary_category"])
              for r in listing_papers(BIG_DAY)]
    db = dbm.open_db(path)
    paper_rows.save_announcements(db, [Announcement(p, BIG_DAY, "new", i) for i, p in enumerate(papers)], "listing")
    embed.embed_papers(db, papers, parse_settings(f'[storage]\npath = "{path}"\n[profiles.x]\ninterests = ["x"]\n'),
                       progress=False)
    db.conn.close()
    return path


def peak_of_run(folder, source, profiles: int) -> int:
    """The peak resident memory (kB) of `digest run` building BIG_DAY's digest for ``profiles`` readers of
    every paper, each delivered to a file."""
    folder.mkdir()
    shutil.copy(source, folder / "digest.db")
    config = folder / "config.toml"
    config.write_text(f'[arxiv]\ncategories = "cs"\n[storage]\npath = "{folder / "digest.db"}"\n'
                      f'[files]\ndir = "{folder / "files"}"\n'
                      + "".join(f'[profiles.p{i}]\ninterests = ["topic {i % 7}: language models"]\n'
                                for i in range(profiles)), encoding="utf-8")
    ran = subprocess.run([sys.executable, "-c", PEAK_OF_RUN, str(folder / "peak"), "--config", str(config), "run",
                          "--day", BIG_DAY.isoformat(), "--no-fetch"], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert len(list((folder / "files").rglob("*.html"))) == profiles
    return int((folder / "peak").read_text())


def test_a_run_for_200_readers_takes_no_more_memory_than_a_run_for_2(embedded_day, tmp_path):
    two = peak_of_run(tmp_path / "two", embedded_day, 2)
    many = peak_of_run(tmp_path / "many", embedded_day, 200)
    # Kept, a profile's ranked day (537 papers) would add about 1.6 MB: 320 MB over 200 readers.
    assert many <= two * 1.10, f"2 profiles: {two / 1024:.0f} MB, 200 profiles: {many / 1024:.0f} MB"
