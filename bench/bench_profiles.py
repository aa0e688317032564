"""Many readers on one machine: one real day through `digest run` for 1, 64, 256 and 1,000 profiles.

The day: feed day 2026-06-30 of the real listing in tests/data/ (531 real papers), served as arXiv's Atom feed from
loopback, with an OpenAI-compatible LLM on loopback (answers of a real one's length, no delay) and a real SMTP
server on loopback. First 2026-06-23 (537 papers) and then the measured day go through a one-profile run from
nothing (the "cold" row: fetching and embedding the day, what a daemon pays once a day whatever the number of
profiles). Each reader has liked 8 and disliked 4 of 2026-06-23's papers (as a few days of reading would give),
so every profile's learned model trains. Profiles differ as a lab's readers do: two interests each out of twenty
topics, half of them on every category, the others on one or two; each gets its digest by email.

Each count is then one `digest run --day 2026-06-30` process on a copy of that database (the day fetched and
embedded, no digest built for these readers yet), measured whole, against the 1-profile run as the baseline:

  wall, CPU      the process; "per profile" is the wall time beyond the 1-profile run's, per extra profile
  peak RSS       the process's largest resident memory (GNU time)
  mail           bytes the SMTP server received
  rank, render,  the stage's time (run_stages) per profile: it should not grow with the number of profiles
  deliver

Targets (issue 27): 1,000 profiles with feedback in at most 10 minutes on 2 cores, peak RSS at most 500 MB,
per-profile time not growing with the number of profiles.

    .venv/bin/python bench/bench_profiles.py                  # 1, 64, 256, 1000: 8 minutes on 2 shared cores
    .venv/bin/python bench/bench_profiles.py --profiles 1,64  # a small run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from bench_growth import llm_reply  # noqa: E402
from bench_run import bench_env, export_model, known_categories, stage_times, write_config  # noqa: E402
from feeds import feed_xml, listing_papers, serve_feeds  # noqa: E402
from loopback import LoopbackServer  # noqa: E402
from peak_rss import measure  # noqa: E402
from smtp_server import SMTPServer  # noqa: E402

from digest import profiles as feedback  # noqa: E402
from digest.storage import db as dbm  # noqa: E402

DAY = dt.date(2026, 6, 30)  # the measured day
EARLIER = dt.date(2026, 6, 23)  # the day the readers liked and disliked papers of
LIKES, DISLIKES = 8, 4
TOPICS = [
    "large language model agents", "vision-language models", "reinforcement learning from human feedback",
    "graph neural networks", "diffusion models for images", "robot manipulation", "speech recognition",
    "federated learning and privacy", "causal inference", "time series forecasting", "code generation",
    "retrieval-augmented generation", "medical image segmentation", "multi-agent systems", "AI safety and alignment",
    "theorem proving", "recommender systems", "optimization for deep learning", "knowledge graphs",
    "autonomous driving",
]
CATEGORIES = ["", "", "", "", "cs.AI", "cs.LG", "cs.CL", "cs.CV", "cs.CL+cs.AI", "cs.LG+stat.ML"]
STAGES = ("rank", "render", "deliver")
LOAD = [0.0, 0.0, 0.0]  # the machine's load average before the last measured run


class CountingSMTP(SMTPServer):
    """A real SMTP server on loopback that counts what it receives instead of keeping it."""

    def __init__(self):
        super().__init__()
        self.received = 0
        self.bytes = 0

    def _store(self, envelope, session) -> None:
        with self.lock:
            self.received += 1
            self.bytes += len(envelope.original_content or envelope.content)


def profile_tables(count: int) -> str:
    """``count`` readers' [profiles.*] tables, the same reader for the same number in every run."""
    tables = []
    for i in range(count):
        pick = random.Random(i)
        categories = CATEGORIES[0] if i == 0 else pick.choice(CATEGORIES)  # the baseline reads the whole day
        interests = ", ".join(f'"{t}"' for t in pick.sample(TOPICS, 2))
        tables.append(f'\n[profiles.r{i:04d}]\ninterests = [{interests}]\n'
                      + (f'categories = "{categories}"\n' if categories else "")
                      + f'email_to = ["r{i:04d}@example.org"]\n')
    return "".join(tables)


def give_feedback(path: Path, count: int) -> None:
    """Each reader's likes and dislikes among the earlier day's papers: papers of one taste liked, of
    another disliked, as `digest like` / `digest dislike` record them."""
    rows = listing_papers(EARLIER)
    by_category: dict[str, list[str]] = {}
    for row in rows:
        by_category.setdefault(row["primary_category"], []).append(row["id"])
    tastes = [c for c, ids in by_category.items() if len(ids) >= LIKES + DISLIKES]
    db = dbm.open_db(path)
    for i in range(count):
        pick = random.Random(10_000 + i)
        liked, disliked = pick.sample(tastes, 2)
        for paper_id in pick.sample(by_category[liked], LIKES):
            feedback.set_feedback(db, paper_id, 1, f"r{i:04d}")
        for paper_id in pick.sample(by_category[disliked], DISLIKES):
            feedback.set_feedback(db, paper_id, -1, f"r{i:04d}")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()


