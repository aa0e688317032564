"""Commands only: parse options, call one library function, print with rich or as --json.

A user's mistake is one line on stderr and exit status 2; a failed run is exit status 1.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import signal
import sqlite3
import sys
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import config as config_module
from .config import ConfigError, Settings
from .db import DatabaseError, describe_sqlite_error, open_db
from .text import csv_cell, shown_cell


class UsageProblem(click.ClickException):
    """A user's mistake: bad input, bad configuration. Exit status 2."""

    exit_code = 2


class RunFailure(click.ClickException):
    """Something outside the user's input failed (arXiv down, disk full). Exit status 1."""

    exit_code = 1


class App:
    """What every command shares: the settings and the database, opened only when a command needs them."""

    def __init__(self, config_path: str | None, console: Console):
        self.config_path = config_path
        self.console = console
        self._settings: Settings | None = None
        self._db = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = config_module.load_settings(self.config_path)
            except ConfigError as exc:
                raise UsageProblem(str(exc)) from None
            from .logs import setup_logging
            setup_logging(self._settings.secrets(), stream=sys.stderr)
        return self._settings

    @property
    def db(self):
        if self._db is None:
            try:
                self._db = open_db(self.settings.database_path())
            except DatabaseError as exc:
                raise RunFailure(str(exc)) from None
        return self._db


pass_app = click.make_pass_decorator(App)


class DigestGroup(click.Group):
    """A database that stops accepting writes in the middle of a command (locked by another process,
    read-only, a full disk) is one line and exit status 1, never a traceback, whichever command met it."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except sqlite3.Error as exc:
            app = ctx.obj
            where = app.settings.database_path() if isinstance(app, App) and app._settings else "the database"
            raise RunFailure(describe_sqlite_error(where, exc)) from None


def console_for_output() -> Console:
    # A fixed width when not on a terminal keeps output stable for pipes and tests.
    return Console(width=None if sys.stdout.isatty() else 120, highlight=False, soft_wrap=False)


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", metavar="FILE", envvar=None,
              help="Configuration file (default: $DIGEST_CONFIG, then ~/.config/digest/config.toml).")
@click.version_option(package_name="digest", prog_name="digest")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """A headless arXiv digest: fetch each announcement, rank every paper against your interests,
    summarize the best, deliver by email, chat or files, and keep the history in SQLite."""
    ctx.obj = App(config_path, console_for_output())


# -- output shared by every listing -----------------------------------------------------------------

def listing_options(csv_ok: bool = True):
    """--json (and --csv) for a listing command, as one shared set of options."""

    def decorate(fn):
        fn = click.option("--json", "as_json", is_flag=True, help="Output JSON.")(fn)
        if csv_ok:
            fn = click.option("--csv", "as_csv", is_flag=True, help="Output CSV.")(fn)
        return fn

    return decorate


def emit(app: App, rows: list[dict], columns: list[str] | None = None, *, as_json: bool = False,
         as_csv: bool = False, title: str | None = None, empty: str = "Nothing to show.") -> None:
    """Print rows as a rich table, JSON or CSV. ``columns`` picks and orders the table's columns."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    columns = columns or (list(rows[0]) if rows else [])
    if as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: csv_cell(row.get(k)) for k in columns})
        click.echo(out.getvalue(), nl=False)
        return
    if not rows:
        app.console.print(empty)
        return
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*(shown_cell(row.get(c)) for c in columns))
    app.console.print(table)


