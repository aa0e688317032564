"""The history: search, show, related, digests, like, dislike, feedback, export, stats, status."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from ..arxiv.ids import InvalidArxivId
from ..history import EXPORT_FORMATS
from ..text import plural
from .common import (App, RunFailure, UsageProblem, check_profile, cli, emit, listing_options, parse_day, pass_app, reading,
               wrapped)

# -- history: search, inspect, feedback, export --------------------------------------------------------



@contextmanager
def _history_errors():
    """A user's mistake in the history commands is one line and exit 2; arXiv unreachable is exit 1."""
    from ..history.search import HistoryError

    try:
        yield
    except (HistoryError, InvalidArxivId) as exc:
        raise UsageProblem(str(exc)) from None
    except Exception as exc:
        # Their modules load numpy and requests (0.1-0.3 s): an error of theirs can only come from a
        # module already imported, so look only there.
        embed, http = sys.modules.get("digest.embed"), sys.modules.get("digest.arxiv.http")
        if (embed and isinstance(exc, embed.EmbeddingError)) or (http and isinstance(exc, http.ArxivError)):
            raise RunFailure(str(exc)) from None
        raise


def _history_filters(fn):
    """--since/--until/--category/--author/--profile/--liked, shared by search and export."""
    for option in reversed([
        click.option("--since", metavar="YYYY-MM-DD", help="Announced on or after this day."),
        click.option("--until", metavar="YYYY-MM-DD", help="Announced on or before this day."),
        click.option("--category", metavar="CODE", help="In this category (cs.CL) or archive (cs)."),
        click.option("--author", metavar="NAME", help="An author's name contains this."),
        click.option("--profile", metavar="NAME", help="Appeared in this profile's digests."),
        click.option("--liked", is_flag=True, help="Only papers you liked."),
    ]):
        fn = option(fn)
    return fn


def _filters(app: App, since, until, category, author, profile, liked):
    from ..history.search import Filters

    check_profile(app, profile)
    return Filters(since=parse_day(since, "--since"), until=parse_day(until, "--until"), category=category,
                   author=author, profile=profile, liked=liked)



def _search_rows(rows: list[dict], marked: bool) -> list[dict]:
    """Snippets with their hits marked the Markdown way (JSON), or as plain text (CSV)."""
    from ..history.search import plain_snippet

    mark = "**" if marked else ""
    return [{**r, "snippet": plain_snippet(r["snippet"], mark, mark)} if "snippet" in r else r for r in rows]


@cli.command("search")
@click.argument("query")
@click.option("--semantic", is_flag=True, help="Rank by embedding similarity to QUERY instead of by its words.")
@click.option("--raw", is_flag=True, help='Use FTS5 syntax as is: AND, OR, NOT, NEAR(a b), "phrase", prefix*.')
@_history_filters
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100_000), help="At most this many.")
@listing_options()
@pass_app
def search_command(app: App, query, semantic, raw, since, until, category, author, profile, liked, limit,
                   as_json, as_csv) -> None:
    """Search every paper ever fetched: titles, abstracts and authors, best match first."""
    from ..history import search, views

    app.reading = not semantic  # the semantic search loads a model anyway: its settings are the model's

    with _history_errors():
        filters = _filters(app, since, until, category, author, profile, liked)
        if semantic:
            rows = search.semantic_search(app.reader, app.settings, query, filters, limit)
            _say_what_semantic_search_misses(app)
        else:
            rows = search.search(app.reader, query, filters, limit, raw=raw)
    if as_json or as_csv:
        emit(app, _search_rows(rows, marked=as_json), ["id", "announced", "score", "title", "authors", "categories", "snippet"],
             as_json=as_json, as_csv=as_csv)
    elif not rows:
        app.console.print("No paper matches.")
    else:
        app.console.print(views.results_view(rows))


def _say_what_semantic_search_misses(app: App) -> None:
    """One line on stderr when some stored papers have no vector for the configured model and precision."""
    from ..embed import count_unembedded

    missing = count_unembedded(app.reader, app.settings)
    if missing:
        click.echo(f"{missing:,} papers in the history have no vector for {app.settings.embedding.vectors_key} "
                   "and are not searched by meaning: `digest embed` embeds them", err=True)


@cli.command("show")
@click.argument("paper_id", metavar="ID")
@listing_options(csv_ok=False)
@pass_app
@reading
def show_command(app: App, paper_id: str, as_json: bool) -> None:
    """Everything known about a paper: metadata, days announced, digest ranks, summary, feedback."""
    from ..history import search, views

    with _history_errors():
        details = search.paper_details(app.reader, app.settings, paper_id)
    if as_json:
        click.echo(json.dumps(details, indent=2, ensure_ascii=False))
    else:
        app.console.print(views.paper_view(details))


