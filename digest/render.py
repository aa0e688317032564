"""Records -> the digest as an HTML email, its plain-text alternative, Markdown for chat, and JSON.

Paper text is untrusted: the HTML template autoescapes everything, Markdown escapes its own punctuation
(so a title cannot inject a link or raw HTML), and the only links generated point at arxiv.org and
papers.cool, built from the paper's id, and at ``[feedback] public_url`` (signed feedback links). Every item
of the view appears in every format: rank, never drop.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import textwrap
import urllib.parse
from dataclasses import asdict, dataclass, fields

import jinja2

from .config import Settings
from .feedback.links import link_maker
from .records import DigestView, Ranked, Summary
from .text import clean_untrusted

# The line between the Markdown's top section and the rest: chat sends what comes before it as the
# message that must fit. Paper text cannot forge it: Markdown escaping turns "-" into "\-".
MARKDOWN_BREAK = "\n---\n"

FALLBACK_LABEL = "From the abstract (no LLM summary)"
AUTHORS_SHOWN_TOP = 12
AUTHORS_SHOWN_REST = 3


@dataclass
class Rendered:
    """One digest in every format it is delivered in; stored as-is so a retry sends what was built."""

    subject: str
    html: str
    text: str
    markdown: str
    json: str

    @classmethod
    def formats(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def render_digest(view: DigestView, settings: Settings) -> Rendered:
    """Every format of one profile's digest. ``view.items`` must hold every paper announced for it."""
    context = _context(view, settings)
    return Rendered(
        subject=context["subject"],
        html=_environment(html=True).get_template("digest.html").render(context),
        text=_environment(html=False).get_template("digest.txt").render(context).strip() + "\n",
        markdown=_environment(html=False).get_template("digest.md").render(context).strip() + "\n",
        json=_as_json(view, context["subject"]),
    )


def render_empty(day: dt.date, settings: Settings) -> Rendered:
    """The short note for a day with nothing announced in the profile's categories (digest.send_empty)."""
    context = {"day": day.isoformat(), "subject": f"arXiv digest {day.isoformat()}: nothing announced",
               "categories": settings.arxiv.categories}
    return Rendered(
        subject=context["subject"],
        html=_environment(html=True).get_template("empty.html").render(context),
        text=_environment(html=False).get_template("empty.txt").render(context).strip() + "\n",
        markdown=_environment(html=False).get_template("empty.txt").render(context).strip() + "\n",
        json=json.dumps({"subject": context["subject"], "days": [day.isoformat()], "counts": {"announced": 0},
                         "items": []}, ensure_ascii=False),
    )


# -- what the templates see ---------------------------------------------------------------------------

def _context(view: DigestView, settings: Settings) -> dict:
    votes = link_maker(settings, view.profile)
    counts = {"announced": 0, "new": 0, "cross": 0, "replace": 0, "summarized": 0, **view.counts}
    days = [d.isoformat() for d in view.days]
    when = days[-1] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    return {
        "profile": view.profile,
        "days": days,
        "when": when,
        "categories": view.categories,
        "counts": counts,
        "counts_line": counts_line(counts),
        "subject": subject_line(view.profile, when, counts),
        "top": [_item(i, votes) for i in view.top],
        "rest": [_item(i, votes) for i in view.rest],
        "replaced": [_item(i, votes) for i in view.replaced],
        "feedback_links": votes is not None,
        "replacements_enabled": settings.digest.include_replacements,
        "fallback_label": FALLBACK_LABEL,
        "caught_up": [clean_untrusted(line) for line in view.caught_up],
    }


def subject_line(profile: str, when: str, counts: dict) -> str:
    return f"arXiv digest {when} ({profile}): {counts['announced']} papers, {counts['summarized']} summarized"


