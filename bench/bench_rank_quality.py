"""Ranking quality on real arXiv days: does digest put a profile's papers first?

Data: the 2,087 real papers of tests/data/listing_2026-06-22_to_06-30.jsonl.gz. One profile per
primary category (7 of them), each built as a user would: five seed papers picked from the earlier days
(2026-06-22 to 06-24) and a one-line interest written from arXiv's description of the category. Each later
day (06-25, 06-28, 06-29, 06-30; every paper of the day, all categories mixed) is ranked for each profile.
A paper is relevant when its primary category is the profile's.

Metrics, averaged over days and then over profiles: nDCG@10 (binary gain) and recall within the top
section (relevant papers among the top 15 / min(15, relevant papers that day)).

Baselines in the same run: arXiv's listing order, a random order (fixed seed), keyword match (how many of
the profile's keywords the title/abstract contains), and arxiv-sanity-lite's TF-IDF + linear SVM trained
with the seeds as positives and every other paper as negatives (its vectorizer and SVM settings).

    .venv/bin/python bench/bench_rank_quality.py
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from digest import embed, profiles, rank  # noqa: E402
from digest.config import parse_settings  # noqa: E402
from digest.records import Announcement, Paper  # noqa: E402
from digest.storage import db as dbm  # noqa: E402
from digest.storage import papers as paper_rows  # noqa: E402

LISTING = ROOT / "tests" / "data" / "listing_2026-06-22_to_06-30.jsonl.gz"
SEED_DAYS = ("2026-06-22", "2026-06-23", "2026-06-24")
TEST_DAYS = ("2026-06-25", "2026-06-28", "2026-06-29", "2026-06-30")
SEEDS_PER_PROFILE = 5
TOP = 15

# One line each, as a user would write it, from arXiv's own description of the category. Written before
# any ranking was run and not tuned on the test days.
PROFILES = {
    "cs.CV": ("computer vision: image and video understanding, object detection, segmentation, 3D vision",
              ["image", "video", "visual", "segmentation", "detection"]),
    "cs.CL": ("natural language processing, large language models, machine translation and speech",
              ["language", "LLM", "text", "translation", "linguistic"]),
    "cs.AI": ("artificial intelligence: agents, reasoning, planning and knowledge representation",
              ["agent", "reasoning", "planning", "knowledge", "AI"]),
    "cs.IT": ("information theory: channel coding, capacity, wireless communication and signal processing",
              ["channel", "coding", "capacity", "wireless", "MIMO"]),
    "cs.GT": ("game theory, mechanism design, auctions, equilibria and social choice",
              ["game", "equilibrium", "mechanism", "auction", "voting"]),
    "cs.CE": ("computational engineering, finance and science: simulation, finite elements, numerical methods",
              ["simulation", "finite", "numerical", "engineering", "finance"]),
    "cs.GR": ("computer graphics: rendering, geometry processing, meshes and animation",
              ["rendering", "mesh", "geometry", "animation", "graphics"]),
}


def load_days() -> dict[str, list[Paper]]:
    days: dict[str, list[Paper]] = {}
    with gzip.open(LISTING, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            paper = Paper(id=row["id"], version=1, title=row["title"], abstract=row["abstract"],
                          authors=row["authors"], categories=row["categories"],
                          primary_category=row["primary_category"])
            days.setdefault(row["announced_date_et"], []).append(paper)
    return days


def pick_seeds(days: dict[str, list[Paper]]) -> dict[str, list[str]]:
    """Five papers of the category from the earlier days, chosen at random (fixed seed): "papers I liked"."""
    chooser = random.Random(20260622)
    pool = [p for d in SEED_DAYS for p in days.get(d, [])]
    return {cat: sorted(p.id for p in chooser.sample([p for p in pool if p.primary_category == cat],
                                                     SEEDS_PER_PROFILE))
            for cat in PROFILES}


# -- metrics ------------------------------------------------------------------------------------------

def ndcg_at(relevant: list[bool], k: int = 10) -> float:
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, sum(relevant))))
    gained = sum(1 / math.log2(i + 2) for i, hit in enumerate(relevant[:k]) if hit)
    return gained / ideal if ideal else 0.0


def recall_in_top(relevant: list[bool], top: int = TOP) -> float:
    total = sum(relevant)
    return sum(relevant[:top]) / min(top, total) if total else 0.0


def evaluate(orders: dict[tuple[str, str], list[Paper]]) -> dict[str, tuple[float, float]]:
    """(category, day) -> ranked papers  =>  category -> (mean nDCG@10, mean recall@top) over days."""
    per_cat: dict[str, list[tuple[float, float]]] = {}
    for (cat, _), papers in orders.items():
        hits = [p.primary_category == cat for p in papers]
        per_cat.setdefault(cat, []).append((ndcg_at(hits), recall_in_top(hits)))
    return {cat: (float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals])))
            for cat, vals in per_cat.items()}


# -- the methods --------------------------------------------------------------------------------------

def arxiv_order(days, seeds, cat, day):
    return list(days[day])


def random_order(days, seeds, cat, day):
    papers = list(days[day])
    random.Random(f"{cat}/{day}").shuffle(papers)
    return papers


def keyword_order(days, seeds, cat, day):
    patterns = [re.compile(rf"(?<!\w){re.escape(k)}s?(?!\w)", re.IGNORECASE) for k in PROFILES[cat][1]]
    count = lambda p: sum(1 for pattern in patterns if pattern.search(p.text))
    return sorted(days[day], key=lambda p: -count(p))  # stable: ties keep arXiv's order


def svm_order(days, seeds, cat, day):
    """arxiv-sanity-lite: TF-IDF over every paper it has, LinearSVC with the tagged papers positive."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    corpus = [p for d in SEED_DAYS for p in days.get(d, [])] + list(days[day])
    vectorizer = TfidfVectorizer(strip_accents="unicode", lowercase=True, analyzer="word", stop_words="english",
                                 token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b", ngram_range=(1, 2),
                                 max_features=20000, norm="l2", use_idf=True, smooth_idf=True, sublinear_tf=True,
                                 max_df=0.1, min_df=5)
    x = vectorizer.fit_transform([f"{p.title} {p.abstract}" for p in corpus])
    wanted = set(seeds[cat])
    y = np.array([p.id in wanted for p in corpus], dtype=int)
    svm = LinearSVC(class_weight="balanced", max_iter=10000, tol=1e-6, C=0.01).fit(x, y)
    scores = svm.decision_function(x[len(corpus) - len(days[day]):])
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [days[day][i] for i in order]