@cli.command("related")
@click.argument("paper_id", metavar="ID")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10_000), help="At most this many.")
@listing_options()
@pass_app
def related_command(app: App, paper_id: str, limit: int, as_json: bool, as_csv: bool) -> None:
    """The papers in your history nearest to ID by embedding."""
    from ..history import search, views

    with _history_errors():
        rows = search.related(app.reader, app.settings, paper_id, limit)
        _say_what_semantic_search_misses(app)
    if as_json or as_csv:
        emit(app, rows, ["id", "announced", "score", "title", "authors", "categories"], as_json=as_json,
             as_csv=as_csv)
    elif not rows:
        app.console.print("No embedded paper to compare with yet.")
    else:
        app.console.print(views.results_view(rows, snippets=False))


@cli.command("digests")
@click.option("--day", "day_text", metavar="YYYY-MM-DD", help="Show that day's digests in full, as the email had them.")
@click.option("--profile", metavar="NAME", help="Only this profile's digests.")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1), help="At most this many.")
@listing_options()
@pass_app
@reading
def digests_command(app: App, day_text, profile, limit, as_json, as_csv) -> None:
    """The digests built, newest first, with each channel's delivery status; --day shows one day's in full."""
    from ..history import search

    day = parse_day(day_text, "--day")
    check_profile(app, profile)
    if day is not None:
        if as_csv:
            raise UsageProblem("--csv: a day's digests in full are text or --json")
        _show_day(app, day, profile, as_json)
        return
    rows = search.list_digests(app.reader, profile, limit)
    emit(app, rows, ["day", "profile", "announced", "new", "cross", "summarized", "delivery"], as_json=as_json,
         as_csv=as_csv, empty="No digest yet; `digest run` builds today's.")


def _show_day(app: App, day, profile: str | None, as_json: bool) -> None:
    from ..history import search

    with _history_errors():
        digests = search.day_digests(app.reader, day, profile)
    if as_json:
        click.echo(json.dumps([{k: v for k, v in d.items() if k != "text"} for d in digests], indent=2,
                              ensure_ascii=False))
        return
    click.echo("\n".join(d["text"] for d in digests), nl=False)


def _feedback(app: App, paper_ids: tuple[str, ...], profile: str | None, value: int) -> None:
    from ..storage import feedback
    from ..history import search

    check_profile(app, profile)
    with _history_errors():
        ids = [search.normalize_paper_id(text) for text in paper_ids]  # every id checked before one is stored
        search.papers_to_judge(app.db, app.settings, ids)  # one arXiv does not know: nothing is recorded
        done = [feedback.set_feedback(app.db, paper_id, value, profile or "") for paper_id in ids]
    verb = "Liked" if value > 0 else "Disliked"
    for one in done:
        title = f" ({' '.join(one['title'].split())})" if one["title"] else ""
        click.echo(wrapped(app, f"{verb} {one['id']}{title} for {'profile ' + profile if profile else 'every profile'}."))


@cli.command("like")
@click.argument("paper_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--profile", metavar="NAME", help="Only for this profile (default: every profile).")
@pass_app
def like_command(app: App, paper_ids: tuple[str, ...], profile: str | None) -> None:
    """Like papers (ids or arXiv URLs): the next rankings move papers like them up."""
    _feedback(app, paper_ids, profile, 1)


@cli.command("dislike")
@click.argument("paper_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--profile", metavar="NAME", help="Only for this profile (default: every profile).")
@pass_app
def dislike_command(app: App, paper_ids: tuple[str, ...], profile: str | None) -> None:
    """Dislike papers (ids or arXiv URLs): the next rankings move papers like them down."""
    _feedback(app, paper_ids, profile, -1)


@cli.command("feedback")
@click.option("--profile", metavar="NAME", help="Only this profile's feedback ('' rows apply to all).")
@click.option("--clear", "clear_ids", metavar="ID", multiple=True, help="Forget the feedback on ID (repeatable).")
@click.option("--clear-all", is_flag=True, help="Forget all feedback (of --profile, when given).")
@listing_options()
@pass_app
@reading
def feedback_command(app: App, profile, clear_ids, clear_all, as_json, as_csv) -> None:
    """List your likes and dislikes, or clear them."""
    from ..storage import feedback

    check_profile(app, profile)
    if clear_ids or clear_all:
        with _history_errors():
            removed = feedback.clear_feedback(app.db, clear_ids, profile, everything=clear_all)
        click.echo(f"Cleared {removed} feedback {'entry' if removed == 1 else 'entries'}.")
        return
    rows = feedback.list_feedback(app.reader, profile)
    if not as_json:  # JSON says null for "every profile"; a table and CSV say it in words
        rows = [{**row, "profile": row["profile"] or "(all)"} for row in rows]
    emit(app, rows, ["id", "feedback", "profile", "title", "created_at"], as_json=as_json, as_csv=as_csv,
         empty="No feedback yet; `digest like ID` records one.")