def parse_day(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UsageProblem(f"{option}: expected a date as YYYY-MM-DD, got {json.dumps(value)}") from None


# -- configuration -------------------------------------------------------------------------------------

@cli.command()
@click.option("--path", "path_", metavar="FILE", help="Where to write it (default: the config directory).")
@pass_app
def init(app: App, path_: str | None) -> None:
    """Write a commented configuration file to start from (never overwrites)."""
    target = Path(path_) if path_ else config_module.find_config(app.config_path)
    if target.exists():
        raise UsageProblem(f"{target}: already exists; edit it, or remove it first")
    text = resources.files("digest").joinpath("config.example.toml").read_text(encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    target.chmod(0o600)
    click.echo(f"Wrote {target}. Edit [profiles.me] and [arxiv] categories, then run `digest run`.")


@cli.command("config")
@click.option("--path", "show_path", is_flag=True, help="Print only the configuration file's path.")
@click.option("--check", "check_only", is_flag=True,
              help="Only validate the file, secrets included: its one-line error and exit status 2 when bad.")
@click.option("--no-credentials", is_flag=True,
              help="With --check: do not read the secret files in $CREDENTIALS_DIRECTORY (for ExecReload=).")
@listing_options(csv_ok=False)
@pass_app
def show_config(app: App, show_path: bool, check_only: bool, no_credentials: bool, as_json: bool) -> None:
    """Show the effective configuration, secrets redacted."""
    if check_only:  # digest.service's ExecReload= runs this first, so a bad file fails `systemctl reload`
        try:
            settings = config_module.load_settings(app.config_path, credentials=not no_credentials)
        except ConfigError as exc:
            raise UsageProblem(str(exc)) from None
        click.echo(f"{settings.source}: valid")
        return
    if show_path:
        path = config_module.find_config(app.config_path)
        if not path.exists():
            raise UsageProblem(f"{path}: no configuration file here; create one with `digest init`")
        click.echo(str(path))
        return
    settings = app.settings
    data = settings.redacted()
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    app.console.print(f"# {settings.source}")
    app.console.print(f"# database: {settings.database_path()}")
    click.echo(_as_toml(data))


def _as_toml(data: dict, prefix: str = "") -> str:
    """Plain data as TOML for `digest config`: keys first, then one [table] per nested dict."""
    keys = [f"{k} = {_toml_value(v)}" if v is not None else f"# {k} is not set"
            for k, v in data.items() if not isinstance(v, dict)]
    out = ("\n".join(keys) + "\n") if keys else ""
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            inner = _as_toml(value, name + ".")
            has_keys = any(not isinstance(v, dict) for v in value.values())
            out += (f"\n[{name}]\n" if has_keys or not value else "") + inner
    return out


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)


# -- the run ------------------------------------------------------------------------------------------

@cli.command("run")
@click.option("--day", "day_text", metavar="YYYY-MM-DD", multiple=True,
              help="An announcement day to (re)build; repeat for one merged catch-up digest. Default: the feed's.")
@click.option("--profile", "profile_names", metavar="NAME", multiple=True, help="Only this profile (repeatable).")
@click.option("--dry-run", is_flag=True,
              help="Fetch and store the day's papers, then render each digest to preview files beside the "
                   "database; build no digest, call no LLM, send nothing.")
@click.option("--resend", is_flag=True, hidden=True)
@click.option("--no-fetch", is_flag=True, help="Use only announcements already stored.")
@click.option("--trigger", default="cli", hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_app
def run_command(app: App, day_text, profile_names, dry_run, resend, no_fetch, trigger, as_json) -> None:
    """Fetch, rank, summarize and deliver one announcement day now."""
    from . import pipeline
    from .embed import EmbeddingError

    if resend:
        raise UsageProblem("--resend: use `digest resend DAY` (failed deliveries) or `digest resend DAY --all`")
    days = [parse_day(text, "--day") for text in day_text]
    unknown = [n for n in profile_names if n not in app.settings.profiles]
    if unknown:
        raise UsageProblem(f"--profile: no profile named {json.dumps(unknown[0])} in {app.settings.source}")
    db = app.db
    with _terminate_as_interrupt():
        try:
            result = pipeline.run_day(db, app.settings, days=days, profiles=list(profile_names), dry_run=dry_run,
                                      trigger=trigger, fetch=not no_fetch)
        except (pipeline.NotAnnouncedYet, EmbeddingError) as exc:  # the user's to fix: exit 2
            raise UsageProblem(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"status": result.status, "announced_on": result.announced_on, "digests": result.digests,
                               "error": result.error, "detail": result.detail, "previews": result.previews,
                               "profiles": [vars(o) for o in result.outcomes]}, default=str))
    else:
        click.echo("\n".join(pipeline.describe_run(result)))
    if result.status in ("failed", "pending"):
        if as_json:
            sys.exit(1)
        raise RunFailure(f"{result.error or 'the run failed'}\n`digest status` shows the details (is this "
                         f"machine offline?)" if result.status == "failed" else result.error)
    if result.error and not as_json:
        click.echo(f"Warning: {result.error}", err=True)