def digest_order(db, settings, embedder, vectors, which: str, seed_share: float | None = None):
    """digest's own ranking (rank.rank_papers) with the profile's signals as profiles.py builds them.
    ``which``: "text", "seeds", "all" (seeds + text) or "keywords" (all + the keywords the keyword
    baseline uses). ``seed_share`` overrides rank.EXAMPLE_SHARE, to show how much the choice matters."""

    def order(days, seeds, cat, day):
        signals, warnings = profiles.profile_signals(db, settings, settings.profiles[cat.replace(".", "_")],
                                                     embedder=embedder)
        assert not warnings, warnings
        if which == "text":
            signals.seeds = []
        elif which == "seeds":
            signals.interests = []
        elif which == "keywords":
            signals.keywords = PROFILES[cat][1]
        announcements = [Announcement(p, dt.date.fromisoformat(day), "new", i) for i, p in enumerate(days[day])]
        default = rank.EXAMPLE_SHARE
        rank.EXAMPLE_SHARE = default if seed_share is None else seed_share
        try:
            return [r.paper for r in rank.rank_papers(announcements, vectors, signals, top=TOP)]
        finally:
            rank.EXAMPLE_SHARE = default

    return order


def profiles_toml(seeds: dict[str, list[str]]) -> str:
    parts = []
    for cat, (line, _) in PROFILES.items():
        parts.append(f"[profiles.{cat.replace('.', '_')}]\ninterests = [{json.dumps(line)}]\n"
                     f"seed_papers = {json.dumps(seeds[cat])}\n")
    return "\n".join(parts)