@cli.command("export")
@click.option("--day", "day_text", metavar="YYYY-MM-DD", help="Export the papers announced that day.")
@click.option("--query", metavar="TEXT", help="Export a search's results (with the filters below).")
@click.option("--semantic", is_flag=True, help="With --query: rank by embedding similarity.")
@_history_filters
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1), help="With --query: at most this many.")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="bibtex",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@pass_app
def export_command(app: App, day_text, query, semantic, since, until, category, author, profile, liked, limit, fmt,
                   output) -> None:
    """Export a day, a search result or your liked papers as BibTeX, RIS, CSV or JSON."""
    from ..history import export

    # --liked is the source on its own, and a filter of --query; a day is exported whole.
    if bool(day_text) + bool(query) + (liked and not query) != 1:
        raise UsageProblem("give one of --day, --query or --liked")
    with _history_errors():
        filters = _filters(app, since, until, category, author, profile, liked)
        papers = export.papers_for_export(app.reader, export.chosen_ids(
            app.reader, app.settings, day=parse_day(day_text, "--day"), query=query, semantic=semantic, filters=filters,
            limit=limit))
    text = export.export_papers(papers, fmt)
    _say_what_was_skipped(app, liked and not query and not day_text, papers, profile)
    if not output:
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageProblem(f"--output {output}: cannot write: {exc.strerror}") from None
    click.echo(f"Wrote {plural(len(papers), 'paper')} to {output}.", err=True)


def _say_what_was_skipped(app: App, liked_only: bool, papers: list, profile: str | None) -> None:
    """`export --liked`: one line on stderr naming the liked papers not in the history (liked before
    `digest like` fetched unknown ids), which cannot be exported."""
    from ..storage.feedback import liked_ids

    if not liked_only:
        return
    exported = {paper.id for paper, _ in papers}
    skipped = [i for i in liked_ids(app.reader, profile) if i not in exported]
    if skipped:
        click.echo(f"Skipped {plural(len(skipped), 'liked paper')} not in your history (no title or authors "
                   f"to export): {', '.join(skipped)}", err=True)


@cli.command("stats")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1), help="Announcement days to cover.")
@listing_options(csv_ok=False)
@pass_app
@reading
def stats_command(app: App, days: int, as_json: bool) -> None:
    """Papers per day and category, digests, LLM tokens per day and delivery failures, as bar charts."""
    from ..history import status, views

    data = status.history_stats(app.reader, days)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        app.console.print(views.stats_view(data, app.console.width))


@cli.command("status")
@click.option("--check", is_flag=True,
              help="Print only the health and its reasons; exit 0 if ok, 1 if degraded, 2 if failing.")
@click.option("--service", is_flag=True,
              help="Ask the installed service's database, as its user (systemd-run; run with sudo).")
@listing_options(csv_ok=False)
@pass_app
@reading
def status_command(app: App, check: bool, service: bool, as_json: bool) -> None:
    """The last run, the next one, deliveries not sent and the last error: start here when a digest is late."""
    from ..history import health, status, views

    if service:
        _status_of_the_service(app, check, as_json)
    exists = app.settings.database_path().exists()
    data = status.status(app.reader, app.settings, database_exists=exists)
    if check and as_json:
        click.echo(json.dumps(data["health"], indent=2, ensure_ascii=False))
    elif check:  # a reason longer than the line continues two columns further in, so each still starts a line
        click.echo("\n".join(wrapped(app, line, " " * 15) for line in views.health_lines(data["health"])))
    elif as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        app.console.print(views.status_view(data))
    if check:
        sys.exit(health.EXIT_CODES[data["health"]["state"]])




def _status_of_the_service(app: App, check: bool, as_json: bool) -> None:
    """`digest status` run as digest.service runs (its user, its state directory); exits with its status."""
    import subprocess  # only `status --service` starts a process

    from ..service import as_the_service

    args = (["--config", app.config_path] if app.config_path else []) + ["status"] + (["--check"] if check else []) \
        + (["--json"] if as_json else [])
    try:
        sys.exit(subprocess.call(as_the_service(args)))
    except FileNotFoundError:
        raise UsageProblem("--service: systemd-run is not installed; the service runs under systemd") from None
