import json
import subprocess
import sys

from click.testing import CliRunner
from conftest import ROOT

from digest.cli import cli


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_help_lists_every_command_with_one_line():
    result = run("--help")
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1].strip().splitlines()
    assert all(len(line.split(None, 1)) == 2 for line in commands), commands
    for name in cli.commands:
        assert run(name, "--help").exit_code == 0, name


def test_init_writes_a_valid_config_and_refuses_to_overwrite(isolated_home):
    result = run("init")
    path = isolated_home / ".config" / "digest" / "config.toml"
    assert result.exit_code == 0
    assert result.output == f"Wrote {path}. Edit [profiles.me] and [arxiv] categories, then run `digest run`.\n"
    assert path.read_text() == (ROOT / "config.example.toml").read_text()
    again = run("init")
    assert again.exit_code == 2
    assert again.output == f"Error: {path}: already exists; edit it, or remove it first\n"


def test_missing_config_is_one_line_and_exit_2(isolated_home):
    result = run("config")
    path = isolated_home / ".config" / "digest" / "config.toml"
    assert result.exit_code == 2
    assert result.output == f"Error: {path}: no configuration file here; create one with `digest init`\n"


def test_bad_config_is_one_line_and_exit_2(write_config):
    write_config('[profiles.me]\ninterests = ["x"]\n[email]\nport = "abc"\n')
    result = run("config")
    assert result.exit_code == 2
    assert result.output == 'Error: config.toml: email.port: expected an integer, got "abc"\n'


def test_config_shows_redacted_json(write_config, monkeypatch):
    monkeypatch.setenv("SMTP_PW", "pa55word-very-secret")
    write_config('[profiles.me]\ninterests = ["x"]\n[email]\nhost = "localhost"\npassword_env = "SMTP_PW"\n')
    result = run("config", "--json")
    data = json.loads(result.output)
    assert data["email"]["password"] == "********"
    assert "pa55word" not in run("config").output


def test_python_dash_m_works(isolated_home):
    result = subprocess.run([sys.executable, "-m", "digest", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Commands:" in result.stdout
