"""Records -> the digest as HTML, the email's own HTML body, its plain-text alternative, Markdown for chat,
and JSON.

Paper text is untrusted: the HTML template autoescapes everything, Markdown escapes its own punctuation
(so a title cannot inject a link or raw HTML), and the only links generated point at arxiv.org and
papers.cool, built from the paper's id, and at ``[feedback] public_url`` (signed feedback links). Titles and
abstracts go through the untrusted-text cleaner; identifiers (ids, categories, author names) are shown as
the record has them. Every item of the view appears in every format: rank, never drop.

The email's HTML body has a size budget (EMAIL_HTML_BUDGET): Gmail hides everything past about 102 KB of
HTML behind "[Message clipped]", which most readers never open. When the complete digest is larger, the
body keeps the whole top section (with the FAQ answers of the first ``digest.faq_in_email`` papers) and as
many of the other papers, in order, as fit; the complete digest is attached as an HTML file, and the body
names what is only there. The text part always lists every paper.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import unicodedata
import urllib.parse
from dataclasses import asdict
from email.message import EmailMessage

import jinja2

from .config import Settings
from .feedback.links import link_maker
from .records import DigestView, Ranked, Rendered, Summary
from .text import clean_untrusted, identifier_text

# The line between the Markdown's top section and the rest: chat sends what comes before it as the
# message that must fit. Paper text cannot forge it: Markdown escaping turns "-" into "\-".
MARKDOWN_BREAK = "\n---\n"

FALLBACK_LABEL = "From the abstract (no LLM summary)"
AUTHORS_SHOWN_TOP = 6
AUTHORS_SHOWN_REST = 3
# Bytes of the email's HTML body as sent (quoted-printable, which is what a mail server measures), under
# Gmail's clipping point of about 102 KB with room to spare; decoded, the body is a little smaller.
EMAIL_HTML_BUDGET = 98_000


def render_digest(view: DigestView, settings: Settings) -> Rendered:
    """Every format of one profile's digest. ``view.items`` must hold every paper announced for it."""
    context = _context(view, settings)
    html = _render_html(context)
    faq_shown = min(settings.digest.faq_in_email, len(context["top"]))
    if not any(p["summary"] and p["summary"]["faq"] for p in context["top"][faq_shown:]):
        faq_shown = len(context["top"])  # nothing to leave out (no LLM): no attachment for it
    # Every paper, with its links: the complete digest itself when no FAQ answer is left out.
    email_html = html if faq_shown == len(context["top"]) else _render_html(context, faq_shown=faq_shown)
    if not _fits(email_html):
        email_html = _email_html(context, faq_shown)
    attaches = email_html != html
    return Rendered(
        subject=context["subject"],
        html=html,
        text=_environment(html=False).get_template("digest.txt").render(
            context, attachment=context["attachment"] if attaches else "").strip() + "\n",
        markdown=_environment(html=False).get_template("digest.md").render(context).strip() + "\n",
        json=_as_json(view, context["subject"]),
        email_html=email_html,
        attachment=context["attachment"],
    )


def attachment_name(profile: str, days: list[str]) -> str:
    """``digest-<profile>-<day>.html`` (``<first>-to-<last>`` for a catch-up): the complete digest's file."""
    when = days[-1] if len(days) == 1 else f"{days[0]}-to-{days[-1]}"
    return f"digest-{re.sub(r'[^A-Za-z0-9._-]', '-', profile)}-{when}.html"


# -- the email's body within its budget -----------------------------------------------------------------

def _render_html(context: dict, **email) -> str:
    """The HTML digest; with ``email`` options (faq_shown, later_shown), the email's budgeted body."""
    options = {"email": bool(email), "faq_shown": len(context["top"]), "later_shown": None, **email}
    return _environment(html=True).get_template("digest.html").render(context, **options)


def _fits(html: str) -> bool:
    return sent_size(html) <= EMAIL_HTML_BUDGET


def sent_size(html: str) -> int:
    """Bytes of an HTML part as it goes over SMTP: quoted-printable as deliver/email.py encodes it (the
    standard library's, which escapes more than quopri does), every line ended with CRLF."""
    part = EmailMessage()
    part.set_content(html, subtype="html", charset="utf-8", cte="quoted-printable")
    encoded = part.get_payload()
    return len(encoded) + encoded.count("\n")


