"""digest.service under a real systemd as PID 1, installed as docs/operations.md's "Installing the service" says.

The systemd runs in the throw-away root of ../shared/tools/systemd-sandbox (an overlay of / on a tmpfs,
its own mount, pid and cgroup namespaces; never the real root: its boot would empty /tmp and start every
service). Its network namespace is the host's, so the loopback arXiv, LLM and SMTP servers this test
starts are the ones the service reaches. What the test installs inside (units, /etc/digest, /opt/digest)
lives in the overlay and vanishes at teardown; files it prepares beforehand under build/systemd-live are
read through the overlay's lower layer.

The service's venv is the one `make install-service` builds from /usr/bin/python3: the venv running this
test when the service can run it (CI builds its venv from the system python), otherwise
build/service-venv (a second torch install the first time: 1 min 43 s on the 2-core machine).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from feeds import arxiv_section, feed_xml, serve_feeds
from llm_server import LLMServer
from loopback import LoopbackServer
from smtp_server import SMTPServer

SANDBOX = ROOT.parent / "shared" / "tools" / "systemd-sandbox"
SYSTEMD = Path("/lib/systemd/systemd")
SYSTEM_PYTHON = Path("/usr/bin/python3")
HOST_CGROUP = Path("/sys/fs/cgroup/unified")  # where isolate-boot.sh makes its sub-cgroup
WORK = ROOT / "build" / "systemd-live"  # git-ignored; on the root file system, so visible inside
LOCK = Path("/run/lock/digest-systemd-live.lock")  # one sandbox per machine: they share that cgroup

CATEGORIES = "cs.IR+cs.MA+cs.RO"  # 23 real papers on 2026-06-23, 13 on 2026-06-24: a quick embed
TUESDAY, WEDNESDAY = dt.date(2026, 6, 23), dt.date(2026, 6, 24)
READER = "reader@example.org"
SMTP_USER, SMTP_PASSWORD = "digest", "smtp-pass-live-4711"
OPENAI_KEY = "sk-live-test-0123456789"
DB = "/var/lib/digest/digest.db"  # StateDirectory= of a DynamicUser= unit: /var/lib/private/digest
TIMEOUT_STOP = 15  # TimeoutStopSec= in systemd/digest.service


def why_not_here() -> str | None:
    """The reason this machine cannot boot the sandbox, or None."""
    if os.geteuid() != 0:
        return "needs root: the sandbox mounts an overlay, unshares namespaces and boots systemd"
    if not SANDBOX.is_dir():
        return f"the systemd sandbox tool is not at {SANDBOX}"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel offers no overlayfs"
    if not SYSTEMD.exists():
        return f"no {SYSTEMD} (apt-get install systemd)"
    if not (HOST_CGROUP / "cgroup.procs").exists():
        return f"no cgroup2 hierarchy at {HOST_CGROUP}, where the sandbox tool makes its cgroup"
    if not SYSTEM_PYTHON.exists():
        return f"no {SYSTEM_PYTHON} to build the service's venv from (see `make install-service`)"
    from digest.service import service_problems

    problems = service_problems({"this checkout": ROOT})
    if problems:  # the venv is an editable install: the service imports digest from here
        return problems[0]
    return None


pytestmark = [pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.skipif(why_not_here() is not None, reason=str(why_not_here()))]


# -- the sandbox --------------------------------------------------------------------------------------

class Sandbox:
    """A systemd booted by the sandbox tool in ``folder`` (its SDLIVE), and commands run inside it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {**os.environ, "SDLIVE": str(folder)}

    def boot(self) -> None:
        (self.folder / "mnt").mkdir(parents=True)
        for script in ("inner.sh", "in.sh", "teardown.sh", "isolate-boot.sh"):
            shutil.copy2(SANDBOX / script, self.folder / script)  # isolate-boot.sh runs $SDLIVE/inner.sh
        booted = subprocess.run(["bash", str(self.folder / "isolate-boot.sh")], env=self.env, capture_output=True,
                                text=True, timeout=120)
        assert booted.returncode == 0 and "ISOLATION PROVEN" in booted.stdout, booted.stdout + booted.stderr
        state = self.run("systemctl", "is-system-running", "--wait", check=False).stdout.strip()
        assert state in ("running", "degraded"), state + self.run("systemctl", "--failed", check=False).stdout

    def teardown(self) -> str:
        done = subprocess.run(["bash", str(self.folder / "teardown.sh")], env=self.env, capture_output=True,
                              text=True, timeout=60)
        return done.stdout + done.stderr

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """COMMAND inside (in.sh: at most 30 s, stdin closed)."""
        done = subprocess.run(["bash", str(self.folder / "in.sh"), *command], env=self.env, capture_output=True,
                              text=True, timeout=60)
        if check:
            assert done.returncode == 0, f"{' '.join(command)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        return done

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("sh", "-ec", script, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat").stdout

    def wait_for(self, what: str, check, timeout: float) -> object:
        """Poll ``check()`` until it returns something true; fail with ``what`` and the journal if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.5)
        pytest.fail(f"{what} did not happen in {timeout:.0f} s; journal:\n{self.journal('digest')}")

    def query(self, sql: str) -> list:
        """Rows from the service's database, read as root inside."""
        code = f"import json, sqlite3; print(json.dumps(sqlite3.connect({DB!r}).execute({sql!r}).fetchall()))"
        return json.loads(self.run(str(SYSTEM_PYTHON), "-c", code).stdout)


@pytest.fixture
def sandbox_lock():
    """One live test per machine: two namespaced systemds would share isolate-boot.sh's cgroup."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.skip(f"another live systemd test holds {LOCK}")
        if (HOST_CGROUP / "sdlive").exists():
            pytest.skip(f"another systemd sandbox is running ({HOST_CGROUP / 'sdlive'} exists)")
        yield


@pytest.fixture
def service_venv() -> Path:
    """A venv `make install-service` accepts: this test's own when the service can run it, else one built
    from /usr/bin/python3 under build/ (kept: the stamp makes the next run a no-op)."""
    from digest.service import service_problems

    venv = Path(sys.prefix) if not service_problems() else ROOT / "build" / "service-venv"
    made = subprocess.run(["make", "install-service", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    return venv


# -- what the service is given ------------------------------------------------------------------------

def config_toml(arxiv_url: str, smtp: SMTPServer, llm: LLMServer, time_of_day: str = "00:00") -> str:
    """The configuration docs/operations.md's install writes: secrets by credential name, storage left to systemd."""
    return (arxiv_section(arxiv_url, categories=CATEGORIES)
            + f'\n[email]\nhost = "{smtp.host}"\nport = {smtp.port}\nsecurity = "starttls"\n'
            + f'ca_file = "/etc/digest/ca.pem"\nfrom = "digest@example.org"\nuser = "{SMTP_USER}"\n'
            + 'password_file = "smtp-password"\ntimeout = 10\n'
            + f'\n[llm]\nbase_url = "{llm.url}"\nmodel = "test-model"\napi_key_file = "openai-key"\nsummarize = 3\n'
            + f'\n[schedule]\ntime = "{time_of_day}"\ntimezone = "UTC"\n'
            + '\n[profiles.me]\ninterests = ["robot learning and manipulation", "recommender systems"]\n'
            + f'email_to = ["{READER}"]\n')


def stage_files(folder: Path, arxiv_url: str, smtp: SMTPServer, llm: LLMServer) -> Path:
    """Everything to install, written before the boot so that the overlay sees it."""
    stage = folder / "stage"
    stage.mkdir(parents=True)
    (stage / "config.toml").write_text(config_toml(arxiv_url, smtp, llm))
    (stage / "broken.toml").write_text(config_toml(arxiv_url, smtp, llm, time_of_day="25:00"))
    (stage / "smtp-password").write_text(SMTP_PASSWORD)
    (stage / "openai-key").write_text(OPENAI_KEY)
    shutil.copy(smtp.ca_file, stage / "ca.pem")
    return stage


UNITS = ("digest.service", "digest-run.service")
CREDENTIALS = ("smtp-password", "openai-key")


def install(box: Sandbox, stage: Path, venv: Path, units: tuple[str, ...] = UNITS) -> None:
    """docs/operations.md's steps, inside: the clone's venv at /opt/digest/.venv, units, config, and the
    credentials the stage holds (a stage may leave one out)."""
    unit_files = " ".join(f"'{ROOT}/systemd/{unit}'" for unit in units)
    credentials = " ".join(f"{stage}/{name}" for name in CREDENTIALS if (stage / name).exists())
    box.sh(f"mkdir -p /opt/digest && ln -s {venv} /opt/digest/.venv\n"
           f"cp {unit_files} /etc/systemd/system/\n"
           f"install -d -m 0755 /etc/digest && install -d -m 0700 /etc/digest/credentials\n"
           f"install -m 0644 {stage}/config.toml {stage}/ca.pem /etc/digest/\n"
           f"install -m 0600 {credentials} /etc/digest/credentials/\n"
           f"systemctl daemon-reload")


def announced_ids(day: dt.date) -> list[str]:
    from digest.arxiv.feed import parse_feed

    return [a.paper.id for a in parse_feed(feed_xml(day, CATEGORIES.split("+"))).announcements]


# -- the test -----------------------------------------------------------------------------------------

def test_the_installed_service_sends_the_day_reloads_only_a_valid_file_and_stops_with_a_checkpoint(
        sandbox_lock, service_venv):
    if WORK.exists():
        shutil.rmtree(WORK)
    with LoopbackServer() as arxiv, SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as smtp, LLMServer() as llm:
        feeds = serve_feeds(arxiv, {d: feed_xml(d, CATEGORIES.split("+")) for d in (TUESDAY, WEDNESDAY)},
                            day=TUESDAY)
        stage = stage_files(WORK, arxiv.url, smtp, llm)
        box = Sandbox(WORK / "sdlive")
        try:
            box.boot()
            install(box, stage, service_venv)
            box.run("systemctl", "set-environment", f"DIGEST_PRETEND_TODAY={TUESDAY}")  # tests only
            check_start_and_the_days_email(box, smtp, llm)
            check_reload(box, stage)
            check_the_timer_service_sends_nothing_new(box, smtp)
            feeds.day = WEDNESDAY
            # The LLM answers slowly, so the run is still going when the stop comes: with onnxruntime the
            # embed stage of a small day can end within the half second between two looks at the journal.
            llm.latency = 4.0
            check_stop_during_a_run(box, smtp)
        finally:
            print(box.teardown())


def check_start_and_the_days_email(box: Sandbox, smtp: SMTPServer, llm: LLMServer) -> None:
    box.run("systemctl", "start", "digest")  # Type=notify: returns at READY=1
    box.wait_for("the email", lambda: smtp.messages, timeout=240)
    (message,) = smtp.messages
    assert message.rcpt_tos == [READER] and message.authenticated_as == SMTP_USER  # LoadCredential= worked
    text = message.part("plain")
    missing = [i for i in announced_ids(TUESDAY) if i not in text]
    assert not missing and len(announced_ids(TUESDAY)) == 23, f"the email lacks {missing}"
    assert llm.requests and {r.headers["authorization"] for r in llm.requests} == {f"Bearer {OPENAI_KEY}"}
    assert "TL;DR of" in text  # the LLM's summaries made it into the email

    def waiting():
        status = box.show("digest", "ActiveState", "SubState", "StatusText", "MainPID")
        return status if status["StatusText"].startswith("waiting for ") else None

    status = box.wait_for("STATUS=waiting for ... once the run is over", waiting, timeout=30)
    assert (status["ActiveState"], status["SubState"]) == ("active", "running")
    assert re.fullmatch(r"waiting for 2026-06-24T00:00\+00:00", status["StatusText"]), status

    # The database belongs to the dynamic user the daemon runs as, in /var/lib/private, readable by it alone.
    uid = int(re.search(r"^Uid:\s+(\d+)", box.run("cat", f"/proc/{status['MainPID']}/status").stdout, re.M)[1])
    owner, mode, path = box.run("stat", "-L", "-c", "%u %a %n", DB).stdout.split()
    assert uid != 0 and (int(owner), mode) == (uid, "600")
    assert box.run("readlink", "-f", DB).stdout.strip() == "/var/lib/private/digest/digest.db"


def check_reload(box: Sandbox, stage: Path) -> None:
    box.run("install", "-m", "0644", f"{stage}/broken.toml", "/etc/digest/config.toml")
    refused = box.run("systemctl", "reload", "digest", check=False)
    assert refused.returncode != 0, "systemctl reload accepted a broken file"
    error = 'config.toml: schedule.time: expected a time of day as HH:MM, got "25:00"'
    box.wait_for("the reload's one-line error in the journal", lambda: error in box.journal("digest"), timeout=10)
    assert "configuration not reloaded" not in box.journal("digest")  # the daemon was never sent SIGHUP
    status = box.show("digest", "ActiveState", "SubState", "StatusText")
    assert (status["ActiveState"], status["SubState"]) == ("active", "running"), status

    box.run("install", "-m", "0644", f"{stage}/config.toml", "/etc/digest/config.toml")
    box.run("systemctl", "reload", "digest")
    box.wait_for("the reload", lambda: "configuration reloaded from /etc/digest/config.toml" in box.journal("digest"),
                 timeout=20)
    assert box.show("digest", "StatusText")["StatusText"].startswith("waiting for ")


def check_the_timer_service_sends_nothing_new(box: Sandbox, smtp: SMTPServer) -> None:
    started = time.monotonic()
    box.run("systemctl", "stop", "digest")  # the two units share the daemon's lock
    assert time.monotonic() - started < TIMEOUT_STOP
    box.run("systemctl", "start", "digest-run.service")  # Type=oneshot: returns when it has exited
    result = box.show("digest-run.service", "Result", "ExecMainStatus")
    assert result == {"Result": "success", "ExecMainStatus": "0"}, box.journal("digest-run")
    assert "nothing owed: 2026-06-23 is settled" in box.journal("digest-run")
    assert len(smtp.messages) == 1


def check_stop_during_a_run(box: Sandbox, smtp: SMTPServer) -> None:
    box.run("systemctl", "set-environment", f"DIGEST_PRETEND_TODAY={WEDNESDAY}")
    before = box.journal("digest").count("stage embed: started")
    box.run("systemctl", "start", "digest")
    box.wait_for("Wednesday's embed stage", lambda: box.journal("digest").count("stage embed: started") > before,
                 timeout=120)
    started = time.monotonic()
    box.run("systemctl", "stop", "digest")
    took = time.monotonic() - started
    journal = box.journal("digest")
    assert took < TIMEOUT_STOP, f"stop took {took:.1f} s\n{journal}"
    assert box.show("digest", "Result")["Result"] == "success", journal  # no SIGKILL, no timeout
    assert "stopping: asking the running run" in journal
    runs = box.query("SELECT status, announced_on FROM runs ORDER BY id DESC LIMIT 1")
    assert runs == [["interrupted", WEDNESDAY.isoformat()]], journal
    assert len(smtp.messages) == 1


# -- issue 24: one user, a crash loop told, credentials dropped in every unit, the administrator's view ---

NO_LLM_KEY = "openai-key"  # the credential the drop-in leaves out


def readme_drop_in() -> str:
    """The manual's credential drop-in, as an administrator pastes it (root inside: no sudo)."""
    manual = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"```sh\n(for unit in .*?\ndone\n.*?)```", manual, re.S)
    assert block, "docs/operations.md lost its credential drop-in"
    return block[1].replace("sudo ", "")