def run(config: Path, day: dt.date) -> tuple[float, float, float]:
    """(wall s, peak RSS MB, CPU s) of one `digest run --day` process."""
    wall, peak, cpu, _ = measure([sys.executable, "-m", "digest", "--config", str(config), "run", "--day",
                                  day.isoformat()], bench_env())
    return wall, peak, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default="1,64,256,1000", help="comma-separated profile counts (first: the "
                                                                      "baseline; default 1,64,256,1000)")
    args = parser.parse_args()
    counts = [int(n) for n in args.profiles.split(",")]
    codes = known_categories(listing_papers(EARLIER) + listing_papers(DAY))
    export_model()
    with tempfile.TemporaryDirectory(prefix="bench-profiles-") as tmp, LoopbackServer() as http, \
            CountingSMTP() as smtp:
        folder = Path(tmp)
        route = serve_feeds(http, {d: feed_xml(d, codes) for d in (EARLIER, DAY)}, day=EARLIER)
        http.routes["/v1/chat/completions"] = llm_reply
        base = folder / "base"
        base.mkdir()
        one = write_config(base, http, smtp, codes, files=False)
        run(one, EARLIER)  # the earlier day, stored and embedded
        route.day = DAY
        sent_before, bytes_before = smtp.received, smtp.bytes
        wall, peak, cpu = run(one, DAY)
        cold = ("1 cold", wall, cpu, peak, smtp.received - sent_before, smtp.bytes - bytes_before,
                stage_times(base / "digest.db"))
        give_feedback(base / "digest.db", max(counts))
        results = []
        for count in counts:
            here = folder / str(count)
            here.mkdir()
            shutil.copy(base / "digest.db", here / "digest.db")
            config = write_config(here, http, smtp, codes, files=False, profiles=profile_tables(count))
            sent_before, bytes_before = smtp.received, smtp.bytes
            LOAD[:] = os.getloadavg()
            wall, peak, cpu = run(config, DAY)
            stages = stage_times(here / "digest.db")
            with sqlite3.connect(here / "digest.db") as conn:
                papers = conn.execute("SELECT COUNT(*) FROM announcements WHERE announced_on = ?",
                                      [DAY.isoformat()]).fetchone()[0]
            results.append((count, wall, cpu, peak, smtp.received - sent_before, smtp.bytes - bytes_before, stages))
            (here / "digest.db").unlink()
            print(f"  {count} profiles: {wall:.0f} s, {peak:.0f} MB", file=sys.stderr, flush=True)
    report(cold, results, papers)


def report(cold: tuple, results: list, papers: int) -> None:
    base_count, base_wall, _, base_peak, _, base_bytes, _ = results[0]
    print(f"digest run --day {DAY}: {papers} papers; each profile with {LIKES} likes and {DISLIKES} dislikes "
          f"of {EARLIER}'s papers; load average before the last run {LOAD[0]:.1f}")
    print(f"{'profiles':>8}{'wall':>9}{'CPU':>9}{'per profile':>12}{'peak RSS':>10}{'x base':>8}{'mail':>10}"
          f"{'x base':>8}" + "".join(f"{s + '/prof':>14}" for s in STAGES))
    for count, wall, cpu, peak, sent, sent_bytes, stages in [cold, *results]:
        extra = (wall - base_wall) / (count - base_count) if isinstance(count, int) and count > base_count else None
        per_stage = "".join(f"{stages.get(s, 0) / (count if isinstance(count, int) else 1) * 1000:>11.0f} ms"
                            for s in STAGES)
        print(f"{count:>8}{wall:>8.0f}s{cpu:>8.0f}s" + (f"{extra:>11.2f}s" if extra is not None else f"{'-':>12}")
              + f"{peak:>7.0f} MB{peak / base_peak:>8.2f}{sent_bytes / 2**20:>7.1f} MB"
              + f"{sent_bytes / base_bytes:>8.1f}" + per_stage + ("" if sent == (count if isinstance(count, int)
                                                                                  else 1) else f"  ({sent} mails)"))
    count, wall, _, peak, _, _, _ = results[-1]
    print(f"targets for {count} profiles: wall <= 600 s: {wall:.0f} s ({'met' if wall <= 600 else 'NOT met'}); "
          f"peak RSS <= 500 MB: {peak:.0f} MB ({'met' if peak <= 500 else 'NOT met'})")


if __name__ == "__main__":
    main()
