"""Commands only: parse options, call one library function, print with rich or as --json.

A user's mistake is one line on stderr and exit status 2; a failed run is exit status 1.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import signal
import sys
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import config as config_module
from .config import ConfigError, Settings
from .db import DatabaseError, open_db


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


def console_for_output() -> Console:
    # A fixed width when not on a terminal keeps output stable for pipes and tests.
    return Console(width=None if sys.stdout.isatty() else 120, highlight=False, soft_wrap=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
            writer.writerow({k: _cell(row.get(k)) for k in columns})
        click.echo(out.getvalue(), nl=False)
        return
    if not rows:
        app.console.print(empty)
        return
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    app.console.print(table)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


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
@listing_options(csv_ok=False)
@pass_app
def show_config(app: App, show_path: bool, as_json: bool) -> None:
    """Show the effective configuration, secrets redacted."""
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
@click.option("--dry-run", is_flag=True, help="Render to preview files; store and send nothing.")
@click.option("--resend", is_flag=True, help="Send again digests that were already sent.")
@click.option("--no-fetch", is_flag=True, help="Use only announcements already stored.")
@click.option("--trigger", default="cli", hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_app
def run_command(app: App, day_text, profile_names, dry_run, resend, no_fetch, trigger, as_json) -> None:
    """Fetch, rank, summarize and deliver one announcement day now."""
    from . import pipeline

    days = [parse_day(text, "--day") for text in day_text]
    unknown = [n for n in profile_names if n not in app.settings.profiles]
    if unknown:
        raise UsageProblem(f"--profile: no profile named {json.dumps(unknown[0])} in {app.settings.source}")
    db = app.db
    with _terminate_as_interrupt():
        result = pipeline.run_day(db, app.settings, days=days, profiles=list(profile_names), dry_run=dry_run,
                                  resend=resend, trigger=trigger, fetch=not no_fetch)
    if as_json:
        click.echo(json.dumps({"status": result.status, "announced_on": result.announced_on, "digests": result.digests,
                               "error": result.error, "previews": result.previews}, default=str))
    else:
        click.echo(_describe_run(db, result))
    if result.status in ("failed", "pending"):
        if as_json:
            sys.exit(1)
        raise RunFailure(result.error or "the run failed")


def _describe_run(db, result) -> str:
    if result.status == "empty":
        return "arXiv announced nothing (a weekend or a holiday); no digest to send."
    if result.status == "rendered":
        return "Dry run; nothing stored or sent. Previews:\n" + "\n".join(f"  {p}" for p in result.previews)
    if result.status == "failed":
        return f"{result.announced_on or 'today'}: the run failed."
    parts = []
    for digest_id in result.digests:
        row = db.execute("SELECT profile, announced, summarized FROM digests WHERE id = ?", [digest_id]).fetchone()
        parts.append(f"{row[0]}: {row[1]} papers, {row[2]} summarized")
    verb = "sent" if result.status == "sent" else "built"
    if not parts:
        return f"{result.announced_on}: no paper in your profiles' categories."
    return f"{result.announced_on}: {verb} {'; '.join(parts)}."


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
    from . import arxiv

    start, end = parse_day(from_text, "--from"), parse_day(to_text, "--to")
    if start is None and end is None:
        result = arxiv.fetch_announcements(app.db, app.settings)
        if result.status == "failed":
            raise RunFailure(arxiv.describe_fetch(result))
        click.echo(arxiv.describe_fetch(result))
        return
    if start is None:
        raise UsageProblem("--to: give --from too")
    end = end or start
    if start > end:
        raise UsageProblem(f"--from {start} is after --to {end}")
    summary = _backfill_with_progress(app, arxiv, start, end)
    click.echo(arxiv.describe_backfill(start, end, summary))
    if summary["failed"]:
        raise RunFailure(summary["errors"][0])


def _backfill_with_progress(app: App, arxiv, start: dt.date, end: dt.date) -> dict:
    from rich.progress import Progress

    days = arxiv.announcement_days(start, end)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("backfilling", total=len(days))
        return arxiv.backfill(app.db, app.settings, start, end,
                              progress=lambda day, result: progress.update(task, advance=1, description=str(day)))


@cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="Output JSON.")
@pass_app
def check_command(app: App, as_json: bool) -> None:
    """Try every configured channel without sending anything: SMTP login, chat reachability, files dir."""
    from .deliver import check_channels

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