def stage_without_llm(folder: Path, arxiv_url: str, smtp: SMTPServer, llm: LLMServer) -> Path:
    """A configuration with no LLM, and only the SMTP password: the reader who dropped the LLM key."""
    stage = stage_files(folder, arxiv_url, smtp, llm)
    llm_section = re.search(r"\n\[llm\]\n.*?\n\n", (stage / "config.toml").read_text(), re.S)[0]
    (stage / "with-llm.toml").write_text((stage / "config.toml").read_text())
    (stage / "config.toml").write_text((stage / "config.toml").read_text().replace(llm_section, "\n\n"))
    (stage / NO_LLM_KEY).unlink()
    return stage


def install_every_unit(box: Sandbox, stage: Path, venv: Path) -> None:
    install(box, stage, venv, units=(*UNITS, "digest-notify-failure@.service"))
    box.sh(readme_drop_in())
    box.run("systemctl", "daemon-reload")


def notices(smtp: SMTPServer) -> list[str]:
    """The subjects of the failure notices received (a digest's own subject starts with "arXiv")."""
    return [m.message["Subject"] for m in smtp.messages if m.message["Subject"].startswith("digest: the systemd unit")]


def test_the_units_share_one_user_tell_every_failure_and_let_an_administrator_ask_the_service(
        sandbox_lock, service_venv):
    work = WORK.with_name("systemd-live-24")
    if work.exists():
        shutil.rmtree(work)
    with LoopbackServer() as arxiv, SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as smtp, LLMServer() as llm:
        serve_feeds(arxiv, {TUESDAY: feed_xml(TUESDAY, CATEGORIES.split("+"))}, day=TUESDAY)
        stage = stage_without_llm(work, arxiv.url, smtp, llm)
        box = Sandbox(work / "sdlive")
        try:
            box.boot()
            install_every_unit(box, stage, service_venv)
            box.run("systemctl", "set-environment", f"DIGEST_PRETEND_TODAY={TUESDAY}")
            check_a_second_unit_keeps_the_daemons_user_and_is_told(box, smtp)
            check_an_administrator_asks_the_service_not_roots_database(box)
            check_reload_refuses_a_credential_the_unit_did_not_load(box, stage)
            check_a_crash_loop_reaches_the_start_limit_and_is_told(box, smtp)
        finally:
            print(box.teardown())


