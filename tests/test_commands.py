"""Commands that answer at once and speak one language (issue 25): what a reading command imports, one way
to give a day, one time format and one size unit, every line within 80 columns, configuration mistakes
that suggest the nearest spelling, and `make test-fast`."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import zoneinfo
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import ROOT
from loopback import Reply
from test_config import error_of

from digest.cli import cli
from digest.config import ConfigError, load_settings, parse_settings
from digest.history.views import moment
from digest.schedule import next_firing
from digest.storage import db as dbm

PROFILES = '[profiles.me]\ninterests = ["spiking neural networks"]\n[profiles.vision]\ninterests = ["segmentation"]\n'


@pytest.fixture
def history(filled_history):
    """The configuration file of a copy of test_history's database (tests/filled_history.py)."""
    return filled_history.config


def run(*args, columns: int = 80):
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(cli, list(args), catch_exceptions=False)


# -- a reading command imports what it reads ------------------------------------------------------------

HEAVY = ["pydantic", "sqlite_utils", "numpy", "jinja2", "apscheduler", "requests", "lxml", "openai", "onnxruntime",
         "torch"]
READING = [["status"], ["search", "spiking"], ["show", "2606.29847"], ["digests"], ["digests", "--day", "2026-06-29"],
           ["stats"], ["feedback"]]


