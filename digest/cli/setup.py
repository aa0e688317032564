"""Setting up and keeping digest running: init, demo, config, check, daemon."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

import click

from ..config_rules import find_config
from ..secrets import ConfigError
from ..storage.db import DatabaseError
from .common import App, RunFailure, UsageProblem, cli, listing_options, pass_app, wrapped

# -- configuration -------------------------------------------------------------------------------------

@cli.command()
@pass_app
def init(app: App) -> None:
    """Write a commented configuration file to start from (never overwrites); `digest --config FILE init`
    writes it to FILE."""
    target = find_config(app.config_path)
    if target.exists():
        raise UsageProblem(f"{target}: already exists; edit it, or remove it first")
    text = resources.files("digest").joinpath("config.example.toml").read_text(encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    target.chmod(0o600)
    command = _digest_command(None if target == find_config(None) else target)
    click.echo(f"Wrote {target}. Edit it before the first run:\n"
               f"  [arxiv] contact     your email address, which arXiv asks automated clients to send\n"
               f"  [arxiv] categories  the arXiv categories to read\n"
               f"  [profiles.me]       interests: a line or two on what you want to read first\n"
               f"  [email]             host, from and a profile's email_to, to get mail (else HTML files)\n"
               f"Then: {command} run")


@cli.command("demo")
@click.option("--dir", "folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the demo's database, configuration, digest and mail here (default: a new temporary folder).")
@click.option("--no-llm", is_flag=True, help="No LLM stub: the digest shows abstracts, as without an LLM.")
def demo_command(folder: Path | None, no_llm: bool) -> None:
    """See digest work without arXiv: a recorded real day, a mail server and an LLM stub on loopback."""
    from ..demo import describe, run_demo

    folder = folder or Path(tempfile.mkdtemp(prefix="digest-demo-"))
    demo = run_demo(folder, llm=not no_llm, echo=click.echo)
    lines = describe(demo)
    command = demo.digest_command()
    click.echo("\n".join(line.replace(command, _digest_command(demo.config)) for line in lines))
    if demo.returncode != 0:
        raise RunFailure("the demo's run failed")


def _digest_command(config: Path | None) -> str:
    """How the user calls this digest: `digest` when the shell finds this one, else its path (`make
    run` installs into .venv/bin, which is not on PATH), with --config when the file is not the default."""
    me = Path(sys.argv[0]).resolve()
    found = shutil.which("digest")
    if me.name == "__main__.py" and me.parent.name == "digest":  # python -m digest
        command = f"{shlex.quote(sys.executable)} -m digest"
    elif found and Path(found).resolve() == me or me.name != "digest":
        command = "digest"
    else:
        command = shlex.quote(os.path.relpath(me) if me.is_relative_to(Path.cwd()) else str(me))
    return f"{command} --config {shlex.quote(str(config))}" if config else command


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
    from ..config import as_toml, load_settings  # pydantic: here, not at every command's start

    if check_only:  # digest.service's ExecReload= runs this first, so a bad file fails `systemctl reload`
        try:
            # No note: ExecReload= runs this as root, whose files in the service's cache it could not replace.
            settings = load_settings(app.config_path, credentials=not no_credentials)
        except ConfigError as exc:
            raise UsageProblem(str(exc)) from None
        click.echo(f"{settings.source}: valid")
        return
    if show_path:
        path = find_config(app.config_path)
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
    click.echo(as_toml(data), nl=False)
    for problem in settings.secret_problems():  # `run`, `daemon` and `check` need them; showing does not
        click.echo(f"# not readable here: {problem}")



@cli.command("daemon")
@click.option("--once", is_flag=True,
              help="Catch up, poll for today's announcement until it is delivered or given up, then exit "
                   "(for a timer instead of a long-running service).")
@pass_app
def daemon_command(app: App, once: bool) -> None:
    """Run the schedule: every announcement day at schedule.time, deliver the digest; catch up missed days."""
    from ..daemon import DaemonError, run_daemon

    try:
        status = run_daemon(find_config(app.config_path), once=once)
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    except (DaemonError, DatabaseError) as exc:
        raise RunFailure(str(exc)) from None
    sys.exit(status)


@cli.command("check")
@click.option("--service", is_flag=True,
              help="Check instead that digest.service's dynamic user can run this installation (no configuration needed).")
@listing_options(csv_ok=False)
@pass_app
def check_command(app: App, service: bool, as_json: bool) -> None:
    """Try everything a run needs, sending nothing: arXiv's feed and API answering, the LLM answering with
    the configured key and model, and every channel (SMTP login, chat reachability, the files folder)."""
    from ..deliver import check_channels
    from ..readiness import check_arxiv, check_llm
    from ..service import service_problems

    if service:
        problems = service_problems()
        results = [("service", not problems, "; ".join(problems) or f"digest.service can run {sys.prefix}")]
    else:
        settings = app.settings_with_secrets
        results = [*check_arxiv(settings), check_llm(settings), *check_channels(settings)]
    if as_json:
        click.echo(json.dumps([{"channel": c, "ok": ok, "detail": d} for c, ok, d in results], indent=2))
    else:
        for channel, ok, detail in results:
            click.echo(wrapped(app, f"{'ok  ' if ok else 'FAIL'}  {channel}: {detail}", " " * 6))
    if not all(ok for _, ok, _ in results):
        sys.exit(1)


