"""What every command shares: the group, the settings and database opened on demand, the --json/--csv
output, the one-line errors. The command modules import it; the package's ``__init__`` registers them."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import json
import os
import sqlite3
import sys
import textwrap
from typing import TYPE_CHECKING

import click
from rich.console import Console

from ..config_rules import UnknownProfile, config_label, find_config, read_config_text, validated_view
from ..history.views import rows_view
from ..secrets import ConfigError
from ..storage.db import DatabaseError, describe_sqlite_error, open_db, open_for_reading
from ..text import csv_cell

if TYPE_CHECKING:
    from ..config import Settings


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
        self._db_in_memory = False
        self.reading = False  # set by a command that only reads (see :func:`reading`)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = self._validated_view() if self.reading else None
                if self._settings is None:
                    # Pydantic, and the whole model: 0.07 s. Secrets are read when used. A command that may
                    # write leaves a note for the reading commands (see digest.config_rules).
                    from ..config import load_settings

                    self._settings = load_settings(self.config_path, resolve=False, note=not self.reading)
            except ConfigError as exc:
                raise UsageProblem(str(exc)) from None
                setup_logging(self._settings.secrets(), stream=sys.stderr)
        return self._settings

    def _validated_view(self):
        """For a reading command: the settings as the note of an earlier validation of this very text
        has them, or None (then it is validated now)."""
        file = find_config(self.config_path)
        return validated_view(read_config_text(file), str(file), config_label(self.config_path, file))

    @property
    def settings_with_secrets(self) -> Settings:
        """The settings, every secret read now: for the commands that use them (run, check, resend), so
        a missing key is their first line, not an error half-way through."""
        try:
            self.settings.check_secrets()
        except ConfigError as exc:
            raise UsageProblem(str(exc)) from None
        from ..logs import setup_logging  # logging loads only for the commands that read the settings

        setup_logging(self.settings.secrets(), stream=sys.stderr)  # redact the values just read, too
        return self.settings

    @property
    def reader(self):
        """The database for a command that only reads: creates nothing, and works read-only (see
        :func:`open_for_reading`)."""
        return self._opened(open_for_reading)

    @property
    def db(self):
        return self._opened(open_db)

    def _opened(self, opener):
        """One connection per command, opened by the first of ``db`` and ``reader`` it asks for; except that
        a command which read first (a missing database: an empty one in memory) and then writes gets the
        real file, created now."""
        if self._db is not None and opener is open_db and self._db_in_memory:
            self._db.conn.close()
            self._db = None
        if self._db is None:
            self._db_in_memory = opener is open_for_reading and not self.settings.database_path().exists()
            try:
                self._db = opener(self.settings.database_path())
            except DatabaseError as exc:
                raise RunFailure(str(exc)) from None
        return self._db


pass_app = click.make_pass_decorator(App)


def reading(fn):
    """For a command that only reads (status, search, show, digests, stats): the configuration as an
    earlier command validated it, when this text was validated before (see digest.config_rules)."""

    @functools.wraps(fn)
    def command(app: App, *args, **kwargs):
        app.reading = True
        return fn(app, *args, **kwargs)

    return command


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an interrupt (`digest run` under the daemon or systemd), so a run unwinds and
    records itself interrupted; unlike Ctrl-C it says nothing more: the run's log already did."""


class DigestGroup(click.Group):
    """A database that stops accepting writes in the middle of a command (locked by another process,
    read-only, a full disk) is one line and exit status 1, never a traceback, whichever command met it.
    An interrupt is exit status 130, without click's "Aborted!" (which landed in the journal at every
    stop of the service during a run)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            if not isinstance(exc, Terminated):
                click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except sqlite3.Error as exc:
            app = ctx.obj
            where = app.settings.database_path() if isinstance(app, App) and app._settings else "the database"
            raise RunFailure(describe_sqlite_error(where, exc)) from None


def console_for_output() -> Console:
    # A fixed width when not on a terminal keeps output stable for pipes and tests.
    # A terminal tells its width; into a pipe or file the lines are 120 columns, or $COLUMNS.
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "") or 120)
    return Console(width=width, highlight=False, soft_wrap=False)


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
    app.console.print(rows_view(rows, columns, title))


def wrapped(app: App, line: str, indent: str = "  ") -> str:
    """A line of plain output within the console's width (80 columns on an 80-column terminal), continued
    under ``indent``; a path or URL longer than the line is never cut."""
    return textwrap.fill(line, app.console.width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def parse_day(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UsageProblem(f"{option}: expected a date as YYYY-MM-DD, got {json.dumps(value)}") from None



def check_profile(app: App, profile: str | None, *, with_digests: bool = True) -> None:
    """``--profile``: a profile named in the configuration or, ``with_digests`` (a reading command), one
    that once had digests (since removed from it); any other name is the one-line error, exit 2."""
    if profile is None or profile in app.settings.profiles:
        return
    also = []
    if with_digests:
        from ..storage import ledger  # with the outbox (socket): only a command given --profile pays for it

        also = [row["profile"] for row in ledger.per_profile(app.reader)]
    try:
        app.settings.check_profiles([profile], also=also)
    except UnknownProfile as exc:
        raise UsageProblem(f"--profile: {exc}") from None


def main() -> None:
    try:
        cli(prog_name="digest")
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)

