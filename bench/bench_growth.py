"""How the database grows: bytes per paper, by what takes the space, after real days through `digest run`.

Every feed day of the real listing in tests/data/ (7 days, 2026-06-23 to 07-01, 2,087 papers, up to 537 a
day: the size of a cs.AI+cs.LG day) goes through `digest run --day` in turn, as the daemon would run them:
fetched from arXiv's feed on loopback, embedded with the bundled model, ranked for one profile that takes
every category, 15 papers summarized by an OpenAI-compatible LLM on loopback whose answers have the
length of real ones (a 200-character TL;DR, six answers of about 600), rendered and emailed to a real SMTP
server on loopback. Then SQLite's dbstat says how many bytes each table (with its indexes) takes.

The baseline, measured in the same run: the raw text of a paper (title, abstract, authors). The last
lines project a year of 500 announced papers a day (about 250 announcement days: 125,000 papers).

    .venv/bin/python bench/bench_growth.py        # about 5 minutes on an idle machine: embedding 2,087 papers
    .venv/bin/python bench/bench_growth.py --days 2026-06-23,2026-06-30     # the two days of over 500
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_run import known_categories, write_config  # noqa: E402
from feeds import LISTING_DAYS, feed_xml, listing_papers, serve_feeds  # noqa: E402
from loopback import LoopbackServer, Reply  # noqa: E402
from smtp_server import SMTPServer  # noqa: E402

from digest.history.status import space_by_table  # noqa: E402
from digest.storage import db as dbm  # noqa: E402

YEAR_PAPERS = 500 * 250
ANSWER = "An answer of the length a real model writes, naming the method, the data and the result. " * 7


def llm_reply(request) -> Reply:
    content = json.dumps({"tldr": ANSWER[:200], **{k: ANSWER[:600] for k in (
        "problem", "related_work", "method", "experiments", "further_work", "summary")}})
    body = {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "bench-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 400, "completion_tokens": 900, "total_tokens": 1300}}
    return Reply(body=json.dumps(body), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", help="comma-separated feed days of the listing (default: all)")
    args = parser.parse_args()
    days = [dt.date.fromisoformat(d) for d in args.days.split(",")] if args.days else LISTING_DAYS
    codes = known_categories([row for day in LISTING_DAYS for row in listing_papers(day)])
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp, LoopbackServer() as http, SMTPServer() as smtp:
        folder = Path(tmp)
        route = serve_feeds(http, {day: feed_xml(day, codes) for day in days}, day=days[0])
        http.routes["/v1/chat/completions"] = llm_reply
        config = write_config(folder, http, smtp, codes, files=False,
                              sections="\n[schedule]\ncatch_up_days = 14\n")
        started = time.monotonic()
        for day in days:
            route.day = day
            result = subprocess.run([sys.executable, "-m", "digest", "--config", str(config), "run", "--day",
                                     day.isoformat()], capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"digest run --day {day} failed:\n{result.stdout}\n{result.stderr}")
        took = time.monotonic() - started
        path = folder / "digest.db"
        db = dbm.open_db(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        papers = db["papers"].count
        raw = db.execute("SELECT SUM(LENGTH(CAST(title AS BLOB)) + LENGTH(CAST(abstract AS BLOB)) "
                         "+ LENGTH(CAST(authors AS BLOB))) FROM papers").fetchone()[0]
        space = space_by_table(db)
        file_size = path.stat().st_size
        digests, emails = db["digests"].count, len(smtp.messages)
        db.conn.close()

    total = sum(space.values())
    print(f"{len(days)} real days through `digest run` in {took:.0f} s: {papers:,} papers, {digests} digests, "
          f"{emails} emails; database file {file_size / 2**20:.1f} MiB")
    print(f"{'what':<34}{'bytes/paper':>12}{'share':>8}{'x raw text':>12}")
    print(f"{'raw text (baseline)':<34}{raw / papers:>12,.0f}{'':>8}{1:>12.2f}")
    for name, size in sorted(space.items(), key=lambda kv: -kv[1]):
        if size / total >= 0.005:
            print(f"{name:<34}{size / papers:>12,.0f}{size / total:>8.1%}{size / raw:>12.2f}")
    print(f"{'whole database':<34}{total / papers:>12,.0f}{1:>8.0%}{total / raw:>12.2f}")
    print(f"a year of 500 papers a day ({YEAR_PAPERS:,} papers): {total / papers * YEAR_PAPERS / 2**30:.2f} GiB, "
          f"of which embeddings {space.get('embeddings', 0) / papers * YEAR_PAPERS / 2**30:.2f} GiB and "
          f"rendered digests {space.get('renders', 0) / papers * YEAR_PAPERS / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