@cli.command("deliver", hidden=True)
@pass_app
def deliver_command(app: App) -> None:
    """Send every delivery whose time has come (the daemon runs this between firings)."""
    from .deliver import deliver_due

    outcomes = deliver_due(app.db, app.settings)
    for o in outcomes:
        click.echo(f"digest {o.digest_id}: {o.channel}{' to ' + o.target if o.target else ''}: {o.status}"
                   + (f" ({o.error})" if o.error else ""))


@cli.command("resend")
@click.argument("day_text", metavar="[YYYY-MM-DD]", required=False)
@click.option("--profile", metavar="NAME", help="Only this profile's digest.")
@click.option("--failed", "which", flag_value="failed", default=True,
              help="Only deliveries that failed for good (the default).")
@click.option("--all", "which", flag_value="all", help="Every delivery of the day's digests, sent ones too.")
@click.option("--channel", type=click.Choice(["email", "chat", "files"]), help="Only this channel.")
@click.option("--to", "target", metavar="TARGET", help="Only this recipient address or chat target.")
@click.option("--dry-run", is_flag=True, help="Say who would get what, and send nothing.")
@pass_app
def resend_command(app: App, day_text, profile, which, channel, target, dry_run) -> None:
    """Send a digest again: by default only what failed for good; --all, --channel or --to for more.
    Says who will get what before it sends."""
    from .deliver import deliver_due, outbox

    day = parse_day(day_text, "YYYY-MM-DD")
    _check_profile(app, profile)
    if which == "all" and day is None:
        raise UsageProblem("--all: name the day to send again, e.g. `digest resend 2026-06-29 --all`")
    rows = outbox.chosen_for_resend(app.db, day=day, profile=profile, failed_only=which == "failed" and not target
                                    and not channel, channel=channel, target=target)
    if not rows:
        click.echo("Nothing to send again" + (f" for {day}" if day else "") + (
            ": no delivery failed for good." if which == "failed" and not (target or channel) else "."))
        return
    click.echo(("Would send again:" if dry_run else "Sending again:"))
    for row in rows:
        why = f"failed: {row['last_error']}" if row["status"] == "failed" else f"sent {row['sent_at']}"
        click.echo(f"  {row['day']} {row['profile']}: {outbox.where(row)} ({why})")
    if dry_run:
        return
    outbox.requeue(app.db, [r["id"] for r in rows])
    outcomes = deliver_due(app.db, app.settings, only=[r["id"] for r in rows])
    failed = [o for o in outcomes if o.status != "sent"]
    click.echo(f"Sent {sum(o.status == 'sent' for o in outcomes)} of {len(rows)}.")
    if failed:
        raise RunFailure(f"{failed[0].channel}{' to ' + failed[0].target if failed[0].target else ''}: "
                         f"{failed[0].status}: {failed[0].error}")


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_app
def doctor_command(app: App, as_json: bool) -> None:
    """Prove the ledger on the whole database: every announced paper of every profile in exactly one
    digest, or the exceptions listed. Exit status 1 when a paper was missed or sent twice."""
    from . import ledger

    reports = ledger.check(app.db, app.settings)
    if as_json:
        click.echo(json.dumps([{**vars(r), "ok": r.ok} for r in reports], indent=2))
    else:
        for report in reports:
            click.echo("\n".join(report.describe()))
    if not all(r.ok for r in reports):
        sys.exit(1)


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (systemd stop, the daemon's shutdown) unwinds like Ctrl-C, so the run is recorded as
    interrupted; every stage is idempotent, so the next run picks up where this one stopped."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli.command("fetch")
@click.option("--from", "from_text", metavar="YYYY-MM-DD", help="Backfill from this announcement day (API).")
@click.option("--to", "to_text", metavar="YYYY-MM-DD", help="Backfill up to this day, included (default: --from).")
@pass_app
def fetch_command(app: App, from_text: str | None, to_text: str | None) -> None:
    """Fetch today's feed, or backfill past announcement days with --from/--to."""
    from .arxiv import api, feed

    start, end = parse_day(from_text, "--from"), parse_day(to_text, "--to")
    if start is None and end is None:
        result = feed.fetch_announcements(app.db, app.settings)
        if result.status == "failed":
            raise RunFailure(feed.describe_fetch(result))
        click.echo(feed.describe_fetch(result))
        return
    if start is None:
        raise UsageProblem("--to: give --from too")
    end = end or start
    if start > end:
        raise UsageProblem(f"--from {start} is after --to {end}")
    summary = _backfill_with_progress(app, start, end)
    click.echo(api.describe_backfill(start, end, summary))
    if summary["failed"]:
        raise RunFailure(summary["errors"][0])


def _backfill_with_progress(app: App, start: dt.date, end: dt.date) -> dict:
    from rich.progress import Progress

    from .arxiv import api
    from .arxiv.calendar import Calendar

    calendar = Calendar.from_settings(app.settings)
    days = calendar.announcement_days(start, end)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("backfilling", total=len(days))
        return api.backfill(app.db, app.settings, start, end, calendar=calendar,
                            progress=lambda day, result: progress.update(task, advance=1, description=str(day)))


# -- history: search, inspect, feedback, export --------------------------------------------------------

@contextmanager
def _history_errors():
    """A user's mistake in the history commands is one line and exit 2; arXiv unreachable is exit 1."""
    from .arxiv.http import ArxivError
    from .embed import EmbeddingError
    from .history import HistoryError

    try:
        yield
    except HistoryError as exc:
        raise UsageProblem(str(exc)) from None
    except (ArxivError, EmbeddingError) as exc:
        raise RunFailure(str(exc)) from None


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
    from .history import Filters

    _check_profile(app, profile)
    return Filters(since=parse_day(since, "--since"), until=parse_day(until, "--until"), category=category,
                   author=author, profile=profile, liked=liked)


def _check_profile(app: App, profile: str | None) -> None:
    """A profile named in the configuration, or one that once had digests (since removed from it)."""
    if profile is None or profile in app.settings.profiles:
        return
    if app.db.execute("SELECT 1 FROM digests WHERE profile = ? LIMIT 1", [profile]).fetchone() is None:
        raise UsageProblem(f"--profile: no profile named {json.dumps(profile)} in {app.settings.source}")


def _search_rows(rows: list[dict], marked: bool) -> list[dict]:
    """Snippets with their hits marked the Markdown way (JSON), or as plain text (CSV)."""
    from .history import plain_snippet

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
    from . import history

    with _history_errors():
        filters = _filters(app, since, until, category, author, profile, liked)
        if semantic:
            rows = history.semantic_search(app.db, app.settings, query, filters, limit)
        else:
            rows = history.search(app.db, query, filters, limit, raw=raw)
    if as_json or as_csv:
        emit(app, _search_rows(rows, marked=as_json), ["id", "announced", "score", "title", "authors", "categories", "snippet"],
             as_json=as_json, as_csv=as_csv)
    elif not rows:
        app.console.print("No paper matches.")
    else:
        app.console.print(history.results_view(rows))


@cli.command("show")
@click.argument("paper_id", metavar="ID")
@listing_options(csv_ok=False)
@pass_app
def show_command(app: App, paper_id: str, as_json: bool) -> None:
    """Everything known about a paper: metadata, days announced, digest ranks, summary, feedback."""
    from . import history

    with _history_errors():
        details = history.paper_details(app.db, app.settings, paper_id)
    if as_json:
        click.echo(json.dumps(details, indent=2, ensure_ascii=False))
    else:
        app.console.print(history.paper_view(details))


@cli.command("related")
@click.argument("paper_id", metavar="ID")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 10_000), help="At most this many.")
@listing_options()
@pass_app
def related_command(app: App, paper_id: str, limit: int, as_json: bool, as_csv: bool) -> None:
    """The papers in your history nearest to ID by embedding."""
    from . import history

    with _history_errors():
        rows = history.related(app.db, app.settings, paper_id, limit)
    if as_json or as_csv:
        emit(app, rows, ["id", "announced", "score", "title", "authors", "categories"], as_json=as_json,
             as_csv=as_csv)
    elif not rows:
        app.console.print("No embedded paper to compare with yet.")
    else:
        app.console.print(history.results_view(rows, snippets=False))