def check_a_second_unit_keeps_the_daemons_user_and_is_told(box: Sandbox, smtp: SMTPServer) -> None:
    """Rows 12-14: `systemctl start digest-run` beside the daemon re-owned /var/lib/digest to a second
    dynamic user; digest-run had no OnFailure=; the notice unit failed 243/CREDENTIALS on the key the
    reader had dropped from digest.service alone."""
    box.run("systemctl", "start", "digest")
    uid = lambda: int(re.search(r"^Uid:\s+(\d+)", box.run(
        "cat", f"/proc/{box.show('digest', 'MainPID')['MainPID']}/status").stdout, re.M)[1])
    daemon = uid()
    started = box.run("systemctl", "start", "digest-run.service", check=False)
    assert started.returncode != 0  # the daemon's lock: "another digest daemon"
    assert "another digest daemon" in box.journal("digest-run")
    owners = box.run("stat", "-c", "%u", "/var/lib/private/digest", DB).stdout.split()
    assert owners == [str(daemon)] * 2 and uid() == daemon
    box.wait_for("the day's digest and the notice that digest-run.service failed",
                 lambda: len(smtp.messages) >= 2 and notices(smtp), timeout=300)
    assert notices(smtp) == ["digest: the systemd unit digest-run.service failed"]
    result = box.show("digest-notify-failure@digest-run.service.service", "Result", "ExecMainStatus")
    assert result == {"Result": "success", "ExecMainStatus": "0"}, box.journal("digest-notify-failure@*")
    assert box.run("stat", "-c", "%u", DB).stdout.split() == [str(daemon)]


