"""Running digest by hand: run, resend, doctor, fetch, embed (and deliver, which the daemon runs)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
from contextlib import contextmanager

import click
from rich.console import Console

from .common import App, RunFailure, Terminated, UsageProblem, check_profile, cli, listing_options, parse_day, pass_app

# -- the run ------------------------------------------------------------------------------------------

@cli.command("run")
@click.option("--day", "day_text", metavar="YYYY-MM-DD", multiple=True,
              help="An announcement day to (re)build; repeat for one merged catch-up digest. Default: the feed's.")
@click.option("--profile", "profile_names", metavar="NAME", multiple=True, help="Only this profile (repeatable).")
@click.option("--dry-run", is_flag=True,
              help="Fetch and store the day's papers, then render each digest to preview files beside the "
                   "database; build no digest, call no LLM, send nothing.")
@click.option("--no-fetch", is_flag=True, help="Use only announcements already stored.")
@click.option("--trigger", default="cli", hidden=True)
@listing_options(csv_ok=False)
@pass_app
def run_command(app: App, day_text, profile_names, dry_run, no_fetch, trigger, as_json) -> None:
    """Fetch, rank, summarize and deliver one announcement day now."""
    from .. import notices, pipeline
    from ..arxiv.days import NotAnnouncedYet
    from ..embed import EmbeddingError

    days = [parse_day(text, "--day") for text in day_text]
    for name in profile_names:
        check_profile(app, name, with_digests=False)  # a run builds digests for configured profiles only
    settings = app.settings_with_secrets  # a secret that cannot be read is the first thing to hear
    if trigger == "cli" and not no_fetch:
        _arxiv_resolves(settings)
    db = app.db
    with _terminate_as_interrupt():
        try:
            result = pipeline.run_day(db, settings, days=days, profiles=list(profile_names), dry_run=dry_run,
                                      trigger=trigger, fetch=not no_fetch)
        except (NotAnnouncedYet, EmbeddingError) as exc:  # the user's to fix: exit 2
            raise UsageProblem(str(exc)) from None
    if not dry_run:
        notices.speak_up(db, app.settings)
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


def _arxiv_resolves(settings) -> None:
    """A run from a shell on a machine that cannot resolve arXiv says so at once (within
    readiness.RESOLVE_SECONDS), not after a minute of retries; the daemon's runs (another trigger) retry."""
    from ..readiness import arxiv_hosts, unresolved

    reason = unresolved(arxiv_hosts(settings))
    if reason:
        raise RunFailure(f"{reason}: is this machine offline? Nothing was fetched; `digest check` tries "
                         f"everything a run needs")


@cli.command("deliver", hidden=True)
@pass_app
def deliver_command(app: App) -> None:
    """Send every delivery whose time has come (the daemon runs this between firings)."""
    from ..deliver import deliver_due
    from ..notices import speak_up
    from ..storage import outbox

    outcomes = deliver_due(app.db, app.settings_with_secrets)
    speak_up(app.db, app.settings)  # a delivery that failed for good, a day the daemon gave up on
    for o in outcomes:
        click.echo(f"digest {o.digest_id}: {outbox.where(o)}: {o.status}"
                   + (f" ({o.error})" if o.error else ""))


@cli.command("resend")
@click.argument("day_argument", metavar="[YYYY-MM-DD]", required=False)  # the spelling before --day; kept
@click.option("--day", "day_text", metavar="YYYY-MM-DD", help="Only this announcement day's digests.")
@click.option("--profile", metavar="NAME", help="Only this profile's digest.")
@click.option("--failed", "which", flag_value="failed", default=True,
              help="Only deliveries that failed for good (the default).")
