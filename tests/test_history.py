"""The history commands, against a database filled with the real papers of the listing and
digests, deliveries, summaries, LLM calls and runs written the way the pipeline writes them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import shutil
import zoneinfo

import numpy as np
import pytest
from click.testing import CliRunner
from feeds import listing_papers
from filled_history import paper_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from digest.cli import cli
from digest.config import parse_settings
from digest.history import EXPORT_FORMATS, export, search, views
from digest.history.status import status as status_of
from digest.history.vectors import VectorIndex
from digest.records import Paper
from digest.schedule import next_firing, next_run, schedule_trigger
from digest.storage import db as dbm
from digest.storage import papers as paper_rows
from digest.storage.feedback import set_feedback

MODEL = "all-MiniLM-L6-v2"
# Papers about spiking networks, and one whose "spikes" the porter stemmer files under the same word.
SPIKING = ["2606.24075", "2606.30191", "2606.29847", "2606.31781", "2606.31695", "2606.22953"]


def listing() -> list[dict]:
    return listing_papers()


@pytest.fixture
def db_path(filled_history):
    return filled_history.db_path


@pytest.fixture
def filled_db(db_path):
    return dbm.open_db(db_path)


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def rendered(renderable) -> str:
    console = Console(width=120, record=True, file=io.StringIO(), highlight=False, soft_wrap=False)
    console.print(renderable)
    return console.export_text()


# -- search ------------------------------------------------------------------------------------------

def test_search_prints_a_ranked_table_with_snippets(db_path):
    result = run("search", "spiking transformer", "--limit", "2")
    assert result.exit_code == 0
    assert result.output == (
        '┏━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓\n'
        '┃ # ┃ id         ┃ announced  ┃  score ┃ paper                                                                         ┃\n'
        '┡━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩\n'
        '│ 1 │ 2606.31781 │ 2026-06-30 │ 14.988 │ SpikeLogBERT: Energy-Efficient Log Parsing Using Spiking Transformer Networks │\n'
        '│   │            │            │        │ Thuan Bui, Duong Do, Tung Vu, et al.                                          │\n'
        '│   │            │            │        │ …This paper presents SpikeLogBERT, a spiking neural network framework for     │\n'
        '│   │            │            │        │ energy-efficient log parsing. The proposed model integrates a spiking         │\n'
        '│   │            │            │        │ transformer architecture with knowledge…                                      │\n'
        '│ 2 │ 2606.24075 │ 2026-06-23 │ 12.920 │ End-to-End Radar and Communication Modulation Recognition with Neuromorphic   │\n'
        '│   │            │            │        │ Computing                                                                     │\n'
        '│   │            │            │        │ Xiaohu Li, Chongxiao Qu, Caiyong Lin, et al.                                  │\n'
        '│   │            │            │        │ …Motivated by these works, we propose EMRFormer, a novel end-to-end spiking   │\n'
        '│   │            │            │        │ nerural network (SNN) architecture that applies spike-driven transformer to   │\n'
        '│   │            │            │        │ the…                                                                          │\n'
        '└───┴────────────┴────────────┴────────┴───────────────────────────────────────────────────────────────────────────────┘\n'
    )


def test_search_json_is_valid_and_marks_hits(db_path):
    result = run("search", "colorization", "--json")
    rows = json.loads(result.output)
    assert rows[0]["id"] == "2606.20722"  # the porter stemmer also finds "color" and "colors" further down
    assert len(rows) == 20 and all(r["score"] <= rows[0]["score"] for r in rows)
    assert rows[0]["announced"] == "2026-06-22"
    assert rows[0]["authors"] == ["Colten Reissmann", "Hugo Garrido-Lestache Belinchon"]
    assert "many plausible **colorizations** can correspond" in rows[0]["snippet"]


def test_search_csv_has_a_header_and_one_row_per_paper(db_path):
    result = run("search", "spiking", "--csv")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert list(rows[0]) == ["id", "announced", "score", "title", "authors", "categories", "snippet"]
    assert sorted(r["id"] for r in rows) == sorted(SPIKING)


@pytest.mark.parametrize("query", ['"', "spiking*", "NEAR(spiking", "spiking AND", "(spiking", "spiking)", 'spik"ing',
                                   "spiking OR NOT", "-spiking", "spiking:", "^spiking", "{spiking}", "spiking +"])
def test_fts_syntax_characters_are_searched_as_text(db_path, query):
    result = run("search", "--json", "--", query)
    if query == '"':
        assert result.exit_code == 2
        assert result.output == 'Error: nothing to search for in "\\"": give at least one word\n'
        return
    assert result.exit_code == 0, result.output
    found = {r["id"] for r in json.loads(result.output)}
    words = re.findall(r"\w+", query.replace("NEAR", "").replace("AND", "").replace("OR", "").replace("NOT", ""))
    if words == ["spik", "ing"]:  # a quote inside a word splits nothing: it becomes a space
        assert found == set()
    elif query == "NEAR(spiking":
        assert found == set()  # "near" is a word here, and no spiking paper has it
    elif query == "spiking OR NOT":
        assert found and found < set(SPIKING)  # "or" and "not" are words that some of them contain
    else:
        assert found == set(SPIKING), query


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(list('ab "*()^:+-{}.,\'é') + ["NEAR", "AND", "OR", "NOT", "spik"]), max_size=15)
       .map("".join))
def test_no_query_text_reaches_fts5_as_syntax(filled_db, text):
    try:
        search.search(filled_db, text, limit=3)
    except search.HistoryError as exc:  # only "empty" or "nothing to search for", never an FTS5 error
        assert str(exc).startswith(("empty query", "nothing to search for"))


def test_an_operator_word_is_a_search_term(filled_db):
    near = search.search(filled_db, "NEAR", limit=100)
    texts = {r["id"]: f"{r['title']} {r['abstract']}" for r in listing()}
    assert near and all(re.search(r"\bnear", texts[r["id"]], re.IGNORECASE) for r in near)


def test_prefix_and_phrase(filled_db):
    assert "2606.20722" in {r["id"] for r in search.search(filled_db, "graysc*", limit=100)}
    assert search.search(filled_db, "graysc") == []  # without the star, a word is a whole word
    assert search.fts_query('"image colorization" text') == '"image colorization" "text"'
    assert search.fts_query('spik* NEAR "a') == '"spik"* "NEAR" "a"'


def test_raw_passes_fts5_syntax_and_reports_its_errors(db_path):
    ok = run("search", "--raw", "spiking NOT transformer", "--json")
    with_transformers = {r["id"] for r in listing() if re.search(r"transformer", r["title"] + r["abstract"], re.I)}
    assert {r["id"] for r in json.loads(ok.output)} == set(SPIKING) - with_transformers != set(SPIKING)
    bad = run("search", "--raw", "NEAR(spiking")
    assert bad.exit_code == 2
    assert bad.output.startswith("Error: --raw: not a valid FTS5 query: ") and bad.output.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["search", ""], "Error: empty query: give words to search for\n"),
    (["search", "   "], "Error: empty query: give words to search for\n"),
    (["search", "x", "--since", "June"], 'Error: --since: expected a date as YYYY-MM-DD, got "June"\n'),
    (["search", "x", "--until", "2026-02-30"], 'Error: --until: expected a date as YYYY-MM-DD, got "2026-02-30"\n'),
    (["search", "x", "--since", "2026-07-01", "--until", "2026-06-01"],
     "Error: --since 2026-07-01 is after --until 2026-06-01\n"),
    (["search", "x", "--category", "cs.XX"],
     'Error: --category: "cs.XX" is not an arXiv category (e.g. cs.CL, or an archive such as cs)\n'),
    (["search", "x", "--profile", "nobody"], None),
    (["show", "2606.207"], 'Error: "2606.207" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)\n'),
    (["show", "../etc/passwd"],
     'Error: "../etc/passwd" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)\n'),
    (["like", "hello"], 'Error: "hello" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)\n'),
    (["digests", "--day", "yesterday"], 'Error: --day: expected a date as YYYY-MM-DD, got "yesterday"\n'),
    (["digests", "--day", "2026-06-28"], "Error: no digest for 2026-06-28; `digest digests` lists the days there are\n"),
    (["digests", "--day", "2026-06-29", "--csv"], "Error: --csv: a day's digests in full are text or --json\n"),
    (["export"], "Error: give one of --day, --query or --liked\n"),
    (["export", "--day", "2026-06-22", "--liked"], None),
    (["export", "--day", "2026-06-27"], "Error: nothing stored for 2026-06-27: arXiv announces nothing on Saturdays\n"),
    (["export", "--day", "2026-07-07"],
     "Error: nothing stored for 2026-07-07: not fetched yet (`digest run --day 2026-07-07` fetches it)\n"),
])
def test_bad_input_is_one_line_and_exit_2(db_path, args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    if message:
        assert result.output == message
    if args[-1] == "nobody":
        assert result.output == f'Error: --profile: no profile named "nobody" in {db_path.parent.parent / "home"}' \
            f'/.config/digest/config.toml (profiles: me, vision)\n'


def test_filters_narrow_the_search(filled_db):
    spiking = lambda **kw: {r["id"] for r in search.search(filled_db, "spiking", search.Filters(**kw), limit=50)}
    assert spiking(since=dt.date(2026, 6, 29)) == {"2606.30191", "2606.29847", "2606.31781", "2606.31695"}
    assert spiking(until=dt.date(2026, 6, 28)) == {"2606.24075", "2606.22953"}
    assert spiking(category="cs.CV") == {r["id"] for r in listing() if r["id"] in SPIKING and "cs.CV" in r["categories"]}
    assert spiking(category="cs") == set(SPIKING)
    assert spiking(author="Thuan Bui") == {"2606.31781"}
    assert spiking(author="thuan BUI") == {"2606.31781"}  # as forgiving as a search box
    assert spiking(profile="me") == {"2606.29847", "2606.24075", "2606.31781"}
    assert spiking(liked=True) == set()
    set_feedback(filled_db, "2606.24075", 1, "vision")
    assert spiking(liked=True) == {"2606.24075"}
    assert spiking(liked=True, profile="me") == set()  # liked for another profile only


def test_author_filter_escapes_like_wildcards(filled_db):
    assert search.search(filled_db, "spiking", search.Filters(author="%")) == []
    assert search.search(filled_db, "spiking", search.Filters(author="_")) == []


# -- show, digests, digest ---------------------------------------------------------------------------

def test_show_has_versions_days_ranks_summary_and_feedback(db_path):
    run("like", "2606.29847", "--profile", "me")
    details = json.loads(run("show", "arXiv:2606.29847v1", "--json").output)
    assert details["id"] == "2606.29847" and details["stored"] is True
    assert details["announcements"] == [{"day": "2026-06-29", "kind": "new", "version": 1, "source": "listing"}]
    assert details["digests"] == [{"day": "2026-06-29", "profile": "me", "rank": 1, "score": 0.7123, "section": "top",
                                   "reason": 'close to your interest "spiking networks"'}]
    assert details["summary"]["tldr"] == "Trains SNNs well."
    assert [q["question"] for q in details["summary"]["faq"]] == [
        "What problem does the paper try to solve?", "How does the paper solve it?", "Summary"]
    assert [(f["profile"], f["feedback"]) for f in details["feedback"]] == [("me", "like")]
    text = run("show", "2606.29847").output
    assert "What problem does the paper try to solve?\nSpiking nets are hard to train.\n" in text
    assert "Feedback: like (me)" in text


def test_show_lists_every_version(db_path):
    details = json.loads(run("show", "2606.27538", "--json").output)
    assert details["versions"] == [1, 2]
    assert [(a["day"], a["kind"]) for a in details["announcements"]] == [("2026-06-28", "new"), ("2026-06-30", "replace")]


def test_show_fetches_a_paper_not_stored_from_the_api(filled_db, http_server, write_config, db_path):
    from conftest import DATA
    from loopback import Reply

    recorded = DATA / "api" / "id_astro-ph_0601001_s0_m100_3150dca9dc76.xml"
    http_server.routes["/api/query"] = lambda request: Reply.file(recorded)
    write_config(f'[storage]\npath = "{db_path}"\n[arxiv]\napi_url = "{http_server.url}/api/query"\n'
                 f'min_interval = 0\n[profiles.me]\ninterests = ["x"]\n')
    result = run("show", "astro-ph/0601001", "--json")
    assert result.exit_code == 0, result.output
    details = json.loads(result.stdout)  # stderr has the arxiv client's log lines
    assert details["id"] == "astro-ph/0601001" and details["stored"] is False
    assert details["journal_ref"]
    assert paper_rows.get_paper(filled_db, "astro-ph/0601001") is None  # show only reads
    assert len(http_server.requests) == 1


def test_digests_lists_days_with_delivery_status(db_path):
    result = run("digests")
    assert result.output == (
        '┏━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━┳━━━━━┳━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓\n'
        '┃ day        ┃ profile ┃ announced ┃ new ┃ cross ┃ summarized ┃ delivery                         ┃\n'
        '┡━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━╇━━━━━╇━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩\n'
        '│ 2026-06-30 │ me      │ 2         │ 2   │ 0     │ 0          │ email to me@example.org: pending │\n'
        '│ 2026-06-29 │ me      │ 3         │ 2   │ 1     │ 1          │ email to me@example.org: sent    │\n'
        '└────────────┴─────────┴───────────┴─────┴───────┴────────────┴──────────────────────────────────┘\n'
    )
    rows = json.loads(run("digests", "--json").output)
    assert [(r["day"], r["delivery"]) for r in rows] == [("2026-06-30", "email to me@example.org: pending"),
                                                         ("2026-06-29", "email to me@example.org: sent")]


def test_digest_prints_the_stored_text_render(db_path):
    result = run("digests", "--day", "2026-06-29")
    assert result.output == "arXiv cs.CL, 29 June: 3 papers\n\n1. Spiking ...\n"


def test_a_digest_without_a_stored_text_says_so_and_json_still_lists_its_items(db_path):
    result = run("digests", "--day", "2026-06-30", "--profile", "me")
    assert result.output == "digest 2: no text was stored with it\n"
    data = json.loads(run("digests", "--day", "2026-06-30", "--json").output)
    assert [i["id"] for i in data[0]["items"]] == ["2606.31781", "2606.31166"]


# -- feedback ----------------------------------------------------------------------------------------

def test_like_dislike_and_clear(db_path, filled_db):
    assert run("like", "https://arxiv.org/abs/2606.20722v3").output == (  # within 120 columns, into a pipe
        "Liked 2606.20722 (Multimodal Image Colorization: Quantifying the Impact of Text-Conditioned Guidance on\n"
        "  Grayscale-to-Color Translation) for every profile.\n")
    assert run("dislike", "2606.21162", "--profile", "me").output == (
        "Disliked 2606.21162 (PIAvatar: Physically Interactive Avatars via Deformation Gradient Decoupling) "
        "for profile me.\n")
    set_feedback(filled_db, "2401.99999", 1)  # a like recorded before `digest like` checked ids with arXiv
    run("dislike", "2606.20722")  # the latest word wins
    rows = filled_db.execute("SELECT paper_id, profile, value FROM feedback ORDER BY paper_id").fetchall()
    assert rows == [("2401.99999", "", 1), ("2606.20722", "", -1), ("2606.21162", "me", -1)]
    listed = json.loads(run("feedback", "--json").output)
    assert {(r["id"], r["feedback"], r["profile"]) for r in listed} == {
        ("2401.99999", "like", None), ("2606.20722", "dislike", None), ("2606.21162", "dislike", "me")}
    assert run("feedback", "--clear", "2606.20722").output == "Cleared 1 feedback entry.\n"
    assert run("feedback", "--clear-all", "--profile", "me").output == "Cleared 1 feedback entry.\n"
    assert filled_db.execute("SELECT paper_id FROM feedback").fetchall() == [("2401.99999",)]


def test_like_takes_several_ids_and_stores_none_when_one_is_wrong(db_path, filled_db):
    bad = CliRunner().invoke(cli, ["like", "2606.20722", "arXiv:nonsense", "2606.21162"])
    assert (bad.exit_code, bad.output) == (
        2, 'Error: "arXiv:nonsense" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)\n')
    assert filled_db.execute("SELECT COUNT(*) FROM feedback").fetchone() == (0,)
    done = run("like", "2606.20722", "https://arxiv.org/abs/2606.21162v2", "--profile", "me")
    assert [line.split(" (")[0] for line in done.output.splitlines() if not line.startswith(" ")] == [
        "Liked 2606.20722", "Liked 2606.21162"]  # a long title continues on an indented line
    assert filled_db.execute("SELECT paper_id, profile, value FROM feedback ORDER BY paper_id").fetchall() == [
        ("2606.20722", "me", 1), ("2606.21162", "me", 1)]


def test_feedback_table(db_path, filled_db):
    set_feedback(filled_db, "2606.20722", 1)
    filled_db.execute("UPDATE feedback SET created_at = '2026-07-01T08:00:00+00:00'")
    out = run("feedback").output
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines()[3:-1]]
    assert cells[0][:3] + cells[0][4:] == ["2606.20722", "like", "(all)", "2026-07-01 08:00Z"]
    assert " ".join(row[3] for row in cells) == ("Multimodal Image Colorization: Quantifying the Impact of "
                                                 "Text-Conditioned Guidance on Grayscale-to-Color Translation")


# -- export ------------------------------------------------------------------------------------------

def test_export_bibtex_of_a_day_in_the_profiles_order(db_path):
    result = run("export", "--day", "2026-06-30", "--profile", "me")
    keys = re.findall(r"^@misc\{([^,]+),$", result.output, re.MULTILINE)
    assert keys == ["arXiv:2606.31781", "arXiv:2606.31166"]
    assert result.output.count("{") == result.output.count("}")
    assert "  eprint = {2606.31781},\n  archivePrefix = {arXiv},\n  primaryClass = {cs.CV}," in result.output
    assert "  author = {Thuan Bui and Duong Do and Tung Vu and Duc-Tho Mai and Cong-Kha Pham},\n" in result.output


def test_export_ris_of_liked_papers(db_path, filled_db):
    set_feedback(filled_db, "2606.20722", 1)
    set_feedback(filled_db, "2606.21162", -1)
    result = run("export", "--liked", "--format", "ris")
    records = [r for r in result.output.split("ER  - \n") if r.strip()]
    assert len(records) == 1
    tags = [line[:6] for line in records[0].strip().splitlines()]
    assert tags[0] == "TY  - " and all(re.fullmatch(r"[A-Z][A-Z0-9]  - ", t) for t in tags)
    assert "AU  - Colten Reissmann\nAU  - Hugo Garrido-Lestache Belinchon\n" in records[0]
    assert "PY  - 2026\nDA  - 2026/06/22\n" in records[0]


def test_export_csv_and_json_of_a_search(db_path, tmp_path):
    out = tmp_path / "spiking.csv"
    result = run("export", "--query", "spiking", "--format", "csv", "--output", str(out))
    assert result.output == f"Wrote 6 papers to {out}.\n"
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == export.EXPORT_COLUMNS
    assert sorted(r["id"] for r in rows) == sorted(SPIKING)
    data = json.loads(run("export", "--query", "spiking", "--since", "2026-06-30", "--format", "json").output)
    assert {d["id"] for d in data} == {"2606.31781", "2606.31695"}


def test_export_offers_each_format_it_has_a_writer_for_and_no_other():
    offered = next(p for p in cli.commands["export"].params if p.name == "fmt").type.choices
    assert tuple(offered) == EXPORT_FORMATS == tuple(export.WRITERS)


def test_csv_never_hands_a_spreadsheet_a_formula():
    paper = Paper(id="2606.00001", version=1, title='=HYPERLINK("http://evil.example","click")',
                  abstract="+1 for this abstract", authors=["@mention", "-minus"], categories=["cs.AI"],
                  primary_category="cs.AI")
    [row] = list(csv.DictReader(io.StringIO(export.to_csv([(paper, "2026-06-22")]))))
    assert row["title"] == "'=HYPERLINK(\"http://evil.example\",\"click\")"
    assert (row["abstract"], row["authors"]) == ("'+1 for this abstract", "'@mention; -minus")
    assert row["id"] == "2606.00001" and row["announced"] == "2026-06-22"


def test_bibtex_keeps_braces_balanced_and_escapes_specials():
    paper = Paper(id="hep-th/9901001", version=1, title="50% of {Braces} are } odd & #1", abstract="a {b",
                  authors=["A. B"], categories=["hep-th"], primary_category="hep-th")
    text = export.to_bibtex([(paper, None)])
    assert text.startswith("@misc{arXiv:hep-th_9901001,\n")
    assert "  title = {{50\\% of {Braces} are \\} odd \\& \\#1}},\n" in text
    assert "  year = {1999},\n" in text
    assert "  abstract = {a {b}}\n" in text


# -- stats and status --------------------------------------------------------------------------------

def test_stats_draws_per_day_bars(db_path):
    result = run("stats", "--days", "3")
    charts, space = result.output.split("\nDatabase: ")
    assert charts == (
        '2087 papers, 2088 announcements, 0 embedded, 1 summarized\n'
        '\n'
        'Papers per announcement day                                                         \n'
        ' day         papers  new  cross  replaced                                           \n'
        ' 2026-06-28     166  152     14         0  ████████████▌                            \n'
        ' 2026-06-29     531  489     42         0  ████████████████████████████████████████ \n'
        ' 2026-06-30     301  277     23         1  ██████████████████████▋                  \n'
        '\n'
        'Primary categories                                          \n'
        ' category  papers                                           \n'
        ' cs.CV        497  ████████████████████████████████████████ \n'
        ' cs.CL        215  █████████████████▎                       \n'
        ' cs.AI        206  ████████████████▋                        \n'
        ' cs.IT         36  ██▉                                      \n'
        ' cs.GT         22  █▊                                       \n'
        ' cs.GR         13  █                                        \n'
        ' cs.CE          8  ▋                                        \n'
        '\n'
        'LLM tokens per day                                                           \n'
        ' day         tokens  calls  failed                                           \n'
        ' 2026-06-29    2500      2       1  ████████████████████████████████████████ \n'
        ' 2026-06-30     750      1       0  ████████████                             \n'
        '\n'
        '                 Digests                 \n'
        '┏━━━━━━━━━┳━━━━━━━━━┳━━━━━━┳━━━━━━━━━━━━┓\n'
        '┃ profile ┃ digests ┃ sent ┃ last day   ┃\n'
        '┡━━━━━━━━━╇━━━━━━━━━╇━━━━━━╇━━━━━━━━━━━━┩\n'
        '│ me      │ 2       │ 1    │ 2026-06-30 │\n'
        '└─────────┴─────────┴──────┴────────────┘\n'
        '\n'
        '                   Deliveries                   \n'
        '┏━━━━━━━━━┳━━━━━━┳━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━┓\n'
        '┃ channel ┃ sent ┃ waiting ┃ failed ┃ attempts ┃\n'
        '┡━━━━━━━━━╇━━━━━━╇━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━┩\n'
        '│ email   │ 1    │ 1       │ 0      │ 3        │\n'
        '└─────────┴──────┴─────────┴────────┴──────────┘\n'
    )
    # what takes the space: every table with its indexes, the largest first, adding up to the file
    lines = [line.rstrip() for line in space.splitlines()]
    assert lines[0].endswith(" MiB") and lines[1].split() == ["table", "kib", "bytes", "per", "paper"]
    names = [line.split()[0] for line in lines[2:]]
    assert names[:2] == ["papers", "papers_fts"] and {"announcements", "digests", "(free"} <= set(names)
    data = json.loads(run("stats", "--json").output)
    storage = data["storage"]
    assert sum(t["kib"] for t in storage["tables"]) == pytest.approx(storage["bytes"] / 1024, rel=0.01)
    assert sum(d["papers"] for d in data["papers_per_day"]) == 2088
    assert data["tokens_per_day"] == [
        {"day": "2026-06-29", "calls": 2, "prompt_tokens": 2200, "completion_tokens": 300, "tokens": 2500, "failed": 1},
        {"day": "2026-06-30", "calls": 1, "prompt_tokens": 600, "completion_tokens": 150, "tokens": 750, "failed": 0}]
    assert data["deliveries"] == [{"channel": "email", "failed": 0, "waiting": 1, "sent": 1, "attempts": 3}]


def test_bars_are_proportional():
    assert views.bar(10, 10, width=4) == "████"
    assert views.bar(5, 10, width=4) == "██"
    assert views.bar(1, 10, width=4) == "▍"
    assert views.bar(0, 10) == ""


def test_status_says_what_is_waiting_and_the_last_error(db_path, filled_db):
    settings = parse_settings(f'[storage]\npath = "{db_path}"\n[profiles.me]\ninterests = ["x"]\n')
    now = dt.datetime(2026, 7, 3, 15, 0, tzinfo=dt.timezone.utc)  # a Friday, after 07:00 New York
    data = status_of(filled_db, settings, now)
    assert data["next_run"] == "2026-07-06T07:00:00-04:00"  # Monday
    assert data["last_error"] == {"at": "2026-06-30T12:30:00+00:00", "source": "delivery email to me@example.org",
                                  "error": "SMTP 451: try again later"}
    shown = "".join(line.rstrip() + "\n" for line in rendered(views.status_view(data)).splitlines())
    assert shown.replace(str(db_path), "DB") == (
        'Database:    DB\n'
        'Health:      degraded\n'
        '             1 delivery waiting for a retry, the first 2026-06-30 email to me@example.org: SMTP 451: try again later\n'
        'Last run:    #1 done for 2026-06-30 (schedule), started 2026-06-30 11:59Z, finished 2026-06-30 12:01Z\n'
        'Next run:    2026-07-06 07:00 -04:00\n'
        'Last digest: 2026-06-30 (me), built 2026-06-30 12:00Z\n'
        'Deliveries:  1 waiting, 0 failed\n'
        "Papers:      339 papers waiting for me's next digest\n"
        'Last error:  2026-06-30 12:30Z delivery email to me@example.org: SMTP 451: try again later\n'
        '\n'
        "                       Last run's stages\n"
        '┏━━━━━━━━━┳━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━┓\n'
        '┃ stage   ┃ status ┃ duration ┃ counts          ┃ error        ┃\n'
        '┡━━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━┩\n'
        '│ fetch   │ done   │ 3.50s    │ papers=300      │              │\n'
        '│ deliver │ done   │ 0.25s    │ queued=1 sent=0 │              │\n'
        '└─────────┴────────┴──────────┴─────────────────┴──────────────┘\n'
        '\n'
        '                                                  Deliveries not sent\n'
        '┏━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━┓\n'
        '┃ day        ┃ profile ┃ channel ┃ target         ┃ status  ┃ attempts ┃ next attempt at   ┃ last error                ┃\n'
        '┡━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━┩\n'
        '│ 2026-06-30 │ me      │ email   │ me@example.org │ pending │ 2        │ 2026-06-30 13:00Z │ SMTP 451: try again later │\n'
        '└────────────┴─────────┴─────────┴────────────────┴─────────┴──────────┴───────────────────┴───────────────────────────┘\n'
    )
    assert json.loads(run("status", "--json").output)["pending"][0]["last_error"] == "SMTP 451: try again later"


def test_next_run_skips_weekends_holidays_and_keeps_today_when_not_yet_due():
    settings = parse_settings('[schedule]\ntime = "08:30"\ntimezone = "Europe/Berlin"\n[profiles.me]\ninterests = ["x"]\n')
    at = lambda *a: dt.datetime(*a, tzinfo=dt.timezone.utc)
    assert next_run(settings, at(2026, 7, 1, 6, 0)).isoformat() == "2026-07-01T08:30:00+02:00"
    assert next_run(settings, at(2026, 7, 1, 6, 30)).isoformat() == "2026-07-02T08:30:00+02:00"
    assert next_run(settings, at(2026, 7, 4, 12, 0)).isoformat() == "2026-07-06T08:30:00+02:00"
    # 2026-07-07 is an arXiv holiday: no announcement, so Thursday's next run is Monday's.
    assert next_run(settings, at(2026, 7, 2, 12, 0)).isoformat() == "2026-07-06T08:30:00+02:00"
    # 2027 is not published: MLK day comes from the holidays package, so Friday's next run is Tuesday's.
    assert next_run(settings, at(2027, 1, 15, 12, 0)).isoformat() == "2027-01-19T08:30:00+01:00"


def test_next_run_in_a_dst_gap_is_when_apscheduler_fires():
    """00:30 does not exist in Cairo on 2026-04-24 (the clocks jump from 00:00 to 01:00). `status` must say
    what the daemon's scheduler will really do, so it is compared with a real APScheduler trigger."""
    from apscheduler.schedulers.background import BackgroundScheduler

    settings = parse_settings('[schedule]\ntime = "00:30"\ntimezone = "Africa/Cairo"\n[profiles.me]\ninterests = ["x"]\n')
    now = dt.datetime(2026, 4, 23, 12, 0, tzinfo=zoneinfo.ZoneInfo("Africa/Cairo"))  # a Thursday
    scheduler = BackgroundScheduler(timezone=settings.schedule.tz)
    job = scheduler.add_job(print, schedule_trigger(settings))
    fires = job.trigger.get_next_fire_time(None, now)
    assert next_firing(settings, now) == fires
    assert fires.isoformat() == "2026-04-25T00:30:00+03:00"  # APScheduler skips the day the time does not exist
    assert next_run(settings, now) == fires


