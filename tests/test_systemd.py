"""The shipped systemd units: systemd's own tools judge them (verify, security), where they exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT

import digest.service
from digest.cli import cli
from digest.service import service_problems

UNITS = ROOT / "systemd"
INSTALLED_DIGEST = "/opt/digest/.venv/bin/digest"  # where docs/operations.md installs it
analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                             reason="systemd-analyze is not installed (apt-get install systemd)")


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def units_pointing_at_this_checkout(tmp_path: Path) -> Path:
    """verify insists that ExecStart's binary exists: point it at this checkout's digest."""
    here = Path(sys.executable).parent / "digest"
    folder = tmp_path / "units"
    folder.mkdir()
    for unit in UNITS.iterdir():
        (folder / unit.name).write_text(unit.read_text().replace(INSTALLED_DIGEST, str(here)))
    return folder


@analyze
@pytest.mark.parametrize("unit", ["digest.service", "digest-run.service", "digest-notify-failure@.service"])
def test_security_exposure_is_at_most_2(unit):
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNITS / unit)],
                            capture_output=True, text=True)
    shown = unit.replace("@.", "@i.")  # a template is judged as an instance
    found = re.search(rf"Overall exposure level for {re.escape(shown)}: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout


@analyze
def test_systemd_analyze_verify_passes(tmp_path):
    folder = units_pointing_at_this_checkout(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", *(str(p) for p in sorted(folder.iterdir()))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_the_service_is_a_notify_daemon_with_state_config_and_credentials():
    unit = directives("digest.service")
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == [f"{INSTALLED_DIGEST} daemon"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["DynamicUser"] == ["yes"]
    assert unit["StateDirectory"] == ["digest"] and unit["ConfigurationDirectory"] == ["digest"]
    assert [c.split(":")[0] for c in unit["LoadCredential"]] == ["smtp-password", "openai-key"]
    assert unit["WatchdogSec"]
    # `systemctl reload` fails on a bad file: it is checked before the daemon is sent SIGHUP.
    # ... with the credentials the daemon holds (%d, in its mount namespace), as root: systemd#35227 hides
    # them from the service's user.
    assert unit["ExecReload"] == [f"+/usr/bin/nsenter --target $MAINPID --mount -- /usr/bin/env "
                                  f"CREDENTIALS_DIRECTORY=%d {INSTALLED_DIGEST} config --check",
                                  "/bin/kill -HUP $MAINPID"]
    # SIGTERM reaches the daemon alone, which asks its running digest to checkpoint.
    assert unit["KillMode"] == ["mixed"]
    # The daemon exits within 10 s of SIGTERM; systemd must not SIGKILL it before that.
    assert int(unit["TimeoutStopSec"][0].rstrip("s")) > 10
    # torch's oneDNN JIT needs writable+executable memory: see the comment in the unit.
    assert unit["MemoryDenyWriteExecute"] == ["no"]


def test_the_timer_runs_the_once_mode_every_day():
    service, timer = directives("digest-run.service"), directives("digest-run.timer")
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == [f"{INSTALLED_DIGEST} daemon --once"]
    assert timer["OnCalendar"] == ["*-*-* 07:00:00 America/New_York"] and timer["Persistent"] == ["yes"]
    # The same sandbox as the long-running service.
    hardening = {k: v for k, v in directives("digest.service").items()
                 if k not in ("Type", "ExecStart", "ExecReload", "Restart", "RestartSec", "TimeoutStopSec",
                              "WatchdogSec", "Description", "WantedBy", "OnFailure", "StartLimitIntervalSec",
                              "StartLimitBurst")}
    assert {k: service.get(k) for k in hardening} == hardening


# -- installing for the service ------------------------------------------------------------------------

def test_make_install_service_refuses_a_python_under_home_in_one_line(tmp_path):
    venv = tmp_path / "venv"
    made = subprocess.run(["make", "--no-print-directory", "install-service", f"VENV={venv}",
                           "SERVICE_PYTHON=/home/ada/.pyenv/shims/python3"], cwd=ROOT, capture_output=True, text=True)
    assert made.returncode != 0
    assert made.stderr.splitlines()[0] == (
        "make install-service: /home/ada/.pyenv/shims/python3 is under /root or /home, where digest.service "
        "(DynamicUser=, ProtectHome=) cannot run it; install the system python (apt-get install python3 "
        "python3-venv) or pass SERVICE_PYTHON=/path/to/python3")
    assert not venv.exists()


def test_check_service_names_an_interpreter_the_dynamic_user_cannot_run(tmp_path, monkeypatch):
    assert service_problems({"the interpreter": Path("/root/.pyenv/versions/3.11.7/bin/python3.11")}) == [
        "the interpreter (/root/.pyenv/versions/3.11.7/bin/python3.11) is under /root, which ProtectHome= hides "
        "from digest.service (status=203/EXEC); build the venv from the system python: make install-service"]
    closed = tmp_path / "closed"
    (closed / "venv").mkdir(parents=True)
    closed.chmod(0o700)
    (problem,) = service_problems({"the venv": closed / "venv"})
    # The first closed directory on the way is named (pytest's own base is 0700 too).
    assert re.fullmatch(rf"the venv \({closed / 'venv'}\) cannot be reached by digest.service's dynamic user: "
                        rf"/\S+ is mode 0700; make it readable by others \(umask 022 when installing\)", problem)
    assert service_problems({"the system python": Path("/usr/bin")}) == []

    # What the command says, whatever interpreter runs this test (pyenv here, the system's in CI).
    monkeypatch.setattr(digest.service, "installation_paths", lambda: {"the venv": Path("/home/ada/digest/.venv")})
    result = CliRunner().invoke(cli, ["check", "--service"])
    assert result.exit_code == 1
    assert " ".join(result.output.split()) == (  # wrapped to the output's width
        "FAIL service: the venv (/home/ada/digest/.venv) is under /home, which ProtectHome= "
        "hides from digest.service (status=203/EXEC); build the venv from the system python: make install-service")


def test_config_check_is_what_execreload_runs(tmp_path, monkeypatch):
    """Valid: one line, exit 0; invalid: the one-line error, exit 2. ExecReload= cannot see the credentials."""
    config = tmp_path / "config.toml"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config.write_text('[llm]\napi_key_file = "openai-key"\n[profiles.me]\ninterests = ["x"]\n')
    check = ["--config", str(config), "config", "--check"]
    missing = CliRunner().invoke(cli, check)
    assert (missing.exit_code, missing.output) == (
        2, f"Error: {config}: llm.api_key_file: cannot read {credentials / 'openai-key'}: No such file or directory\n")
    valid = CliRunner().invoke(cli, [*check, "--no-credentials"])
    assert (valid.exit_code, valid.output) == (0, f"{config}: valid\n")
    config.write_text('[schedule]\ntime = "25:00"\n[profiles.me]\ninterests = ["x"]\n')
    broken = CliRunner().invoke(cli, [*check, "--no-credentials"])
    assert (broken.exit_code, broken.output) == (
        2, f'Error: {config}: schedule.time: expected a time of day as HH:MM, got "25:00"\n')


def test_a_failing_daemon_unit_sends_a_notice_through_digest_itself():
    assert directives("digest.service")["OnFailure"] == ["digest-notify-failure@%n.service"]
    notify = directives("digest-notify-failure@.service")
    assert notify["ExecStart"] == [f"{INSTALLED_DIGEST} notify-failure %i"]
    assert notify["Type"] == ["oneshot"]
    run = directives("digest-run.service")
    for key in ("DynamicUser", "User", "StateDirectory", "ConfigurationDirectory", "LoadCredential"):
        assert notify[key] == run[key], key  # it reads the same database and secrets as the daemon


# -- issue 24 ------------------------------------------------------------------------------------------

def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value).groups()
    return float(number) * units[unit or "s"]


SERVICES = ["digest.service", "digest-run.service", "digest-notify-failure@.service"]


def test_every_unit_sharing_the_state_directory_runs_as_one_user():
    """Each its own dynamic user and one StateDirectory=: starting a second unit re-owned the directory."""
    for unit in SERVICES:
        found = directives(unit)
        assert (found["DynamicUser"], found["User"], found["StateDirectory"]) == (["yes"], ["digest"], ["digest"]), unit
    from digest.service import SERVICE_PROPERTIES  # `digest status --service` runs as the units do
    assert {"User=digest", "DynamicUser=yes", "StateDirectory=digest"} <= set(SERVICE_PROPERTIES)


def test_a_30_s_restart_loop_reaches_the_start_limit_so_on_failure_fires():
    unit = directives("digest.service")
    restart = seconds(unit["RestartSec"][0])
    burst, interval = int(unit["StartLimitBurst"][0]), seconds(unit["StartLimitIntervalSec"][0])
    assert restart == 30
    # `burst` starts of a unit that fails at once are (burst - 1) * RestartSec apart in all, well inside the interval.
    assert (burst - 1) * restart < interval / 2
    unit_text = (UNITS / "digest.service").read_text()
    assert unit_text.index("StartLimitBurst=") < unit_text.index("[Service]")  # systemd reads them in [Unit]


def test_a_failing_timer_run_sends_a_notice_too():
    assert directives("digest-run.service")["OnFailure"] == ["digest-notify-failure@%n.service"]
    assert "OnFailure" not in directives("digest-notify-failure@.service")  # a notice failing tells nobody in a loop


def test_the_manual_has_a_credential_drop_in_for_every_unit_that_loads_credentials():
    manual = (ROOT / "docs" / "operations.md").read_text()
    loop = re.search(r"for unit in ([^;]+); do\n(.*?)\ndone", manual, re.S)
    assert loop, "docs/operations.md lost the credential drop-in loop"
    named = {f"{name}.service" for name in loop[1].split()}
    assert named == {u for u in SERVICES if "LoadCredential" in directives(u)}
    assert "LoadCredential=\\nLoadCredential=smtp-password:" in loop[2]


def test_the_manual_writes_a_secret_that_sudo_would_otherwise_drop(tmp_path):
    """sudo resets the environment: `sudo sh -c '... "$SMTP_PASSWORD" ...'` wrote an empty file."""
    manual = (ROOT / "docs" / "operations.md").read_text()
    lines = [line for line in manual.splitlines() if "/etc/digest/credentials/smtp-password'" in line]
    assert len(lines) == 1, lines
    # The line as a user runs it, with sudo's reset environment (env -i) and the file under tmp.
    target = tmp_path / "smtp-password"
    line = lines[0].replace("sudo ", "env -i ").replace("/etc/digest/credentials/smtp-password", str(target))
    subprocess.run(["bash", "-c", line], env={"SMTP_PASSWORD": "s3cret word", "PATH": "/usr/bin:/bin"}, check=True)
    assert target.read_text() == "s3cret word"
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_the_units_memory_figures_are_the_measured_ones():
    measured = (ROOT / "docs" / "benchmarks.md").read_text()
    for unit in ("digest.service", "digest-run.service"):
        comment = (UNITS / unit).read_text()
        assert "1.07 GiB" not in comment
        for figure in re.findall(r"\d[\d.]* (?:MB|GB|GiB)", comment.split("MemoryMax=")[0].split("MemoryDenyWriteExecute")[1]):
            assert figure in measured, (unit, figure)
