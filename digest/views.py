"""Terminal views: the plain data of search, status and stats drawn as rich renderables. Only the CLI
imports this module."""

from __future__ import annotations

import re

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .text import HIT_END, HIT_START, plural, shown_cell

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


def rows_view(rows: list[dict], columns: list[str], title: str | None = None) -> Table:
    """A plain listing; cells are Text, so a title with [brackets] is not read as markup."""
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")  # a cut timestamp or error would mislead
    for row in rows:
        table.add_row(*(Text(shown_cell(row.get(c))) for c in columns))
    return table


BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(value: float, largest: float, width: int = 40) -> str:
    """A horizontal bar in eighths of a character, ``width`` characters for ``largest``."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / largest * width * 8))
    return "█" * (eighths // 8) + (BLOCKS[eighths % 8] if eighths % 8 else "")


def bar_chart(title: str, rows: list[dict], label: str, value: str, extra: list[str] = ()) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", box=None, padding=(0, 1))
    table.add_column(label)
    for column in (value, *extra):
        table.add_column(column.replace("_", " "), justify="right")
    table.add_column("")
    largest = max((r[value] or 0 for r in rows), default=0)
    for row in rows:
        table.add_row(Text(str(row[label])), *(str(row[c] or 0) for c in (value, *extra)),
                      Text(bar(row[value] or 0, largest), style="cyan"))
    return table


def stats_view(data: dict) -> Group:
    t = data["totals"]
    parts: list = [Text(f"{t['papers']} papers, {t['announcements']} announcements, {t['embedded']} embedded, "
                        f"{t['summarized']} summarized")]
    if data["papers_per_day"]:
        parts += [Text(""), bar_chart("Papers per announcement day", data["papers_per_day"], "day", "papers",
                                      ["new", "cross", "replaced"])]
    if data["categories"]:
        parts += [Text(""), bar_chart("Primary categories", data["categories"], "category", "papers")]
    if data["tokens_per_day"]:
        parts += [Text(""), bar_chart("LLM tokens per day", data["tokens_per_day"], "day", "tokens",
                                      ["calls", "failed"])]
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
    lines = [f"Database:    {data['database']}"]
    lines += health_lines(data["health"])
    if run:
        ended = f", finished {run['finished_at']}" if run["finished_at"] else ""
        lines.append(f"Last run:    #{run['id']} {run['status']} for {run['day'] or 'an unknown day'} "
                     f"({run['trigger']}), started {run['started_at']}{ended}")
        if run["error"]:
            lines.append(f"             {run['error']}")
    else:
        lines.append("Last run:    none yet (`digest run` starts one)")
    lines.append(f"Next run:    {data['next_run']}")
    digest = data["last_digest"]
    lines.append(f"Last digest: {digest['day']} ({digest['profile']}), built {digest['created_at']}" if digest
                 else "Last digest: none yet")
    lines.append(f"Deliveries:  {len(data['pending'])} waiting, {len(data['failed'])} failed")
    for profile, count in data["waiting_papers"].items():
        if count:
            lines.append(f"Papers:      {plural(count, 'paper')} waiting for {profile}'s next digest")
    error = data["last_error"]
    lines.append(f"Last error:  {error['at']} {error['source']}: {error['error']}" if error else "Last error:  none")
    parts: list = [Text("\n".join(lines))]
    if run and run["stages"]:
        stages = [{**s, "counts": " ".join(f"{k}={v}" for k, v in s["counts"].items()),
                   "duration": f"{s['duration']:.2f}s" if s["duration"] is not None else ""} for s in run["stages"]]
        parts += [Text(""), rows_view(stages, ["stage", "status", "duration", "counts", "error"], "Last run's stages")]
    waiting = data["failed"] + data["pending"]
    if waiting:
        parts += [Text(""), rows_view(waiting, ["day", "profile", "channel", "target", "status", "attempts",
                                                "next_attempt_at", "last_error"], "Deliveries not sent")]
    return Group(*parts)

