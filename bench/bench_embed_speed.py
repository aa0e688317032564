"""Embedding throughput on one real arXiv day, against plain SentenceTransformer.encode in the same run.

Texts: the 537 papers (title + abstract) announced on 2026-06-22 in
tests/data/listing_2026-06-22_to_06-30.jsonl.gz. Baseline: ``SentenceTransformer(model).encode(texts)``
with its defaults. Every variant encodes the same texts ROUNDS times, interleaved with the others so that
a neighbour's load on the machine hits them alike; the best round counts. A faster path is worth keeping
only if the ranking it gives stays within 1% of the plain model's nDCG@10 (bench_rank_quality's profiles
and test days, "seeds + text").

    .venv/bin/python bench/bench_embed_speed.py [--rounds 2] [--skip-quality]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_rank_quality as quality  # noqa: E402
import numpy as np  # noqa: E402

from digest import embed, rank  # noqa: E402
from digest.config import EmbeddingSettings  # noqa: E402
from digest.records import Announcement  # noqa: E402

DAY = "2026-06-22"


def plain_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(embed.resolve_model("all-MiniLM-L6-v2"))


def int8_model():
    """Dynamic int8 quantization of every Linear layer: torch only, nothing to install."""
    import torch

    return torch.ao.quantization.quantize_dynamic(plain_model(), {torch.nn.Linear}, dtype=torch.qint8)


def variants() -> dict:
    """name -> a function texts -> float32 rows (normalised where the product normalises)."""
    plain = plain_model()
    digest = embed.Embedder(EmbeddingSettings())
    quantized = int8_model()
    return {
        "plain encode (defaults)": lambda texts: plain.encode(texts),
        "digest Embedder (batch 64)": digest.embed_texts,
        "batch 16": lambda texts: plain.encode(texts, batch_size=16, normalize_embeddings=True),
        "batch 128": lambda texts: plain.encode(texts, batch_size=128, normalize_embeddings=True),
        "int8 dynamic, batch 64": lambda texts: quantized.encode(texts, batch_size=64, normalize_embeddings=True),
    }


def time_variants(encoders: dict, texts: list[str], rounds: int) -> dict[str, float]:
    for encode in encoders.values():
        encode(texts[:8])  # warm up: first-call allocations are not throughput
    best = {name: float("inf") for name in encoders}
    for _ in range(rounds):
        for name, encode in encoders.items():
            started = time.perf_counter()
            encode(texts)
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def ranking_quality(encode) -> float:
    """Mean nDCG@10 of digest's ranking (seeds + text) when every vector comes from ``encode``."""
    days = quality.load_days()
    seeds = quality.pick_seeds(days)
    papers = {p.id: p for d in quality.TEST_DAYS for p in days[d]}
    papers.update({p.id: p for d in quality.SEED_DAYS for p in days.get(d, []) if p.id in
                   {s for ids in seeds.values() for s in ids}})
    ids = list(papers)
    rows = encode([embed.paper_text(papers[i]) for i in ids])
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    vectors = dict(zip(ids, rows.astype(np.float32)))
    lines = [quality.PROFILES[c][0] for c in quality.PROFILES]
    interest = dict(zip(quality.PROFILES, encode(lines)))
    orders = {}
    for cat in quality.PROFILES:
        line_vector = interest[cat] / np.linalg.norm(interest[cat])
        signals = rank.Signals(interests=[rank.Anchor(quality.PROFILES[cat][0], line_vector)],
                               seeds=[rank.Anchor(f"seed paper {i}", vectors[i]) for i in seeds[cat]])
        for day in quality.TEST_DAYS:
            items = [Announcement(p, dt.date.fromisoformat(day), "new", i) for i, p in enumerate(days[day])]
            orders[(cat, day)] = [r.paper for r in rank.rank_papers(items, vectors, signals, top=quality.TOP)]
    return quality.mean_of(quality.evaluate(orders), 0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    import torch

    texts = [embed.paper_text(p) for p in quality.load_days()[DAY]]
    encoders = variants()
    seconds = time_variants(encoders, texts, args.rounds)
    base = seconds["plain encode (defaults)"]
    print(f"{len(texts)} real abstracts ({DAY}), best of {args.rounds} rounds, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'variant':<30}{'seconds':>9}{'papers/s':>10}{'speed-up':>10}{'nDCG@10':>9}")
    plain_quality = None
    for name, took in seconds.items():
        score = ""
        if not args.skip_quality and name in ("plain encode (defaults)", "int8 dynamic, batch 64"):
            value = ranking_quality(encoders[name])
            plain_quality = value if plain_quality is None else plain_quality
            score = f"{value:.3f}" + ("" if value is plain_quality else f" ({value / plain_quality - 1:+.1%})")
        print(f"{name:<30}{took:9.2f}{len(texts) / took:10.1f}{base / took:9.2f}x  {score}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