@cli.command("digests")
@click.option("--profile", metavar="NAME", help="Only this profile's digests.")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1), help="At most this many.")
@listing_options()
@pass_app
def digests_command(app: App, profile, limit, as_json, as_csv) -> None:
    """The digests built, newest first, with each channel's delivery status."""
    from . import history

    _check_profile(app, profile)
    rows = history.list_digests(app.db, profile, limit)
    columns = ["day", "profile", "announced", "new", "cross", "summarized", "delivery"]
    if as_json or as_csv:
        emit(app, rows, columns, as_json=as_json, as_csv=as_csv)
    elif not rows:
        app.console.print("No digest yet; `digest run` builds today's.")
    else:
        app.console.print(history.rows_view(rows, columns))


@cli.command("digest")
@click.argument("day_text", metavar="YYYY-MM-DD")
@click.option("--profile", metavar="NAME", help="Only this profile's digest.")
@listing_options(csv_ok=False)
@pass_app
def digest_command(app: App, day_text: str, profile, as_json: bool) -> None:
    """One day's full ranked list, as the email had it."""
    from . import history

    day = parse_day(day_text, "YYYY-MM-DD")
    _check_profile(app, profile)
    with _history_errors():
        digests = history.day_digests(app.db, day, profile)
    if as_json:
        click.echo(json.dumps([{k: v for k, v in d.items() if k != "text"} for d in digests], indent=2,
                              ensure_ascii=False))
        return
    click.echo("\n".join(d["text"] for d in digests), nl=False)


