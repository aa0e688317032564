"""Exporting papers: a day, a search's results or the liked papers, as BibTeX, RIS, CSV or JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

from ..arxiv.calendar import Calendar
from ..config import Settings
from ..records import Paper
from ..storage.papers import announced_on, day_fetched, first_announced, get_papers
from ..storage.feedback import liked_ids
from ..storage.ledger import paper_ids_of
from ..text import csv_cell
from .search import Filters, HistoryError, search, semantic_search

# -- export ----------------------------------------------------------------------------------------

def chosen_ids(db, settings: Settings, *, day: dt.date | None = None, query: str | None = None,
               semantic: bool = False, filters: Filters | None = None, limit: int = 100) -> list[str]:
    """What `digest export` exports: a day's papers (in the profile's ranked order when ``filters``
    name a profile), a search's results (with ``filters``), or the liked papers."""
    filters = filters or Filters()
    if day is not None:
        return day_paper_ids(db, day, filters.profile, Calendar.from_settings(settings))
    if query:
        found = (semantic_search(db, settings, query, filters, limit) if semantic
                 else search(db, query, filters, limit))
        return [r["id"] for r in found]
    return liked_ids(db, filters.profile)


def papers_for_export(db, ids: list[str]) -> list[tuple[Paper, str | None]]:
    """(paper, first announcement day) in the order of ``ids``."""
    papers = get_papers(db, ids)
    first_days = first_announced(db, list(papers))
    return [(papers[i], first_days.get(i)) for i in ids if i in papers]


def day_paper_ids(db, day: dt.date, profile: str | None = None, calendar: Calendar | None = None) -> list[str]:
    """A day's papers: in the profile's ranked order when given, else in arXiv's listing order."""
    ids = paper_ids_of(db, day, profile) if profile else [a.paper.id for a in announced_on(db, day)]
    calendar = calendar or Calendar()
    if not ids:
        where = f" in profile {profile}" if profile else ""
        fetched = day_fetched(db, day, [])
        if fetched == "empty":
            raise HistoryError(f"nothing stored for {day}{where}: arXiv announced nothing that day")
        if fetched == "announced":
            raise HistoryError(f"nothing stored for {day}{where}: no digest of that day holds it yet")
        if not calendar.expected(day):
            why = "an arXiv holiday" if calendar.is_holiday(day) else f"arXiv announces nothing on {day:%A}s"
            raise HistoryError(f"nothing stored for {day}{where}: {why}")
        raise HistoryError(f"nothing stored for {day}{where}: not fetched yet (`digest run --day {day}` fetches it)")
    return ids


def export_papers(papers: list[tuple[Paper, str | None]], fmt: str) -> str:
    return WRITERS[fmt](papers)


def _year(paper: Paper, day: str | None) -> str:
    if day:
        return day[:4]
    if paper.published:
        return paper.published[:4]
    new_style = re.match(r"(\d{2})\d{2}\.", paper.id) or re.search(r"/(\d{2})\d{5}$", paper.id)
    two = int(new_style.group(1)) if new_style else 0
    return str(1900 + two if two >= 91 else 2000 + two)


def _bibtex_value(text: str) -> str:
    """Braces kept balanced (an unbalanced one would end the entry) and TeX's specials escaped."""
    text = " ".join(text.split())
    text = re.sub(r"(?<!\\)([&%#])", r"\\\1", text)
    depth = 0
    out = []
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                out.append("\\}")
                continue
            depth -= 1
        out.append(char)
    return "".join(out) + "}" * depth


def bibtex_key(paper: Paper) -> str:
    return "arXiv:" + paper.id.replace("/", "_")


def to_bibtex(papers: list[tuple[Paper, str | None]]) -> str:
    entries = []
    for paper, day in papers:
        fields = [
            ("title", "{" + _bibtex_value(paper.title) + "}"),
            ("author", " and ".join(_bibtex_value(a) for a in paper.authors)),
            ("year", _year(paper, day)),
            ("eprint", paper.id),
            ("archivePrefix", "arXiv"),
            ("primaryClass", paper.primary_category),
            ("url", paper.abs_url),
        ]
        if paper.doi:
            fields.append(("doi", paper.doi))
        if paper.journal_ref:
            fields.append(("journal", _bibtex_value(paper.journal_ref)))
        fields.append(("abstract", _bibtex_value(paper.abstract)))
        body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
        entries.append(f"@misc{{{bibtex_key(paper)},\n{body}\n}}\n")
    return "\n".join(entries)


def to_ris(papers: list[tuple[Paper, str | None]]) -> str:
    records = []
    for paper, day in papers:
        lines = [("TY", "UNPB"), ("TI", " ".join(paper.title.split()))]
        lines += [("AU", author) for author in paper.authors]
        lines += [("PY", _year(paper, day)), ("DA", (day or "").replace("-", "/")), ("AB", " ".join(paper.abstract.split())),
                  ("UR", paper.abs_url), ("PB", "arXiv"), ("M1", f"arXiv:{paper.id}")]
        lines += [("KW", c) for c in paper.categories]
        if paper.doi:
            lines.append(("DO", paper.doi))
        records.append("".join(f"{tag}  - {value}\n" for tag, value in lines if value) + "ER  - \n")
    return "\n".join(records)


EXPORT_COLUMNS = ["id", "version", "title", "authors", "primary_category", "categories", "announced", "url",
                  "doi", "journal_ref", "comment", "abstract"]


def _export_row(paper: Paper, day: str | None) -> dict:
    return {"id": paper.id, "version": paper.version, "title": " ".join(paper.title.split()),
            "authors": paper.authors, "primary_category": paper.primary_category, "categories": paper.categories,
            "announced": day, "url": paper.abs_url, "doi": paper.doi, "journal_ref": paper.journal_ref,
            "comment": paper.comment, "abstract": " ".join(paper.abstract.split())}


def to_csv(papers: list[tuple[Paper, str | None]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for paper, day in papers:
        writer.writerow({k: csv_cell(v) for k, v in _export_row(paper, day).items()})
    return out.getvalue()


def to_json(papers: list[tuple[Paper, str | None]]) -> str:
    return json.dumps([_export_row(p, d) for p, d in papers], indent=2, ensure_ascii=False) + "\n"


WRITERS = {"bibtex": to_bibtex, "ris": to_ris, "csv": to_csv, "json": to_json}  # one for each of EXPORT_FORMATS
