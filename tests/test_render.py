"""The digest as a reader sees it, built from real announcement days of arXiv's listings.

The ranking module is written elsewhere, so these tests rank the day themselves (listing order) and build
the DigestView directly; what is checked is the rendering: every paper exactly once, counts that add up,
untrusted text escaped. ``day_view`` and friends are reused by test_deliver and test_render_browser.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from functools import cache

import pytest
from feeds import listing_papers

from digest import render
from digest.config import parse_settings
from digest.records import DigestView, Paper, Ranked, Summary
from digest.taxonomy import CategoryExpression

CATEGORIES = "cs.AI+cs.CL+cs.CV+cs.LG"
BIG_DAY = dt.date(2026, 6, 22)  # 537 listed papers
SCRIPT_TITLE = "<script>alert(1)</script>"


@cache
def _listing() -> tuple[dict, ...]:
    return tuple(listing_papers())


def paper_of(row: dict) -> Paper:
    return Paper(id=row["id"], version=1, title=row["title"], abstract=row["abstract"], authors=row["authors"],
                 categories=row["categories"], primary_category=row["primary_category"], comment=row.get("comment"))


def announced(day: dt.date, categories: str = CATEGORIES) -> list[Paper]:
    """The day's papers in the profile's categories, as the listing announced them (each id once)."""
    expression = CategoryExpression.parse(categories)
    seen, papers = set(), []
    for row in _listing():
        if row["announced_date_et"] == day.isoformat() and row["id"] not in seen \
                and expression.matches(row["categories"]):
            seen.add(row["id"])
            papers.append(paper_of(row))
    return papers


def all_papers() -> list[Paper]:
    seen, papers = set(), []
    for row in _listing():
        if row["id"] not in seen:
            seen.add(row["id"])
            papers.append(paper_of(row))
    return papers


def summary_for(paper: Paper, fallback: bool = False) -> Summary:
    if fallback:
        return Summary(tldr=paper.abstract.split(". ")[0] + ".", source="abstract")
    return Summary(tldr=f"What {paper.title} does, in one sentence.", problem="The problem.\nIn two lines.",
                   method="The method.", experiments="The experiments.", summary="The summary.", model="test-llm")


def make_view(papers: list[Paper], *, days=(BIG_DAY,), top: int = 15, summarized: int = 12,
              categories: str = CATEGORIES, replaced: list[Paper] = (), profile: str = "me") -> DigestView:
    """Every paper ranked in the given order: the first ``top`` with summaries (the first ``summarized``
    of them from the LLM, the rest the labelled fallback), kinds judged against ``categories``."""
    expression = CategoryExpression.parse(categories)
    items = []
    for rank, paper in enumerate(papers, start=1):
        kind = "new" if expression.matches([paper.primary_category]) else "cross"
        section = "top" if rank <= top else "rest"
        summary = summary_for(paper, fallback=rank > summarized) if section == "top" else None
        items.append(Ranked(paper, rank, round(0.85 * 0.995 ** rank, 4), f"close to interest #{rank % 3 + 1}",
                            section, kind, summary))
    for paper in replaced:
        items.append(Ranked(paper, 0, 0.0, "a new version", "replaced", "replace"))
    listed = [i for i in items if i.section != "replaced"]
    counts = {"announced": len(listed), "new": sum(i.kind == "new" for i in listed),
              "cross": sum(i.kind == "cross" for i in listed), "replace": len(replaced),
              "summarized": sum(1 for i in items if i.summary and not i.summary.is_fallback)}
    return DigestView(profile=profile, days=list(days), categories=categories, items=items, counts=counts)


def day_view(day: dt.date = BIG_DAY, **kwargs) -> DigestView:
    return make_view(announced(day), days=(day,), **kwargs)


def settings_for(extra: str = "") -> object:
    return parse_settings(f'[arxiv]\ncategories = "{CATEGORIES}"\n{extra}\n[profiles.me]\ninterests = ["agents"]\n')


def html_ids(html: str) -> list[str]:
    return re.findall(r'<div id="arxiv-([^"]+)"', html)


def tagged_ids(text: str) -> list[str]:
    """Every "arXiv:<id>" label: each item of the text and Markdown formats carries exactly one."""
    return re.findall(r"arXiv:(\d{4}\.\d{4,5}|[a-z-]+/\d{7})", text)


# -- every paper, exactly once ------------------------------------------------------------------------

def test_a_500_paper_day_lists_every_announced_paper_exactly_once_in_every_format():
    papers = announced(BIG_DAY)
    assert len(papers) > 400  # the real 2026-06-22 in these categories
    rendered = render.render_digest(day_view(BIG_DAY), settings_for())
    ids = [p.id for p in papers]
    assert sorted(html_ids(rendered.html)) == sorted(ids)
    assert sorted(tagged_ids(rendered.text)) == sorted(ids)
    assert sorted(tagged_ids(rendered.markdown)) == sorted(ids)
    assert sorted(i["id"] for i in json.loads(rendered.json)["items"]) == sorted(ids)


@pytest.mark.parametrize("day", sorted({r["announced_date_et"] for r in _listing()}))
def test_count_in_the_digest_equals_count_announced_on_every_recorded_day(day):
    day = dt.date.fromisoformat(day)
    view = day_view(day)
    rendered = render.render_digest(view, settings_for())
    assert len(html_ids(rendered.html)) == len(announced(day)) == view.counts["announced"]
    assert f"{len(announced(day))} announced:" in rendered.html


def test_counts_reconcile_and_the_subject_names_the_date_and_counts():
    view = day_view(BIG_DAY)
    c = view.counts
    rendered = render.render_digest(view, settings_for())
    assert c["new"] + c["cross"] == c["announced"] and c["cross"] > 0
    line = f"{c['announced']} announced: {c['new']} new, {c['cross']} cross-lists; 12 summarized"
    for body in (rendered.html, rendered.text, rendered.markdown):
        assert line in body
    assert rendered.subject == f"arXiv digest 2026-06-22 (me): {c['announced']} papers, 12 summarized"


def test_a_catch_up_digest_names_its_days():
    view = make_view(announced(dt.date(2026, 6, 22))[:5] + announced(dt.date(2026, 6, 23))[:5],
                     days=(dt.date(2026, 6, 22), dt.date(2026, 6, 23)), top=3, summarized=3)
    rendered = render.render_digest(view, settings_for())
    assert rendered.subject.startswith("arXiv digest 2026-06-22 to 2026-06-23 (me): 10 papers")


# -- what a top paper shows ------------------------------------------------------------------------------

def test_a_top_paper_shows_links_authors_score_reason_tldr_and_faq():
    view = day_view(BIG_DAY)
    first = view.items[0]
    rendered = render.render_digest(view, settings_for())
    card = rendered.html.split(f'<div id="arxiv-{first.paper.id}"')[1].split('<div id="arxiv-')[0]
    for url in (f"https://arxiv.org/abs/{first.paper.id}", f"https://arxiv.org/pdf/{first.paper.id}",
                f"https://arxiv.org/html/{first.paper.id}", f"https://papers.cool/arxiv/{first.paper.id}"):
        assert f'href="{url}"' in card
    assert '<strong class="score" style="color:#1f2328;font-size:15px;">0.85</strong>' in card
    assert "close to interest #2" in card
    assert "What problem does the paper try to solve?" in card and "The method." in card
    assert "TL;DR" in card
    assert "From the abstract (no LLM summary)" not in card


def test_fallback_summaries_are_labelled_and_the_rest_is_compact():
    view = day_view(BIG_DAY, top=15, summarized=12)
    rendered = render.render_digest(view, settings_for())
    assert rendered.html.count("From the abstract (no LLM summary)") == 3
    assert rendered.markdown.count("From the abstract (no LLM summary)") == 3
    rest = view.rest[0]
    line = next(l for l in rendered.markdown.splitlines() if f"arXiv:{rest.paper.id}" in l)
    assert line.startswith(f"**{rest.score:.2f}** [") and f"(https://arxiv.org/abs/{rest.paper.id})" in line
    assert "TL;DR" not in line


def test_replacements_have_their_own_section():
    papers = announced(BIG_DAY)
    view = make_view(papers[:20], top=5, summarized=5, replaced=papers[20:23])
    rendered = render.render_digest(view, settings_for("[digest]\ninclude_replacements = true"))
    assert "Replacements (3)" in rendered.html and "REPLACEMENTS (3)" in rendered.text
    assert "; 3 replacements" in rendered.html
    assert sorted(html_ids(rendered.html)) == sorted(p.id for p in papers[:23])


def test_the_footer_says_how_to_give_feedback():
    rendered = render.render_digest(day_view(dt.date(2026, 6, 24)), settings_for())
    assert "digest like &lt;arXiv id&gt;" in rendered.html
    assert "digest like <arXiv id>" in rendered.text and "digest dislike <arXiv id>" in rendered.markdown


# -- untrusted text --------------------------------------------------------------------------------------

def hostile_view() -> DigestView:
    papers = announced(BIG_DAY)[:4]
    papers[0].title = SCRIPT_TITLE
    papers[1].title = "[click me](https://evil.example/x) **bold** # not a heading"
    papers[2].authors = ['<img src=x onerror="alert(2)">']
    view = make_view(papers, top=2, summarized=2)
    view.items[0].summary.tldr = '<a href="https://evil.example">phish</a>'
    return view


def test_a_script_title_is_text_in_every_format():
    rendered = render.render_digest(hostile_view(), settings_for())
    assert "<script>" not in rendered.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert '<img src=x' not in rendered.html and 'href="https://evil.example' not in rendered.html
    assert SCRIPT_TITLE in rendered.text  # plain text shows it as it is: text
    assert r"\<script\>alert(1)\</script\>" in rendered.markdown
    assert "](https://evil.example" not in rendered.markdown.replace(r"\](https://evil.example", "")
    assert json.loads(rendered.json)["items"][0]["title"] == SCRIPT_TITLE


def test_only_arxiv_and_papers_cool_links_are_generated():
    rendered = render.render_digest(hostile_view(), settings_for())
    hosts = set(re.findall(r'href="https://([^/"]+)', rendered.html))
    assert hosts == {"arxiv.org", "papers.cool"}
    md_hosts = set(re.findall(r"(?<!\\)\]\(https://([^/)]+)", rendered.markdown))
    assert md_hosts == {"arxiv.org", "papers.cool"}


def test_markdown_escaping_keeps_text_literal():
    assert render.markdown_escape("# 1986. *x* [y](z) <b>") == r"\# 1986. \*x\* \[y\](z) \<b\>"
    assert render.markdown_escape("1986. A year") == r"1986\. A year"
    assert render.markdown_escape("---") == r"\---"


# -- html for phones and dark mode, json, empty days ----------------------------------------------------

def test_html_is_self_contained_and_ready_for_dark_mode_and_phones():
    html = render.render_digest(day_view(dt.date(2026, 6, 24)), settings_for()).html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "prefers-color-scheme: dark" in html
    assert 'name="viewport"' in html and "overflow-wrap:anywhere" in html
    assert not re.search(r'<(img|link|script)\b', html)  # no remote assets, no scripts
    assert not re.search(r'src="http', html)


def test_json_has_every_item_with_its_fields():
    view = day_view(dt.date(2026, 6, 24), top=3, summarized=2)
    data = json.loads(render.render_digest(view, settings_for()).json)
    assert data["days"] == ["2026-06-24"] and data["counts"] == view.counts
    first, fallback, rest = data["items"][0], data["items"][2], data["items"][3]
    assert set(first) == {"id", "title", "authors", "categories", "rank", "score", "reason", "section", "kind", "note",
                          "summary"}
    assert first["section"] == "top" and first["summary"]["source"] == "llm"
    assert fallback["summary"]["source"] == "abstract"
    assert rest["section"] == "rest" and rest["summary"] is None


def test_the_nothing_announced_note():
    rendered = render.render_empty(dt.date(2026, 6, 19), settings_for())
    assert rendered.subject == "arXiv digest 2026-06-19: nothing announced"
    assert "announced nothing in your categories (cs.AI+cs.CL+cs.CV+cs.LG) on 2026-06-19" in rendered.text
    assert json.loads(rendered.json)["items"] == []


def test_every_category_code_is_shown_as_arxiv_writes_it_in_every_format():
    from digest.taxonomy import CATEGORIES

    codes = sorted(CATEGORIES)
    papers = announced(BIG_DAY)[:len(codes)]
    for paper, code in zip(papers, codes):
        paper.categories = [code]
        paper.title = f"{paper.title} ({code})"
    rendered = render.render_digest(make_view(papers, top=15), settings_for())
    for code in codes:
        for fmt in (rendered.html, rendered.email_body, rendered.text, rendered.markdown):
            assert fmt.count(code) >= 1, code
    assert "[link removed]" not in rendered.html + rendered.text + rendered.markdown


def test_the_text_part_aligns_each_title_after_its_score():
    view = day_view(BIG_DAY)
    first, later = view.items[0], view.rest[0]
    text = render.render_digest(view, settings_for()).text
    for item in (first, later):
        head = next(line for line in text.splitlines() if line.startswith(f"{item.score:.2f} "))
        assert head.startswith(f"{item.score:.2f}  {item.paper.title.split()[0]}"), head  # two spaces, as the indent