def _feedback(app: App, paper_id: str, profile: str | None, value: int) -> None:
    from . import history

    _check_profile(app, profile)
    with _history_errors():
        done = history.set_feedback(app.db, paper_id, value, profile or "")
    verb = "Liked" if value > 0 else "Disliked"
    title = f" ({' '.join(done['title'].split())})" if done["title"] else " (not in your history yet)"
    click.echo(f"{verb} {done['id']}{title} for {'profile ' + profile if profile else 'every profile'}.")


@cli.command("like")
@click.argument("paper_id", metavar="ID")
@click.option("--profile", metavar="NAME", help="Only for this profile (default: every profile).")
@pass_app
def like_command(app: App, paper_id: str, profile: str | None) -> None:
    """Like a paper: the next rankings move papers like it up."""
    _feedback(app, paper_id, profile, 1)


@cli.command("dislike")
@click.argument("paper_id", metavar="ID")
@click.option("--profile", metavar="NAME", help="Only for this profile (default: every profile).")
@pass_app
def dislike_command(app: App, paper_id: str, profile: str | None) -> None:
    """Dislike a paper: the next rankings move papers like it down."""
    _feedback(app, paper_id, profile, -1)


@cli.command("feedback")
@click.option("--profile", metavar="NAME", help="Only this profile's feedback ('' rows apply to all).")
@click.option("--clear", "clear_ids", metavar="ID", multiple=True, help="Forget the feedback on ID (repeatable).")
@click.option("--clear-all", is_flag=True, help="Forget all feedback (of --profile, when given).")
@listing_options()
@pass_app
def feedback_command(app: App, profile, clear_ids, clear_all, as_json, as_csv) -> None:
    """List your likes and dislikes, or clear them."""
    from . import history

    _check_profile(app, profile)
    if clear_ids or clear_all:
        with _history_errors():
            removed = history.clear_feedback(app.db, clear_ids, profile, everything=clear_all)
        click.echo(f"Cleared {removed} feedback {'entry' if removed == 1 else 'entries'}.")
        return
    rows = history.list_feedback(app.db, profile)
    for row in rows:
        row["profile"] = row["profile"] or "(all)"
    columns = ["id", "feedback", "profile", "title", "created_at"]
    if as_json or as_csv:
        emit(app, rows, columns, as_json=as_json, as_csv=as_csv)
    elif not rows:
        app.console.print("No feedback yet; `digest like ID` records one.")
    else:
        app.console.print(history.rows_view(rows, columns))


