"""Terminal views: the plain data of search, status and stats drawn as rich renderables. Only the CLI
imports this module."""

from __future__ import annotations

import re

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..text import HIT_END, HIT_START, plural, shown_cell

# -- terminal views --------------------------------------------------------------------------------

def _highlighted(snippet: str) -> Text:
    text = Text()
    for n, part in enumerate(re.split(f"[{HIT_START}{HIT_END}]", snippet)):
        text.append(part, style="bold yellow" if n % 2 else "")
    return text


def results_view(rows: list[dict], snippets: bool = True) -> Table:
    """Search or related results: rank, id, day, score, then the title with its highlighted snippet."""
    table = Table(header_style="bold")
    for name, justify in (("#", "right"), ("id", "left"), ("announced", "left"), ("score", "right"),
                          ("paper", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "paper")
    for n, row in enumerate(rows, 1):
        paper = Text(row["title"], style="bold")
        authors = row["authors"][:3] + (["et al."] if len(row["authors"]) > 3 else [])
        paper.append("\n" + ", ".join(authors), style="dim")
        if snippets and row.get("snippet"):
            paper.append("\n").append_text(_highlighted(row["snippet"]))
        table.add_row(str(n), row["id"], row["announced"] or "", f"{row['score']:.3f}", paper)
    return table


def paper_view(details: dict) -> Group:
    parts: list = [Text(details["title"], style="bold"), Text(", ".join(details["authors"]))]
    facts = [("id", f"{details['id']}v{details['version']}  {details['url']}"),
             ("categories", ", ".join(details["categories"]))]
    facts += [(k.replace("_", " "), details[k]) for k in ("published", "updated", "comment", "journal_ref", "doi")
              if details.get(k)]
    if details["versions"]:
        facts.append(("versions", ", ".join(f"v{v}" for v in details["versions"])))
    if not details["stored"]:
        facts.append(("stored", "no (fetched from arXiv just now)"))
    facts_table = Table.grid(padding=(0, 2))
    for name, value in facts:
        facts_table.add_row(Text(name, style="dim"), Text(str(value)))
    parts += [facts_table, Text(""), Text(" ".join(details["abstract"].split()))]
    if details["announcements"]:
        parts += [Text(""), _small_table("Announced", details["announcements"], ["day", "kind", "version"])]
    if details["digests"]:
        parts += [Text(""), _small_table("In digests", details["digests"],
                                         ["day", "profile", "rank", "score", "section", "reason"])]
    summary = details["summary"]
    if summary:
        parts += [Text(""), Text(f"Summary ({summary['model']})", style="bold"), Text(summary["tldr"])]
        for qa in summary["faq"]:
            parts += [Text(qa["question"], style="bold"), Text(qa["answer"])]
    if details["feedback"]:
        parts += [Text(""), Text("Feedback: " + "; ".join(f"{f['feedback']} ({f['profile'] or 'all profiles'})"
                                                          for f in details["feedback"]))]
    return Group(*parts)


def _small_table(title: str, rows: list[dict], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text("" if row[c] is None else str(row[c])) for c in columns))
    return table


PROSE = {"title", "error", "last_error", "delivery", "target", "counts", "reason", "paper"}  # wrap at spaces
ISO_MOMENT = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(:\d{2}(\.\d+)?)?([+-]\d{2}:\d{2}|Z)$")


def moment(text: str | None) -> str:
    """A moment as every command shows it to people: to the minute, ``2026-12-05 12:19Z`` in UTC, else
    with its offset (``2026-12-07 07:00 -05:00``); JSON keeps it whole. Anything else unchanged."""
    found = ISO_MOMENT.match(text or "")
    if not found:
        return "" if text is None else text
    offset = found.group(5)
    return f"{found.group(1)} {found.group(2)}{'Z' if offset in ('Z', '+00:00') else ' ' + offset}"


def _cell(column: str, value) -> str:
    """A value as a table shows it: a moment to the minute (:func:`moment`), a delivery's channels one
    per line, so that an 80-column terminal never cuts one in the middle."""
    text = moment(shown_cell(value))
    return text.replace("; ", "\n") if column == "delivery" else text


def rows_view(rows: list[dict], columns: list[str], title: str | None = None) -> Table:
    """A plain listing; cells are Text, so a title with [brackets] is not read as markup. Short values
    (ids, days, numbers, moments) never wrap; prose columns take the rest of the width and wrap at spaces."""
    table = Table(title=title, header_style="bold")
    cells = [[_cell(c, row.get(c)) for c in columns] for row in rows]
    for n, column in enumerate(columns):
        if column in PROSE:
            table.add_column(column.replace("_", " "), overflow="fold", ratio=1, min_width=12)
        else:  # a cut id or timestamp would mislead: these keep their width
            widest = max([len(column)] + [len(line) for row in cells for line in row[n].splitlines()])
            table.add_column(column.replace("_", " "), no_wrap=widest <= 24, overflow="fold")
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    return table


BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(value: float, largest: float, width: int = 40) -> str:
    """A horizontal bar in eighths of a character, ``width`` characters for ``largest``."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / largest * width * 8))
    return "█" * (eighths // 8) + (BLOCKS[eighths % 8] if eighths % 8 else "")


def bar_chart(title: str, rows: list[dict], label: str, value: str, extra: list[str] = (),
              width: int = 80) -> Table:
    """Columns of numbers and a bar for ``value``, the bar as long as ``width`` columns leave room for."""
    table = Table(title=title, title_justify="left", header_style="bold", box=None, padding=(0, 1))
    table.add_column(label)
    for column in (value, *extra):
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("")
    largest = max((r[value] or 0 for r in rows), default=0)
    used = sum(max([len(c)] + [len(str(r[c] or 0)) for r in rows]) + 2 for c in (label, value, *extra))
    room = max(8, min(40, width - used - 3))
    for row in rows:
        table.add_row(Text(str(row[label])), *(str(row[c] or 0) for c in (value, *extra)),
                      Text(bar(row[value] or 0, largest, room), style="cyan"))
    return table


def stats_view(data: dict, width: int = 80) -> Group:
    t = data["totals"]
    parts: list = [Text(f"{t['papers']} papers, {t['announcements']} announcements, {t['embedded']} embedded, "
                        f"{t['summarized']} summarized")]
    if data["papers_per_day"]:
        parts += [Text(""), bar_chart("Papers per announcement day", data["papers_per_day"], "day", "papers",
                                      ["new", "cross", "replaced"], width)]
    if data["categories"]:
        parts += [Text(""), bar_chart("Primary categories", data["categories"], "category", "papers", width=width)]
    if data["tokens_per_day"]:
        parts += [Text(""), bar_chart("LLM tokens per day", data["tokens_per_day"], "day", "tokens",
                                      ["calls", "failed"], width)]
    if data["digests"]:
        parts += [Text(""), rows_view(data["digests"], ["profile", "digests", "sent", "last_day"], "Digests")]
    if data["deliveries"]:
        parts += [Text(""), rows_view(data["deliveries"], ["channel", "sent", "waiting", "failed", "attempts"],
                                      "Deliveries")]
    storage = data["storage"]
    parts += [Text(""), bar_chart(f"Database: {storage['bytes'] / 2**20:.1f} MiB", storage["tables"], "table", "kib",
                                  ["bytes_per_paper"])]
    return Group(*parts)


def health_lines(health: dict) -> list[str]:
    """``Health:      failing`` and one indented line per reason."""
    return [f"Health:      {health['state']}"] + [f"             {reason}" for reason in health["reasons"]]


def status_view(data: dict) -> Group:
    run = data["last_run"]
    facts = [("Database", data["database"]), ("Health", data["health"]["state"])]
    facts += [("", reason) for reason in data["health"]["reasons"]]
    if run:
        ended = f", finished {_cell('at', run['finished_at'])}" if run["finished_at"] else ""
        facts.append(("Last run", f"#{run['id']} {run['status']} for {run['day'] or 'an unknown day'} "
                                  f"({run['trigger']}), started {_cell('at', run['started_at'])}{ended}"))
        if run["error"]:
            facts.append(("", run["error"]))
    else:
        facts.append(("Last run", "none yet (`digest run` starts one)"))
    facts.append(("Next run", _cell("at", data["next_run"])))
    digest = data["last_digest"]
    facts.append(("Last digest", f"{digest['day']} ({digest['profile']}), built {_cell('at', digest['created_at'])}"
                  if digest else "none yet"))
    facts.append(("Deliveries", f"{len(data['pending'])} waiting, {len(data['failed'])} failed"))
    for profile, count in data["waiting_papers"].items():
        if count:
            facts.append(("Papers", f"{plural(count, 'paper')} waiting for {profile}'s next digest"))
    error = data["last_error"]
    facts.append(("Last error", f"{_cell('at', error['at'])} {error['source']}: {error['error']}" if error else "none"))
    grid = Table.grid(padding=(0, 1))  # a long value wraps under itself, not back to column 0
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in facts:
        grid.add_row(f"{name}:" if name else "", Text(str(value)))
    parts: list = [grid]
    if run and run["stages"]:
        stages = [{**s, "counts": " ".join(f"{k}={v}" for k, v in s["counts"].items()),
                   "duration": f"{s['duration']:.2f}s" if s["duration"] is not None else ""} for s in run["stages"]]
        parts += [Text(""), rows_view(stages, ["stage", "status", "duration", "counts", "error"], "Last run's stages")]
    waiting = data["failed"] + data["pending"]
    if waiting:
        parts += [Text(""), rows_view(waiting, ["day", "profile", "channel", "target", "status", "attempts",
                                                "next_attempt_at", "last_error"], "Deliveries not sent")]
    return Group(*parts)