def open_store(days, seeds, path: Path):
    """Every listing paper stored and embedded (cached in the database: a second run embeds nothing)."""
    db = dbm.open_db(path)
    for day, papers in days.items():
        paper_rows.save_announcements(db, [Announcement(p, dt.date.fromisoformat(day), "new", i)
                                           for i, p in enumerate(papers)], "listing")
    settings = parse_settings(f'[storage]\npath = "{path}"\n' + profiles_toml(seeds))
    return db, settings


def run_methods(days, seeds, methods) -> dict[str, dict[str, tuple[float, float]]]:
    results = {}
    for name, method in methods.items():
        orders = {(cat, day): method(days, seeds, cat, day) for cat in PROFILES for day in TEST_DAYS}
        assert all(len(o) == len(days[d]) for (_, d), o in orders.items()), f"{name} dropped papers"
        results[name] = evaluate(orders)
    return results


def print_table(results: dict[str, dict[str, tuple[float, float]]], metric: int, title: str) -> None:
    cats = list(PROFILES)
    print(f"\n{title}")
    print(f"{'method':<28}" + "".join(f"{c:>8}" for c in cats) + f"{'mean':>8}")
    for name, per_cat in results.items():
        values = [per_cat[c][metric] for c in cats]
        print(f"{name:<28}" + "".join(f"{v:8.3f}" for v in values) + f"{np.mean(values):8.3f}")


def mean_of(per_cat: dict[str, tuple[float, float]], metric: int) -> float:
    return float(np.mean([v[metric] for v in per_cat.values()]))


def main() -> int:
    days = load_days()
    seeds = pick_seeds(days)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    db, settings = open_store(days, seeds, out / "rank_quality.db")
    embedder = embed.Embedder(settings.embedding)
    started = time.monotonic()
    papers = [p for ps in days.values() for p in ps]
    vectors = embed.embed_papers(db, papers, settings, embedder=embedder)
    print(f"{len(papers)} papers, {embedder.texts_encoded} embedded now ({time.monotonic() - started:.1f}s), "
          f"{len(PROFILES)} profiles x {len(TEST_DAYS)} days, top section {TOP}")
    methods = {
        "arXiv order": arxiv_order,
        "random (fixed seed)": random_order,
        "keyword match": keyword_order,
        "TF-IDF + SVM on seeds": svm_order,
        "digest: text only": digest_order(db, settings, embedder, vectors, "text"),
        "digest: seeds only": digest_order(db, settings, embedder, vectors, "seeds"),
        "digest: seeds+text share=.25": digest_order(db, settings, embedder, vectors, "all", 0.25),
        "digest: + keywords": digest_order(db, settings, embedder, vectors, "keywords"),
        "digest: seeds + text": digest_order(db, settings, embedder, vectors, "all"),
    }
    results = run_methods(days, seeds, methods)
    print_table(results, 0, "nDCG@10 (mean over days)")
    print_table(results, 1, f"recall in the top {TOP} (relevant in top {TOP} / min({TOP}, relevant))")
    ours = results["digest: seeds + text"]
    print("\nratios, digest (seeds + text) / baseline:")
    for name in ("arXiv order", "random (fixed seed)", "keyword match", "TF-IDF + SVM on seeds"):
        print(f"  {name:<24} nDCG@10 x{mean_of(ours, 0) / mean_of(results[name], 0):.2f}   "
              f"recall@{TOP} x{mean_of(ours, 1) / mean_of(results[name], 1):.2f}")
    beaten = all(mean_of(ours, m) > mean_of(results[n], m) for m in (0, 1)
                 for n in ("arXiv order", "random (fixed seed)", "keyword match", "TF-IDF + SVM on seeds"))
    print(f"\ndigest beats every baseline on average: {'yes' if beaten else 'NO'}")
    return 0 if beaten else 1


if __name__ == "__main__":
    raise SystemExit(main())
