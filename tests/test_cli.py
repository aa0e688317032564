import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert result.output.splitlines()[0] == f"Wrote {path}. Edit it before the first run:"
    assert "[arxiv] contact" in result.output and result.output.endswith("Then: digest run\n")
    assert path.read_text() == (ROOT / "config.example.toml").read_text()
    again = run("init")
    assert again.exit_code == 2
    assert again.output == f"Error: {path}: already exists; edit it, or remove it first\n"


def test_init_says_the_exact_command_to_run_next(isolated_home, tmp_path):
    # `make run` installs digest into .venv/bin, which is not on PATH: the next command must be one that works,
    # and name the configuration file when it is not the default one.
    script = Path(sys.executable).parent / "digest"
    config = tmp_path / "my config.toml"
    made = subprocess.run([str(script), "--config", str(config), "init"], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[-1] == f"Then: {script} --config '{config}' run"
    ran = subprocess.run(made.stdout.splitlines()[-1].removeprefix("Then: ").removesuffix(" run") + " config --check",
                         shell=True, capture_output=True, text=True, cwd=tmp_path)
    assert ran.stdout == f"{config}: valid\n", ran.stderr


def test_missing_config_is_one_line_and_exit_2(isolated_home):
    result = run("config")
    path = isolated_home / ".config" / "digest" / "config.toml"
    assert result.exit_code == 2
    assert result.output == f"Error: {path}: no configuration file here; create one with `digest init`\n"


def test_bad_config_is_one_line_and_exit_2(write_config):
    path = write_config('[profiles.me]\ninterests = ["x"]\n[email]\nport = "abc"\n')
    result = run("config")
    assert result.exit_code == 2
    assert result.output == f'Error: {path}: email.port: expected an integer, got "abc"\n'


def test_config_shows_redacted_json(write_config, monkeypatch):
    monkeypatch.setenv("SMTP_PW", "pa55word-very-secret")
    write_config('[profiles.me]\ninterests = ["x"]\n[email]\nhost = "localhost"\npassword_env = "SMTP_PW"\n')
    result = run("config", "--json")
    data = json.loads(result.output)
    assert data["email"]["password_env"] == "SMTP_PW"  # where it comes from, never its value
    assert "pa55word" not in result.output + run("config").output


def test_python_dash_m_works(isolated_home):
    result = subprocess.run([sys.executable, "-m", "digest", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Commands:" in result.stdout