def counts_line(counts: dict) -> str:
    """"412 announced: 375 new, 37 cross-lists; 15 summarized", the sums a reader can check."""
    line = (f"{counts['announced']} announced: {counts['new']} new, {_plural(counts['cross'], 'cross-list')}; "
            f"{counts['summarized']} summarized")
    if counts.get("replace"):
        line += f"; {_plural(counts['replace'], 'replacement')}"
    return line


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _item(ranked: Ranked, votes=None) -> dict:
    """One paper as the templates see it; ``votes`` makes its signed like/dislike links (feedback/links.py)."""
    paper = ranked.paper
    return {
        "id": paper.id,
        "rank": ranked.rank,
        "score": f"{ranked.score:.2f}",
        "reason": ranked.reason,
        "kind": ranked.kind,
        "title": clean_untrusted(paper.title),
        "authors": clean_untrusted(_authors(paper.authors, AUTHORS_SHOWN_TOP)),
        "authors_short": clean_untrusted(_authors(paper.authors, AUTHORS_SHOWN_REST)),
        "categories": clean_untrusted(", ".join(paper.categories)),
        "links": paper_links(paper.id),
        "summary": _summary(ranked.summary),
        "note": ranked.note,
        "votes": votes(paper.id) if votes else None,
    }


def paper_links(paper_id: str) -> dict[str, str]:
    """The only links a digest carries, built from the id alone, never from paper text."""
    quoted = urllib.parse.quote(paper_id, safe="/.")  # an odd id cannot break out of a link
    return {
        "abstract": f"https://arxiv.org/abs/{quoted}",
        "pdf": f"https://arxiv.org/pdf/{quoted}",
        "html": f"https://arxiv.org/html/{quoted}",
        "papers.cool": f"https://papers.cool/arxiv/{quoted}",
    }


def _summary(summary: Summary | None) -> dict | None:
    if summary is None:
        return None
    faq = [(question, getattr(summary, key).strip()) for key, question in Summary.FAQ
           if getattr(summary, key, "").strip()]
    return {"tldr": summary.tldr.strip(), "faq": faq, "fallback": summary.is_fallback}


def _authors(authors: list[str], shown: int) -> str:
    if len(authors) <= shown:
        return ", ".join(authors)
    return ", ".join(authors[:shown]) + f" and {len(authors) - shown} more"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _as_json(view: DigestView, subject: str) -> str:
    items = [{
        "id": i.paper.id,
        "title": i.paper.title,
        "authors": i.paper.authors,
        "categories": i.paper.categories,
        "rank": i.rank,
        "score": i.score,
        "reason": i.reason,
        "section": i.section,
        "kind": i.kind,
        "note": i.note or None,
        "summary": asdict(i.summary) if i.summary is not None else None,
    } for i in view.items]
    return json.dumps({"profile": view.profile, "days": [d.isoformat() for d in view.days],
                       "categories": view.categories, "subject": subject, "counts": view.counts, "items": items},
                      ensure_ascii=False, indent=1)


# -- Jinja ----------------------------------------------------------------------------------------------

# Inline Markdown that could make text into markup. "." "-" "#" matter only at the start of a line,
# and every field is one line placed after other text except where _LINE_START catches it.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
_LINE_START = re.compile(r"^(\d+)([.)])|^([#+=>-])")


def markdown_escape(text: str) -> str:
    """Untrusted text as literal Markdown: a title cannot open a link, emphasis, raw HTML, a heading or
    a list, and cannot forge the section break. Escapes little, since chat apps show backslashes."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", _one_line(str(text)))
    return _LINE_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}", escaped)


def _wrap(text: str, width: int = 78, indent: str = "", first: str | None = None) -> str:
    """Plain-text paragraphs wrapped for the text/plain part; ``first`` indents the first line."""
    paragraphs = [p for p in str(text).split("\n") if p.strip()]
    return "\n".join(textwrap.fill(p, width, initial_indent=indent if first is None or n else first,
                                   subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
                     for n, p in enumerate(paragraphs))


@functools.cache
def _environment(html: bool) -> jinja2.Environment:
    """Autoescaping for HTML; the text formats escape explicitly (``md`` filter) where it matters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("digest", "templates"),
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = markdown_escape
    env.filters["wrap"] = _wrap
    return env