# -- vectors -----------------------------------------------------------------------------------------

def _unit(rng, n, dims=8) -> np.ndarray:
    vectors = rng.normal(size=(n, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _store_vectors(db, ids, vectors, model=MODEL):
    with dbm.transaction(db):
        db.conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, 'h', ?, ?, 'now')",
                            [(i, model, len(v), v.astype("<f4").tobytes()) for i, v in zip(ids, vectors)])


def test_vector_index_matches_a_brute_force_scan_and_follows_the_table(filled_db, db_path):
    rng = np.random.default_rng(1)
    ids = [r["id"] for r in listing()[:300]]
    vectors = _unit(rng, 300)
    _store_vectors(filled_db, ids[:200], vectors[:200])
    index = VectorIndex(filled_db, MODEL).open()
    assert len(index) == 200
    query = vectors[7]
    expected = np.argsort(-(vectors[:200] @ query))[:5]
    assert [index.id_at(r) for r, _ in index.nearest(query, 5)] == [ids[i] for i in expected]
    # New rows are appended, a replaced row is overwritten in place, rows of another model are ignored.
    _store_vectors(filled_db, ids[200:], vectors[200:])
    _store_vectors(filled_db, [ids[7]], [-vectors[7]])
    _store_vectors(filled_db, [ids[8]], [vectors[8]], model="other-model")
    assert len(index.open()) == 300  # an open index notices the table changed
    assert len(VectorIndex(filled_db, MODEL).open()) == 300
    assert np.allclose(index.vector(ids[7]), -vectors[7])
    current = vectors.copy()
    current[7] = -vectors[7]
    expected = np.argsort(-(current @ query))[:10]
    assert [index.id_at(r) for r, _ in index.nearest(query, 10)] == [ids[i] for i in expected]
    # A folder lost, or a matrix cut short, is rebuilt from the table.
    folder = db_path.with_name("digest.db.vectors")
    matrix = folder / f"{MODEL}.f32"
    matrix.write_bytes(matrix.read_bytes()[:100])
    assert np.allclose(VectorIndex(filled_db, MODEL).open().vector(ids[250]), vectors[250])
    shutil.rmtree(folder)
    assert len(VectorIndex(filled_db, MODEL).open()) == 300


