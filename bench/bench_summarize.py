"""Summarizing 50 real papers against a loopback OpenAI-compatible server that takes 1 s per answer.

The baseline is the serial run (llm.concurrency = 1) measured in the same run; each concurrent run is
compared with serial time / concurrency, the best a bounded pool can do. The target is to stay within
1.2x of it. A second pass over the same papers shows the cache: zero requests, zero tokens.

    .venv/bin/python bench/bench_summarize.py
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import LLMServer  # noqa: E402
from test_summarize import real_papers, settings_for  # noqa: E402

from digest import summarize  # noqa: E402
from digest.storage import summaries  # noqa: E402
from digest.storage import db as dbm  # noqa: E402
from digest.storage import papers as paper_rows  # noqa: E402

PAPERS = 50
LATENCY = 1.0
CONCURRENCY = (1, 4, 8)
TARGET = 1.2
NOW = dt.datetime(2026, 6, 23, 12, 0, tzinfo=dt.timezone.utc)


def run(concurrency: int, papers) -> dict:
    db = dbm.open_db(":memory:")
    paper_rows.save_papers(db, papers)
    with LLMServer(latency=LATENCY) as llm:
        settings = settings_for(llm, concurrency=concurrency)
        started = time.perf_counter()
        got = summarize.summarize_papers(db, settings, papers, now=NOW)
        wall = time.perf_counter() - started
        asked = len(llm.requests)
        cached_started = time.perf_counter()
        summarize.summarize_papers(db, settings, papers, now=NOW)
        cached = time.perf_counter() - cached_started
        return {"concurrency": concurrency, "wall": wall, "requests": asked, "in_flight": llm.max_in_flight,
                "llm": sum(1 for s in got.values() if not s.is_fallback), "rerun": cached,
                "rerun_requests": len(llm.requests) - asked,
                "tokens": summaries.tokens_spent(db, NOW.date())}


def main() -> None:
    papers = real_papers(PAPERS)
    rows = [run(c, papers) for c in CONCURRENCY]
    serial = rows[0]["wall"]
    print(f"{PAPERS} papers, {LATENCY:.0f} s per answer, loopback server")
    print(f"{'concurrency':>11}{'wall':>9}{'ideal':>9}{'x ideal':>9}{'summaries':>11}{'requests':>10}"
          f"{'in flight':>11}{'tokens':>8}{'re-run':>9}{'re-run req':>12}")
    for row in rows:
        ideal = serial / row["concurrency"]
        print(f"{row['concurrency']:>11}{row['wall']:>8.1f}s{ideal:>8.1f}s{row['wall'] / ideal:>9.2f}"
              f"{row['llm']:>11}{row['requests']:>10}{row['in_flight']:>11}{row['tokens']:>8}"
              f"{row['rerun'] * 1000:>7.0f}ms{row['rerun_requests']:>12}")
    worst = max(row["wall"] / (serial / row["concurrency"]) for row in rows[1:])
    print(f"worst ratio to serial/concurrency: {worst:.2f} (target <= {TARGET}): {'ok' if worst <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
