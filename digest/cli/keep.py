"""Keeping an installation for years: backup, restore, and the notice systemd sends when a unit fails."""

from __future__ import annotations

from pathlib import Path

import click

from .common import App, RunFailure, UsageProblem, cli, pass_app


@cli.command("backup")
@click.argument("target", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@pass_app
def backup_command(app: App, target: Path) -> None:
    """Write a consistent copy of the database to FILE (0600), even while the daemon runs; an existing
    FILE is replaced only when it is an earlier backup."""
    from ..backup import BackupError, NotABackup, backup

    if target.resolve() == app.settings.database_path().resolve():
        raise UsageProblem(f"{target}: that is the database itself; name another file")
    try:
        size = backup(app.db, target)
    except NotABackup as exc:
        raise UsageProblem(str(exc)) from None
    except BackupError as exc:
        raise RunFailure(str(exc)) from None
    click.echo(f"Wrote {target} ({size / 2**20:.1f} MiB).")  # MiB, as `digest stats` counts


@cli.command("restore")
@click.argument("source", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@pass_app
def restore_command(app: App, source: Path) -> None:
    """Replace the database with a backup, once it passed every check (each replaced one is kept)."""
    from ..backup import BackupError, restore

    try:
        proof, kept = restore(source, app.settings)
    except BackupError as exc:
        raise UsageProblem(str(exc)) from None
    database = app.settings.database_path()
    replaced = f" (the one it replaced: {kept.name})" if kept else ""
    click.echo("\n".join([*proof, f"Restored {source} into {database}{replaced}."]))


@cli.command("notify-failure")
@click.argument("unit")
@pass_app
def notify_failure_command(app: App, unit: str) -> None:
    """Tell the reader through every working channel that UNIT failed (systemd's OnFailure=), once a day."""
    from ..notices import unit_failed

    told = unit_failed(app.db, app.settings, unit)
    if told is None:
        click.echo(f"{unit}: already told today.")
    elif told["sent_to"]:
        click.echo(f"{unit}: told {', '.join(told['sent_to'])}.")
    else:
        raise RunFailure(f"{unit}: no notice could be sent: {'; '.join(told['errors'])}")
