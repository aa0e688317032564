"""The shipped systemd units: systemd's own tools judge them (verify, security), where they exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

UNITS = ROOT / "systemd"
INSTALLED_DIGEST = "/opt/digest/.venv/bin/digest"  # where the README installs it
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
@pytest.mark.parametrize("unit", ["digest.service", "digest-run.service"])
def test_security_exposure_is_at_most_2(unit):
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNITS / unit)],
                            capture_output=True, text=True)
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d)", result.stdout)
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
    assert unit["WatchdogSec"] and unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
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
                              "WatchdogSec", "Description", "WantedBy")}
    assert {k: service.get(k) for k in hardening} == hardening