@click.option("--all", "which", flag_value="all", help="Every delivery of the day's digests, sent ones too.")
@click.option("--channel", type=click.Choice(["email", "chat", "files"]), help="Only this channel.")
@click.option("--to", "target", metavar="TARGET", help="Only this recipient address or chat target.")
@click.option("--dry-run", is_flag=True, help="Say who would get what, and send nothing.")
@pass_app
def resend_command(app: App, day_argument, day_text, profile, which, channel, target, dry_run) -> None:
    """Send a digest again: by default only what failed for good; --all, --channel or --to for more.
    Says who will get what before it sends."""
    from ..storage import outbox
    from ..deliver import deliver_due
    from ..history.views import moment

    if day_argument and day_text and day_argument != day_text:
        raise UsageProblem(f"--day {day_text} and {day_argument}: give the day once, as --day")
    day = parse_day(day_text or day_argument, "--day")
    check_profile(app, profile)
    if which == "all" and day is None:
        raise UsageProblem("--all: name the day to send again, e.g. `digest resend --day 2026-06-29 --all`")
    rows = outbox.chosen_for_resend(app.db, day=day, profile=profile, failed_only=which == "failed" and not target
                                    and not channel, channel=channel, target=target)
    if not rows:
        click.echo("Nothing to send again" + (f" for {day}" if day else "") + (
            ": no delivery failed for good." if which == "failed" and not (target or channel) else "."))
        return
    click.echo(("Would send again:" if dry_run else "Sending again:"))
    for row in rows:
        why = f"failed: {row['last_error']}" if row["status"] == "failed" else f"sent {moment(row['sent_at'])}"
        click.echo(f"  {row['day']} {row['profile']}: {outbox.where(row)} ({why})")
    if dry_run:
        return
    outbox.requeue(app.db, [r["id"] for r in rows])
    outcomes = deliver_due(app.db, app.settings_with_secrets, only=[r["id"] for r in rows])
    failed = [o for o in outcomes if o.status != "sent"]
    click.echo(f"Sent {sum(o.status == 'sent' for o in outcomes)} of {len(rows)}.")
    if failed:
        raise RunFailure(f"{outbox.where(failed[0])}: {failed[0].status}: {failed[0].error}")


@cli.command("doctor")
@listing_options(csv_ok=False)
@pass_app
def doctor_command(app: App, as_json: bool) -> None:
    """Prove the ledger on the whole database: every announced paper of every profile in exactly one
    digest, or the exceptions listed; and that its schema is exactly digest's (no trigger or view added).
    Exit status 1 when a paper was missed or sent twice, or the schema is not digest's."""
    from ..storage import ledger
    from ..storage.db import foreign_schema

    reports = ledger.check(app.reader, app.settings)
    foreign = foreign_schema(app.reader)  # a trigger or view added to the file acts behind digest's back
    if as_json:
        click.echo(json.dumps([{**vars(r), "ok": r.ok} for r in reports], indent=2))
    else:
        for report in reports:
            click.echo("\n".join(report.describe()))
        click.echo("\n".join(f"schema: {line}" for line in foreign) or "schema: exactly digest's")
    if foreign or not all(r.ok for r in reports):
        sys.exit(1)


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (systemd stop, the daemon's shutdown) unwinds like Ctrl-C, so the run is recorded as
    interrupted; every stage is idempotent, so the next run picks up where this one stopped."""

    def handler(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli.command("fetch")
@click.option("--since", "since_text", metavar="YYYY-MM-DD", help="Backfill from this announcement day (API).")
@click.option("--until", "until_text", metavar="YYYY-MM-DD",
              help="Backfill up to this day, included (default: --since).")
@pass_app
def fetch_command(app: App, since_text: str | None, until_text: str | None) -> None:
    """Fetch today's feed, or backfill past announcement days with --since/--until."""
    from ..arxiv import api, feed

    start = parse_day(since_text, "--since")
    end = parse_day(until_text, "--until")
    if start is None and end is None:
        result = feed.fetch_announcements(app.db, app.settings)
        if result.status == "failed":
            raise RunFailure(feed.describe_fetch(result))
        click.echo(feed.describe_fetch(result))
        return
    if start is None:
        raise UsageProblem("--until: give --since too")
    end = end or start
    if start > end:
        raise UsageProblem(f"--since {start} is after --until {end}")
    summary = _backfill_with_progress(app, start, end)
    click.echo(api.describe_backfill(start, end, summary))
    if summary["failed"]:
        raise RunFailure(summary["errors"][0])


@cli.command("embed")
@pass_app
def embed_command(app: App) -> None:
    """Embed every stored paper that has no vector for embedding.model and embedding.precision yet (after
    changing either, or after `fetch --since`), so that semantic search and related see the whole history."""
    from .. import embed

    key = app.settings.embedding.vectors_key
    try:
        done = embed.embed_history(app.db, app.settings, progress=sys.stderr.isatty())
    except embed.EmbeddingError as exc:
        raise RunFailure(str(exc)) from None
    if done:
        click.echo(f"Embedded {done:,} papers with {key}; every paper in the history has a vector for it.")
    else:
        click.echo(f"Every paper in the history has a vector for {key}.")


def _backfill_with_progress(app: App, start: dt.date, end: dt.date) -> dict:
    from rich.progress import Progress

    from ..arxiv import api
    from ..arxiv.calendar import Calendar

    calendar = Calendar.from_settings(app.settings)
    days = calendar.announcement_days(start, end)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("backfilling", total=len(days))
        return api.backfill(app.db, app.settings, start, end, calendar=calendar,
                            progress=lambda day, result: progress.update(task, advance=1, description=str(day)))