@cli.command("export")
@click.option("--day", "day_text", metavar="YYYY-MM-DD", help="Export the papers announced that day.")
@click.option("--query", metavar="TEXT", help="Export a search's results (with the filters below).")
@click.option("--semantic", is_flag=True, help="With --query: rank by embedding similarity.")
@_history_filters
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1), help="With --query: at most this many.")
@click.option("--format", "fmt", type=click.Choice(["bibtex", "ris", "csv", "json"]), default="bibtex",
              show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@pass_app
def export_command(app: App, day_text, query, semantic, since, until, category, author, profile, liked, limit, fmt,
                   output) -> None:
    """Export a day, a search result or your liked papers as BibTeX, RIS, CSV or JSON."""
    from . import history

    # --liked is the source on its own, and a filter of --query; a day is exported whole.
    if bool(day_text) + bool(query) + (liked and not query) != 1:
        raise UsageProblem("give one of --day, --query or --liked")
    with _history_errors():
        if day_text:
            _check_profile(app, profile)
            ids = history.day_paper_ids(app.db, parse_day(day_text, "--day"), profile)
        elif query:
            filters = _filters(app, since, until, category, author, profile, liked)
            found = (history.semantic_search(app.db, app.settings, query, filters, limit) if semantic
                     else history.search(app.db, query, filters, limit))
            ids = [r["id"] for r in found]
        else:
            _check_profile(app, profile)
            ids = history.liked_paper_ids(app.db, profile)
    text = history.export_papers(history.papers_for_export(app.db, ids), fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"Wrote {len(ids)} papers to {output}.", err=True)
    else:
        click.echo(text, nl=False)


@cli.command("stats")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1), help="Announcement days to cover.")
@listing_options(csv_ok=False)
@pass_app
def stats_command(app: App, days: int, as_json: bool) -> None:
    """Papers per day and category, digests, LLM tokens per day and delivery failures, as bar charts."""
    from . import history

    data = history.history_stats(app.db, days)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        app.console.print(history.stats_view(data))


@cli.command("status")
@listing_options(csv_ok=False)
@pass_app
def status_command(app: App, as_json: bool) -> None:
    """The last run, the next one, deliveries not sent and the last error: start here when a digest is late."""
    from . import history

    data = history.status(app.db, app.settings)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        app.console.print(history.status_view(data))


@cli.command("daemon")
@click.option("--once", is_flag=True,
              help="Catch up, poll for today's announcement until it is delivered or given up, then exit "
                   "(for a timer instead of a long-running service).")
@pass_app
def daemon_command(app: App, once: bool) -> None:
    """Run the schedule: every announcement day at schedule.time, deliver the digest; catch up missed days."""
    from .daemon import DaemonError, run_daemon

    try:
        status = run_daemon(config_module.find_config(app.config_path), once=once)
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    except (DaemonError, DatabaseError) as exc:
        raise RunFailure(str(exc)) from None
    sys.exit(status)


@cli.command("check")
@click.option("--service", is_flag=True,
              help="Check instead that digest.service's dynamic user can run this installation (no configuration needed).")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_app
def check_command(app: App, service: bool, as_json: bool) -> None:
    """Try every configured channel without sending anything: SMTP login, chat reachability, files dir."""
    from .deliver import check_channels
    from .service import service_problems

    if service:
        problems = service_problems()
        results = [("service", not problems, "; ".join(problems) or f"digest.service can run {sys.prefix}")]
    else:
        results = check_channels(app.settings)
    if as_json:
        click.echo(json.dumps([{"channel": c, "ok": ok, "detail": d} for c, ok, d in results], indent=2))
    else:
        for channel, ok, detail in results:
            click.echo(f"{'ok  ' if ok else 'FAIL'}  {channel}: {detail}")
        if not results:
            click.echo("No channel configured.")
    if not all(ok for _, ok, _ in results):
        sys.exit(1)


def main() -> None:
    try:
        cli(prog_name="digest")
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