def check_an_administrator_asks_the_service_not_roots_database(box: Sandbox) -> None:
    """Row 15: root's `status --check` read an empty database under /root and said ok."""
    digest = "/opt/digest/.venv/bin/digest"
    mine = box.run(digest, "--config", "/etc/digest/config.toml", "status", "--check", check=False)
    assert mine.returncode == 2, mine.stdout + mine.stderr
    assert mine.stdout.startswith("Health:      failing\n             no database at "
                                  "/root/.local/state/digest/digest.db: ")
    assert not box.run("test", "-e", "/root/.local/state/digest", check=False).returncode == 0  # nothing created
    service = box.run(digest, "status", "--service", "--check", check=False)
    assert (service.returncode, service.stdout) == (0, "Health:      ok\n"), service.stdout + service.stderr
    shown = json.loads(box.run(digest, "status", "--service", "--json").stdout)
    assert shown["database"] == "/var/lib/digest/digest.db" and shown["last_digest"]


def check_reload_refuses_a_credential_the_unit_did_not_load(box: Sandbox, stage: Path) -> None:
    """Row 16: ExecReload= checked without credentials, so a file naming one the unit lacks passed and the
    daemon only logged "configuration not reloaded"."""
    box.run("install", "-m", "0644", f"{stage}/with-llm.toml", "/etc/digest/config.toml")
    refused = box.run("systemctl", "reload", "digest", check=False)
    assert refused.returncode != 0, "systemctl reload accepted a credential the unit did not load"
    error = f"llm.api_key_file: cannot read /run/credentials/digest.service/{NO_LLM_KEY}"
    box.wait_for("the reload's one-line error", lambda: error in box.journal("digest"), timeout=10)
    assert "configuration not reloaded" not in box.journal("digest")
    box.run("install", "-m", "0644", f"{stage}/config.toml", "/etc/digest/config.toml")
    reloaded = box.run("systemctl", "reload", "digest", check=False)  # the check reads the credentials it has
    assert reloaded.returncode == 0, box.journal("digest")[-3000:]
    box.wait_for("the reload", lambda: "configuration reloaded from /etc/digest/config.toml" in box.journal("digest"),
                 timeout=20)


def check_a_crash_loop_reaches_the_start_limit_and_is_told(box: Sandbox, smtp: SMTPServer) -> None:
    """Row 13: a daemon that keeps failing. The unit's StartLimit*= as shipped; RestartSec= shortened
    from 30 s to 1 s by a drop-in so the loop takes seconds (tests/test_systemd.py proves 30 s reaches it)."""
    box.run("systemctl", "stop", "digest")
    box.sh("mkdir -p /etc/systemd/system/digest.service.d\n"
           "printf '[Service]\\nExecStart=\\nExecStart=/bin/sh -c \"exit 3\"\\nRestartSec=1s\\n' "
           "> /etc/systemd/system/digest.service.d/crash.conf\nsystemctl daemon-reload")
    box.run("systemctl", "start", "digest", check=False)
    box.wait_for("the start limit", lambda: "Start request repeated too quickly" in box.journal("digest"), timeout=60)
    assert box.show("digest", "ActiveState")["ActiveState"] == "failed"  # not restarting forever
    box.wait_for("the notice that digest.service failed",
                 lambda: "digest: the systemd unit digest.service failed" in notices(smtp), timeout=60)