def test_semantic_search_filters_and_related_excludes_the_paper(filled_db):
    rng = np.random.default_rng(2)
    ids = [r["id"] for r in listing()[:400]]
    vectors = _unit(rng, 400)
    _store_vectors(filled_db, ids, vectors)
    settings = parse_settings('[profiles.me]\ninterests = ["x"]\n')
    embed = lambda text: vectors[3]
    rows = search.semantic_search(filled_db, settings, "anything", limit=5, embed=embed)
    assert rows[0]["id"] == ids[3] and rows[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # The listing's first 400 papers were all announced on 2026-06-22: a later window has none of them.
    assert search.semantic_search(filled_db, settings, "x", search.Filters(since=dt.date(2026, 6, 23)), embed=embed) == []
    vision = search.semantic_search(filled_db, settings, "x", search.Filters(category="cs.CV"), limit=400, embed=embed)
    assert vision and all("cs.CV" in r["categories"] for r in vision)
    assert [r["score"] for r in vision] == sorted((r["score"] for r in vision), reverse=True)
    near = search.related(filled_db, settings, ids[3], limit=3, embed=embed)
    assert ids[3] not in [r["id"] for r in near] and len(near) == 3
    with pytest.raises(search.HistoryError, match="2401.00001 is not in your history"):
        search.related(filled_db, settings, "2401.00001", embed=embed)


@pytest.mark.slow
def test_semantic_search_and_related_with_the_real_model(db_path, filled_db):
    from digest import embed

    settings = parse_settings('[profiles.me]\ninterests = ["x"]\n')
    embed.embed_papers(filled_db, [paper_of(r) for r in listing()[:40]], settings)  # as the run's embed stage stores them
    # .stdout: the model's loading progress goes to stderr.
    found = json.loads(run("search", "--semantic", "adding color to black and white photos", "--limit", "3",
                           "--json").stdout)
    assert found[0]["id"] == "2606.20722"
    related = json.loads(run("related", "2606.21753", "--json", "--limit", "5").stdout)
    assert "2606.21753" not in [r["id"] for r in related]
    assert any("Gaussian" in r["title"] for r in related)


# -- help --------------------------------------------------------------------------------------------

HISTORY_COMMANDS = ["search", "show", "related", "digests", "like", "dislike", "feedback", "export", "stats",
                    "status"]


@pytest.mark.parametrize("name", HISTORY_COMMANDS)
def test_every_history_command_has_help(name):
    result = run(name, "--help")
    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: cli {name} ")
    assert cli.commands[name].help.splitlines()[0] in " ".join(result.output.split())


def test_search_help_names_every_filter():
    text = run("search", "--help").output
    for option in ("--semantic", "--raw", "--since", "--until", "--category", "--author", "--profile", "--liked",
                   "--limit", "--json", "--csv"):
        assert option in text


# -- 80 columns -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["feedback"], ["digests"], ["stats"], ["status"], ["search", "spiking"]])
def test_listings_fit_80_columns_without_cutting_a_word(db_path, filled_db, args, monkeypatch):
    set_feedback(filled_db, "2606.24075", 1, "")
    set_feedback(filled_db, "2606.31781", -1, "me")
    paper_rows.record_fetch(filled_db, announced_on=None, categories="cs.CL", source="feed", status="failed",
                            error="http://127.0.0.1:9/atom/cs.CL: connection failed (ConnectionError) after 5 attempts")
    monkeypatch.setenv("COLUMNS", "80")  # what rich reads for a terminal of 80 columns
    out = run(*args).output
    lines = out.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), "\n".join(l for l in lines if len(l) > 80)
    if args[0] != "search":  # a search snippet's own "…" says the abstract goes on
        assert "…" not in out and "..." not in out
    flat = " ".join(" ".join(line.strip("│┃ ").split()) for line in lines)
    # Every word of every title and error shown is shown whole (a word cut across two lines is not).
    titles = [r["title"] for r in json.loads(run(*args, "--json").output)] if args[0] in ("feedback", "search") \
        else []
    for text in titles + (["connection failed (ConnectionError) after 5 attempts"] if args == ["status"] else []):
        for word in text.split():
            if len(word) <= 12:
                assert word in flat, (word, out)
    for moment in re.findall(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", out):
        raise AssertionError(f"a whole ISO timestamp {moment} where the minute suffices")