def _email_html(context: dict, faq_shown: int) -> str:
    """The largest body that fits: the whole top section, the FAQ answers of ``faq_shown`` top papers, then
    as many of the other papers, in order and without their like/dislike links, as the budget holds. The
    top section is cut only when it cannot fit on its own, even without FAQ answers."""
    later = len(context["rest"]) + len(context["replaced"])
    for faq_shown in dict.fromkeys((faq_shown, 0)):
        body = _most_that_fits(lambda shown: _render_html(context, faq_shown=faq_shown, later_shown=shown), later)
        if body is not None:
            return body
    top = context["top"]
    shown = _largest(lambda n: _fits(_render_html({**context, "top": top[:n]}, faq_shown=0, later_shown=0)),
                     len(top))
    return _render_html({**context, "top": top[:shown], "top_cut": len(top) - shown}, faq_shown=0, later_shown=0)


def _most_that_fits(render, count: int) -> str | None:
    render = functools.cache(render)  # the search's last try is often the body it returns
    if not _fits(render(0)):
        return None
    return render(_largest(lambda n: _fits(render(n)), count))


def _largest(fits, upper: int) -> int:
    """The largest n in 0..upper for which ``fits(n)`` holds, given that it holds for 0 and fails past
    some point: a binary search, so a 500-paper day renders the body about ten times, not 500."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


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
    listed = settings.digest.rest_order == "arxiv"  # the later papers follow arXiv's listing, not the score
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
        "rest": [_item(i, votes, listed) for i in view.rest],
        "replaced": [_item(i, votes, listed) for i in view.replaced],
        "feedback_links": votes is not None,
        "replacements_enabled": settings.digest.include_replacements,
        "fallback_label": FALLBACK_LABEL,
        "caught_up": [clean_untrusted(line) for line in view.caught_up],
        "attachment": attachment_name(view.profile, days),
        "top_cut": 0,
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


def _item(ranked: Ranked, votes=None, listed: bool = False) -> dict:
    """One paper as the templates see it; ``votes`` makes its signed like/dislike links (feedback/links.py).
    ``lead`` is the number its entry starts with, the one its place follows: the score, or with
    ``listed`` (``digest.rest_order = "arxiv"``) its place in the digest, which follows arXiv's listing."""
    paper = ranked.paper
    return {
        "lead": f"#{ranked.rank}" if listed else shown_score(ranked.score),
        "id": paper.id,
        "rank": ranked.rank,
        "score": shown_score(ranked.score),
        "reason": ranked.reason,
        "kind": ranked.kind,
        "title": clean_untrusted(paper.title),
        "authors": identifier_text(_authors(paper.authors, AUTHORS_SHOWN_TOP)),
        "authors_short": identifier_text(_authors(paper.authors, AUTHORS_SHOWN_REST)),
        "categories": identifier_text(", ".join(paper.categories)),
        "links": paper_links(paper.id),
        "summary": _summary(ranked.summary),
        "note": ranked.note,
        "votes": votes(paper.id) if votes else None,
    }


def shown_score(score: float) -> str:
    """A score as every format shows it, two decimals; the reason's parts add up to exactly this."""
    text = f"{score:.2f}"
    return "0.00" if text == "-0.00" else text


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
    """Plain-text paragraphs wrapped for the text/plain part to ``width`` columns, as a terminal counts
    them (a CJK character takes two); ``first`` indents the first line. A word longer than a line is
    broken: the text part keeps to 80 columns (a URL gets a line of its own instead)."""
    paragraphs = [p for p in str(text).split("\n") if p.strip()]
    return "\n".join(_fill(p.split(), width, indent if first is None or n else first, indent)
                     for n, p in enumerate(paragraphs))


def _fill(words: list[str], width: int, first: str, indent: str) -> str:
    """Greedy filling by display width. textwrap counts characters, so a Chinese title would run to
    twice the width it was given. The indents are kept as given ("0.37  " before a title)."""
    lines, line, used, empty = [], first, columns(first), True
    for word in words:
        for piece in _pieces(word, width - columns(indent)):
            wide = columns(piece)
            if not empty and used + 1 + wide > width:
                lines.append(line)
                line, used, empty = indent, columns(indent), True
            if not empty:
                line, used = line + " ", used + 1
            line, used, empty = line + piece, used + wide, False
    return "\n".join(lines + [line])


def _pieces(word: str, room: int) -> list[str]:
    """A word cut into pieces of at most ``room`` columns (most words are one piece)."""
    pieces, piece, used = [], "", 0
    for ch in word:
        wide = columns(ch)
        if piece and used + wide > room:
            pieces.append(piece)
            piece, used = "", 0
        piece, used = piece + ch, used + wide
    return pieces + [piece] if piece else pieces


def columns(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


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