@pytest.mark.parametrize("args", READING, ids=" ".join)
def test_a_reading_command_loads_no_heavy_package(history, args):
    """Each of these cost a cold `digest show` 0.05-0.15 s before (0.41 s in all); none is needed to read
    a configuration validated before (by any command that may write: run, daemon, config)."""
    assert run("config").exit_code == 0
    code = ("import sys\nfrom digest.cli import main\nsys.argv = ['digest', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
    process = subprocess.run([sys.executable, "-c", code, "--config", str(history), *args], capture_output=True,
                             text=True, env={**os.environ, "COLUMNS": "80"}, timeout=60)
    assert process.returncode == 0, process.stderr
    assert process.stderr.splitlines()[-1] == "[]"


def test_status_fires_when_apscheduler_would_across_a_year_of_clock_changes():
    """`status` computes the next firing without importing APScheduler; the daemon fires by APScheduler."""
    from apscheduler.triggers.cron import CronTrigger

    for zone in ("America/New_York", "Africa/Cairo", "Australia/Lord_Howe", "Europe/Berlin"):
        tz = zoneinfo.ZoneInfo(zone)
        for hour, minute in ((7, 0), (2, 30), (1, 30), (0, 30), (0, 0)):
            settings = SimpleNamespace(schedule=SimpleNamespace(tz=tz, time_of_day=dt.time(hour, minute)))
            trigger = CronTrigger(hour=hour, minute=minute, timezone=tz)
            now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
            while now.year == 2026:
                expected = trigger.get_next_fire_time(None, now + dt.timedelta(seconds=1))
                assert next_firing(settings, now).isoformat() == expected.isoformat(), (zone, hour, minute, now)
                now += dt.timedelta(hours=7, minutes=13)


# -- one way to say a day, a moment and a size ------------------------------------------------------------

def test_resend_takes_the_day_as_every_command_does_and_still_as_before(history):
    for args in (["--day", "2026-06-29"], ["2026-06-29"]):
        result = run("resend", *args, "--all", "--dry-run")
        assert result.exit_code == 0, result.output
        assert result.output.startswith("Would send again:\n  2026-06-29 me: email to me@example.org")
    assert "give the day once" in run("resend", "2026-06-29", "--day", "2026-06-30").output.lower()
    assert run("resend", "--day", "30.6.").output == (
        'Error: --day: expected a date as YYYY-MM-DD, got "30.6."\n')


def test_resend_shows_a_moment_as_the_tables_do(history):
    result = run("resend", "--day", "2026-06-29", "--all", "--dry-run")
    assert result.output == "Would send again:\n  2026-06-29 me: email to me@example.org (sent 2026-06-29 12:00Z)\n"


def test_a_moment_is_shown_to_the_minute_in_utc_or_with_its_offset():
    assert moment("2026-12-05T12:18:11+00:00") == "2026-12-05 12:18Z"
    assert moment("2026-12-07T07:00:00-05:00") == "2026-12-07 07:00 -05:00"
    assert moment("2026-06-30") == "2026-06-30"
    assert moment(None) == ""


def test_backup_and_stats_count_in_mib(history, tmp_path):
    result = run("backup", str(tmp_path / "copy.db"))
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(" MiB).") and " MB" not in result.output
    assert "MiB" in run("stats").output


# -- every line within 80 columns -------------------------------------------------------------------------

# Not `config`: its output is a TOML file, whose lines are kept whole for copying.
OUTPUTS = [*READING, ["search", "spiking", "--profile", "me"], ["like", "2606.29847"], ["dislike", "2606.24075"],
           ["digests", "--profile", "me"], ["status", "--check"]]


@pytest.mark.parametrize("args", OUTPUTS, ids=" ".join)
def test_every_line_of_a_command_fits_80_columns(history, args):
    result = run(*args)
    assert result.exit_code in (0, 1, 2), result.output
    for line in result.output.splitlines():
        lone_url = line.strip().startswith(("http://", "https://")) and " " not in line.strip()
        assert len(line) <= 80 or lone_url, f"{len(line)} columns: {line!r}"


# -- configuration mistakes ---------------------------------------------------------------------------------

def test_a_misspelt_table_suggests_the_nearest_one():
    assert error_of('[profile.theory]\ninterests = ["x"]\n' + PROFILES) == (
        "config.toml: profile: unknown key; did you mean `[profiles.theory]`?")
    assert error_of('[emial]\nhost = "x"\n' + PROFILES) == "config.toml: emial: unknown key; did you mean `[email]`?"


def test_a_misspelt_key_suggests_the_nearest_one_in_its_table():
    assert error_of(PROFILES + '[email]\nprot = 25\n') == "config.toml: email.prot: unknown key; did you mean `port`?"
    assert error_of('[llm]\napi_key_evn = "KEY"\n' + PROFILES) == (
        "config.toml: llm.api_key_evn: unknown key; did you mean `api_key_env`?")
    assert error_of('[profiles.me]\ninterest = ["x"]\n') == (
        "config.toml: profiles.me.interest: unknown key; did you mean `interests`?")
    assert error_of(PROFILES + "colour = 1\n") == "config.toml: profiles.vision.colour: unknown key"


def test_a_category_in_the_wrong_case_suggests_arxivs_spelling():
    assert error_of('[arxiv]\ncategories = "cs.AI+cs.lg"\n' + PROFILES) == (
        "config.toml: arxiv.categories: unknown arXiv category 'cs.lg'; did you mean cs.LG?")
    assert error_of('[profiles.me]\ninterests = ["x"]\ncategories = "math.PRR"\n') == (
        "config.toml: profiles.me.categories: unknown arXiv category 'math.PRR'; did you mean math.PR?")
    assert error_of('[arxiv]\ncategories = "cs.XY"\n' + PROFILES).endswith("'cs.XY'")  # as near cs.SY as cs.CY


def test_errors_name_the_file_by_the_path_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mine.toml").write_text('[email]\nport = "x"\n' + PROFILES)
    with pytest.raises(ConfigError, match=r'^conf/mine\.toml: email\.port: expected an integer, got "x"$'):
        load_settings("conf/mine.toml")
    monkeypatch.setenv("DIGEST_CONFIG", "conf/mine.toml")
    assert run("status").output == 'Error: conf/mine.toml: email.port: expected an integer, got "x"\n'


# -- make test-fast -------------------------------------------------------------------------------------------

def test_make_test_fast_runs_everything_not_marked_slow():
    if not shutil.which("make"):
        pytest.skip("no make here")
    dry = subprocess.run(["make", "-n", "test-fast", "STAMP=", "BIN=bin"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert 'bin/python -m pytest -q -n 2 -m "not slow"' in dry.stdout.splitlines()


# -- digest check, and a run on a machine that cannot resolve arXiv -------------------------------------------

def _served_arxiv_and_llm(http_server, llm, key: str = "sk-check") -> str:
    http_server.routes["/atom/"] = lambda request: Reply(200, "<feed/>")
    http_server.routes["/api/query"] = lambda request: Reply(200, "<feed/>")
    return (f'[arxiv]\nfeed_url = "{http_server.url}/atom/"\napi_url = "{http_server.url}/api/query"\n'
            f'min_interval = 0\n[llm]\nbase_url = "{llm.url}"\nmodel = "gpt-check"\napi_key = "{key}"\n'
            '[files]\ndir = "FILES"\n' + PROFILES)


def test_check_tries_arxiv_and_the_llm_with_its_key_and_model_each_on_a_line(http_server, write_config, tmp_path):
    from llm_server import LLMServer, error

    with LLMServer() as llm:
        config = write_config(_served_arxiv_and_llm(http_server, llm).replace("FILES", str(tmp_path)))
        result = run("--config", str(config), "check")
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert [line.split(":")[0] for line in lines if not line.startswith(" ")] == [
            "ok    arxiv feed", "ok    arxiv api", "ok    llm", "ok    files"]
        assert lines[0].startswith("ok    arxiv feed: 127.0.0.1 answered HTTP 200 in ")
        assert lines[2].startswith("ok    llm: gpt-check at 127.0.0.1 answered in ")
        asked = llm.requests[-1]
        assert (asked.body["model"], asked.headers["authorization"]) == ("gpt-check", "Bearer sk-check")

        llm.script(error(401))
        refused = run("--config", str(config), "check")
        assert refused.exit_code == 1
        assert "FAIL  llm: gpt-check at 127.0.0.1: the key was refused (HTTP 401)" in refused.output.splitlines()
        assert "sk-check" not in refused.output


UNRESOLVABLE = ('[arxiv]\nfeed_url = "http://nonexistent.invalid/atom/"\napi_url = "http://nonexistent.invalid/api"\n'
                + PROFILES)


def test_a_run_that_cannot_resolve_arxiv_says_so_at_once_in_one_line(write_config):
    """The .invalid domain never resolves (RFC 2606): the machine's resolver says so without the network."""
    from world import digest_process

    config = write_config(UNRESOLVABLE)
    started = time.monotonic()
    process = digest_process(["--config", str(config), "run"], timeout=60)
    # readiness.RESOLVE_SECONDS (5 s) bounds the look-up; the rest is one cold start on 2 shared cores.
    assert time.monotonic() - started < 15
    assert process.returncode == 1
    assert process.stderr.startswith("Error: cannot resolve nonexistent.invalid (")
    assert process.stderr.endswith("): is this machine offline? Nothing was fetched; `digest check` tries "
                                   "everything a run needs\n")
    assert len(process.stderr.splitlines()) == 1
    checked = digest_process(["--config", str(config), "check"], timeout=60)
    assert checked.returncode == 1
    assert checked.stdout.splitlines()[0].startswith("FAIL  arxiv feed: cannot resolve nonexistent.invalid (")


def test_the_daemons_runs_keep_their_patient_retries(write_config):
    """Only a run from a shell is refused before it starts; the daemon's (--trigger schedule) still try."""
    from world import digest_process

    config = write_config(UNRESOLVABLE.replace("[arxiv]\n", "[arxiv]\nretries = 1\nmin_interval = 0.1\n"))
    process = digest_process(["--config", str(config), "run", "--trigger", "schedule"], timeout=60)
    assert process.returncode == 1
    assert "retrying in" in process.stderr and "is this machine offline?" in process.stderr


# -- the reading commands' view of a configuration validated before --------------------------------------------

EVERYTHING = '''
[arxiv]
categories = "cs.CL+cs.LG-cs.CY"
holidays = [2027-01-18, "2027-02-15"]
not_holidays = ["2026-12-24"]
[storage]
path = "~/somewhere/digest.db"
[embedding]
precision = "int8"
[llm]
model = "gpt-test"
api_key_env = "DIGEST_TEST_KEY"
summarize = "all"
[email]
host = "smtp.example.org"
user = "me"
password = "inline-pass-1234"
from = "digest@example.org"
[chat.lab]
url = "json://chat.example.org/hook/token-5678"
attach = false
[files]
always = true
[digest]
top = 7
[schedule]
time = "06:30"
timezone = "Europe/Berlin"
[feedback]
listen = "127.0.0.1:8425"
public_url = "https://digest.example.org"
[feedback.imap]
host = "imap.example.org"
[profiles.me]
interests = ["spiking networks", {text = "speech", weight = 2.0}]
categories = "cs.NE"
top = 3
email_to = ["me@example.org"]
chat = ["lab"]
[profiles.other]
keywords = ["graphs"]
'''


def _rules(settings) -> dict:
    """Everything the rules answer, and every value, as a reading command can ask."""
    profiles = settings.profiles.values()
    return {
        "database": settings.database_path(), "files": settings.files_dir(), "feed": settings.feed_categories(),
        "expressions": [str(settings.expression_for(p)) for p in profiles],
        "tops": [settings.top_for(p) for p in profiles], "channels": [settings.channels_for(p) for p in profiles],
        "names": [p.name for p in profiles], "interests": [[(i.text, i.weight) for i in p.interests] for p in profiles],
        "tz": settings.schedule.tz, "at": settings.schedule.time_of_day, "llm": settings.llm.enabled,
        "email": settings.email.enabled, "imap": settings.feedback.imap.enabled, "links": settings.feedback.links,
        "vectors": settings.embedding.vectors_key, "arxiv": str(settings.arxiv.expression),
        "holidays": (settings.arxiv.holidays, settings.arxiv.not_holidays), "from": settings.email.from_,
        "secrets": settings.secrets(), "source": settings.source, "summarize": settings.llm.summarize,
        "attach": settings.chat["lab"].attach, "key": settings.llm.api_key.reveal(),
    }


def test_a_reading_command_sees_the_settings_a_validation_noted_and_no_secret_is_noted(write_config, monkeypatch):
    from digest.config_rules import cache_dir, validated_view

    monkeypatch.setenv("DIGEST_TEST_KEY", "env-key-9012")
    config = write_config(EVERYTHING)
    text = config.read_text()
    assert validated_view(text, str(config), "config.toml") is None  # never validated: no view
    full = load_settings(str(config), resolve=False, note=True)
    view = validated_view(text, str(config), "config.toml")
    assert view is not None and _rules(view) == _rules(full)
    note = next((cache_dir() / "validated").iterdir()).read_text()
    assert not any(secret in note for secret in ("inline-pass-1234", "token-5678", "env-key-9012"))
    assert validated_view(text + "\n# edited\n", str(config), "config.toml") is None


def test_a_reading_command_validates_a_file_edited_since_its_note(history):
    assert run("config").exit_code == 0  # leaves the note
    assert run("digests").exit_code == 0
    history.write_text(history.read_text() + "[emial]\n")
    assert run("digests").output == f"Error: {history}: emial: unknown key; did you mean `[email]`?\n"


def test_show_fetches_a_paper_not_stored_through_the_view_as_through_the_model(history, http_server, write_config,
                                                                               monkeypatch):
    from conftest import DATA

    import digest.config

    recorded = DATA / "api" / "id_astro-ph_0601001_s0_m100_3150dca9dc76.xml"
    http_server.routes["/api/query"] = lambda request: Reply.file(recorded)
    body = history.read_text() + f'[arxiv]\napi_url = "{http_server.url}/api/query"\nmin_interval = 0\n'
    write_config(body, history)
    assert run("config").exit_code == 0  # the note: `show` reads it, not the model
    monkeypatch.setattr(digest.config, "load_settings", lambda *args, **kwargs: pytest.fail("validated again"))
    result = run("show", "astro-ph/0601001", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored"] is False and len(http_server.requests) == 1


def test_a_note_that_is_not_whole_is_validated_again(history):
    from digest.config_rules import cache_dir

    assert run("config").exit_code == 0
    (note,) = (cache_dir() / "validated").iterdir()
    note.write_text('{"settings": {}}')
    assert run("digests").exit_code == 0
    assert note.read_text() == '{"settings": {}}'  # a reading command leaves nothing, not even a better note
