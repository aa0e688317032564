"""Ranking that learns from the reader: four months of real cs.AI listings, readers who give feedback.

Data: ../shared/data/ranking/cs.AI_2025-09-01_to_2025-12-31.jsonl.gz, 16,332 real papers listed in cs.AI
(primary or cross-list), one `day` each. Its README describes the protocol followed here:

- Readers: one arXiv category each (READERS), described by a one-line interest and 8 seed papers of that
  primary category drawn (fixed seed) from the 10 days before the window. A paper is relevant to a reader
  when its primary category is the reader's. Interests and keywords were written from arXiv's category
  descriptions before anything was ranked and never changed.
- Each day every paper listed that day is ranked for every reader, in arXiv's listing order as the input
  (cs.AI primaries first, then cross-lists, each by id).
- Feedback: on the first 8 days of the window the simulated reader opens digest's ranking, likes up to 5
  relevant papers among its top 20 and dislikes up to 2 irrelevant ones among its top 10, through
  ``storage.feedback.set_feedback`` (what `digest like/dislike --profile NAME` calls) into the `feedback` table of a
  real SQLite database, read back by ``profiles.profile_signals`` (what every `digest run` calls). Later
  days are scored with that feedback fixed. The same likes go to the baselines that take feedback.
- Scored: every later day of the window on which the reader has at least one relevant paper. nDCG@10
  (binary gain) and recall@20 (relevant papers in the top 20 / relevant papers that day; no reader-day has
  more than 20), averaged over reader-days.

Split. Every constant of digest's ranking (rank.py) was chosen on the "dev" window (seeds 2025-08-23..09-01
do not exist, so: seeds 2025-09-01..09-10, feedback 09-11..09-18, scored 09-19..10-31). The "test" window
(seeds 2025-10-22..10-31, feedback 11-01..11-08, scored 11-09..12-31) is what docs/benchmarks.md reports; it was run
only after the constants were fixed.

Baselines, in the same run: arXiv's listing order; keyword counting (5 words per reader); zotero-arxiv-daily
(mean cosine to the seed papers weighted 1/(1 + log10(rank)), newest first, likes added as the newest);
arxiv-sanity-lite (its TF-IDF settings and LinearSVC, seeds and likes positive, every other paper of the
window up to that day negative), with and without the likes.

    .venv/bin/python bench/bench_rank_learning.py            # the test window (what docs/benchmarks.md shows)
    .venv/bin/python bench/bench_rank_learning.py --dev      # the window the constants were chosen on

The 16k vectors are cached in bench/out/rank_learning_vectors.npz, outside git (about an hour to embed the
first time on this 2-core machine shared with other jobs, a few seconds to load after). A run takes about
20 minutes, most of it the arxiv-sanity-lite baseline; --digest-only skips the baselines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from digest import embed, profiles, rank  # noqa: E402
from digest.config import EmbeddingSettings, parse_settings  # noqa: E402
from digest.records import Announcement, Paper  # noqa: E402
from digest.storage import db as dbm  # noqa: E402
from digest.storage import papers as paper_rows  # noqa: E402
from digest.storage import feedback as feedback_rows  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ranking" / "cs.AI_2025-09-01_to_2025-12-31.jsonl.gz"
OUT = ROOT / "bench" / "out"
CACHE = OUT / "rank_learning_vectors.npz"
SEEDS_PER_READER = 8
FEEDBACK_DAYS = 8
LIKES_PER_DAY, LIKE_WITHIN = 5, 20
DISLIKES_PER_DAY, DISLIKE_WITHIN = 2, 10
TOP = 15  # digest's default top section; it changes no order here (no followed authors)


@dataclass(frozen=True)
class Window:
    seed_days: tuple[str, str]  # first and last day seed papers are drawn from
    start: str  # first feedback day
    end: str  # last scored day


WINDOWS = {
    "dev": Window(("2025-09-01", "2025-09-10"), "2025-09-11", "2025-10-31"),
    "test": Window(("2025-10-22", "2025-10-31"), "2025-11-01", "2025-12-31"),
}

# One line and five keywords per reader, written from arXiv's description of the category before any
# ranking was run; never tuned.
READERS = {
    "cs.CR": ("computer security and privacy: attacks and defenses, cryptography, authentication, malware and "
              "vulnerability detection", ["security", "privacy", "attack", "vulnerability", "malware"]),
    "cs.RO": ("robotics: robot manipulation, locomotion, motion planning, navigation and control of robots",
              ["robot", "manipulation", "locomotion", "navigation", "grasping"]),
    "cs.SE": ("software engineering: program testing and debugging, code generation, software maintenance and "
              "developer tools", ["software", "code", "testing", "bug", "program"]),
    "cs.HC": ("human-computer interaction: user interfaces, user studies, human factors and collaborative "
              "computing", ["user", "interface", "interaction", "participants", "usability"]),
    "cs.IR": ("information retrieval: search, ranking, recommender systems and indexing of documents",
              ["retrieval", "recommendation", "recommender", "search", "ranking"]),
    "cs.SD": ("sound and audio: speech and music processing, audio generation, sound event analysis and audio "
              "signal processing", ["audio", "speech", "music", "sound", "acoustic"]),
    "cs.CY": ("computers and society: AI ethics, fairness, policy and law, education, and the social impact of "
              "technology", ["ethics", "society", "policy", "education", "fairness"]),
    "cs.MA": ("multi-agent systems: cooperation and coordination among autonomous agents, agent communication "
              "and distributed AI", ["multi-agent", "agent", "cooperation", "coordination", "negotiation"]),
}


# -- data -------------------------------------------------------------------------------------------

def load_days() -> dict[str, list[Paper]]:
    """day -> that day's papers in arXiv's listing order: cs.AI primaries (new), then cross-lists, by id."""
    days: dict[str, list[Paper]] = {}
    with gzip.open(DATA, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            paper = Paper(id=row["id"], version=row["version"], title=row["title"], abstract=row["abstract"],
                          authors=row["authors"], categories=row["categories"],
                          primary_category=row["primary_category"])
            days.setdefault(row["day"], []).append(paper)
    for papers in days.values():
        papers.sort(key=lambda p: (p.primary_category != "cs.AI", p.id))
    return dict(sorted(days.items()))


def load_vectors(papers: list[Paper]) -> dict[str, np.ndarray]:
    """Every paper's vector from digest's own Embedder, cached by id and content hash in bench/out/."""
    cached: dict[str, tuple[str, np.ndarray]] = {}
    if CACHE.exists():
        data = np.load(CACHE)
        if str(data["model"]) == rank_model():
            cached = {i: (h, v) for i, h, v in zip(data["ids"].tolist(), data["hashes"].tolist(), data["vectors"])}
    waiting = [p for p in papers if cached.get(p.id, ("",))[0] != p.content_hash]
    if waiting:
        print(f"embedding {len(waiting)} papers (cached in {CACHE.relative_to(ROOT)})", flush=True)
        embedder = embed.Embedder(EmbeddingSettings())
        waiting.sort(key=lambda p: len(p.text))
        for start in range(0, len(waiting), embed.CHUNK):
            chunk = waiting[start:start + embed.CHUNK]
            for paper, vector in zip(chunk, embedder.embed_texts([p.text for p in chunk])):
                cached[paper.id] = (paper.content_hash, vector)
        OUT.mkdir(parents=True, exist_ok=True)
        ids = sorted(cached)
        np.savez(CACHE, ids=np.array(ids), hashes=np.array([cached[i][0] for i in ids]),
                 vectors=np.vstack([cached[i][1] for i in ids]), model=np.array(rank_model()))
    return {p.id: cached[p.id][1] for p in papers}


def rank_model() -> str:
    return EmbeddingSettings().model


def days_between(days: dict[str, list[Paper]], first: str, last: str) -> list[str]:
    return [d for d in days if first <= d <= last]


def pick_seeds(days: dict[str, list[Paper]], window: Window, name: str) -> dict[str, list[Paper]]:
    """8 papers of each reader's category from the seed days, at random (fixed seed): "papers I liked"."""
    pool = [p for d in days_between(days, *window.seed_days) for p in days[d]]
    return {cat: random.Random(f"{name}/{cat}").sample([p for p in pool if p.primary_category == cat],
                                                        SEEDS_PER_READER)
            for cat in READERS}


# -- metrics and the simulated reader -----------------------------------------------------------------

def ndcg_at(relevant: list[bool], k: int = 10) -> float:
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, sum(relevant))))
    return sum(1 / math.log2(i + 2) for i, hit in enumerate(relevant[:k]) if hit) / ideal


def recall_at(relevant: list[bool], k: int = 20) -> float:
    return sum(relevant[:k]) / sum(relevant)


def reader_feedback(order: list[Paper], cat: str) -> tuple[list[str], list[str]]:
    """What the simulated reader likes (relevant, in the top 20) and dislikes (irrelevant, in the top 10)."""
    likes = [p.id for p in order[:LIKE_WITHIN] if p.primary_category == cat][:LIKES_PER_DAY]
    dislikes = [p.id for p in order[:DISLIKE_WITHIN] if p.primary_category != cat][:DISLIKES_PER_DAY]
    return likes, dislikes


# -- digest, through its real parts -------------------------------------------------------------------

class DigestReaders:
    """digest's ranking for every reader: a real database, the real feedback path, the real signals."""

    def __init__(self, path: Path, seeds: dict[str, list[Paper]], stored: list[Paper],
                 vectors: dict[str, np.ndarray], embedder: embed.Embedder):
        self.db = dbm.open_db(path)
        self.vectors = vectors
        self.embedder = embedder
        paper_rows.save_papers(self.db, stored)
        # The cached vectors, stored as embed_papers stores what it embeds: profile_signals finds them there.
        embed._save(self.db, rank_model(), stored, np.vstack([vectors[p.id] for p in stored]))
        toml = [f'[storage]\npath = "{path}"\n']
        for cat, (line, _) in READERS.items():
            toml.append(f"[profiles.{profile_name(cat)}]\ninterests = [{json.dumps(line)}]\n"
                        f"seed_papers = {json.dumps([p.id for p in seeds[cat]])}\n")
        self.settings = parse_settings("\n".join(toml))

    def rank(self, cat: str, papers: list[Paper], day: str) -> list[Paper]:
        """The day's digest order for this reader: the signals `digest run` builds, the ranking it uses."""
        profile = self.settings.profiles[profile_name(cat)]
        signals, warnings = profiles.profile_signals(self.db, self.settings, profile, embedder=self.embedder)
        assert not warnings, warnings
        announced = [Announcement(p, dt.date.fromisoformat(day), "new" if p.primary_category == "cs.AI" else "cross", i)
                     for i, p in enumerate(papers)]
        ranked = rank.rank_papers(announced, self.vectors, signals, top=TOP)
        assert sorted(r.paper.id for r in ranked) == sorted(p.id for p in papers), "a paper was dropped"
        return [r.paper for r in ranked]

    def give_feedback(self, cat: str, likes: list[str], dislikes: list[str]) -> None:
        for paper_id in likes:
            feedback_rows.set_feedback(self.db, paper_id, 1, profile_name(cat))
        for paper_id in dislikes:
            feedback_rows.set_feedback(self.db, paper_id, -1, profile_name(cat))

    def forget_feedback(self) -> None:
        feedback_rows.clear_feedback(self.db, everything=True)


def profile_name(cat: str) -> str:
    return cat.replace(".", "_")


# -- baselines --------------------------------------------------------------------------------------

def listing_order(papers: list[Paper]) -> list[Paper]:
    return list(papers)


def keyword_order(papers: list[Paper], words: list[str]) -> list[Paper]:
    patterns = [re.compile(rf"(?<!\w){re.escape(w)}s?(?!\w)", re.IGNORECASE) for w in words]
    found = lambda p: sum(1 for pattern in patterns if pattern.search(p.text))
    return sorted(papers, key=lambda p: -found(p))  # stable: ties keep arXiv's order


def zotero_order(papers: list[Paper], library: list[Paper], vectors: dict[str, np.ndarray]) -> list[Paper]:
    """zotero-arxiv-daily's rerank_paper: similarity to each library paper, weighted by 1/(1+log10(rank))
    with the newest paper first, normalised to sum 1. ``library`` is oldest first."""
    newest_first = library[::-1]
    weights = 1 / (1 + np.log10(np.arange(len(newest_first)) + 1))
    weights /= weights.sum()
    corpus = np.vstack([vectors[p.id] for p in newest_first])
    scores = np.vstack([vectors[p.id] for p in papers]) @ corpus.T @ weights
    return [papers[i] for i in np.argsort(-scores, kind="stable")]


class SanityLite:
    """arxiv-sanity-lite's recommendation: its TF-IDF features (compute.py) and its LinearSVC (serve.py),
    trained with the reader's tagged papers positive and every other paper it has negative.

    The vectorizer is fitted once on the whole window's text (arxiv-sanity-lite refits it on its whole
    database now and then); features only, no labels, so this can only help the baseline."""

    def __init__(self, days: dict[str, list[Paper]], window_days: list[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.days = window_days
        papers = [p for d in window_days for p in days[d]]
        self.row = {p.id: i for i, p in enumerate(papers)}
        vectorizer = TfidfVectorizer(strip_accents="unicode", lowercase=True, analyzer="word", stop_words="english",
                                     token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b", ngram_range=(1, 2),
                                     max_features=20000, norm="l2", use_idf=True, smooth_idf=True,
                                     sublinear_tf=True, max_df=0.1, min_df=5)
        self.x = vectorizer.fit_transform([f"{p.title} {p.abstract}" for p in papers])
        self.ends = {}  # day -> row index past that day's last paper
        count = 0
        for d in window_days:
            count += len(days[d])
            self.ends[d] = count

    def order(self, papers: list[Paper], day: str, positives: list[Paper]) -> list[Paper]:
        from sklearn.svm import LinearSVC

        earlier = self.ends[self.days[self.days.index(day) - 1]]
        wanted = {self.row[p.id] for p in positives}
        y = np.array([i in wanted for i in range(earlier)], dtype=int)
        svm = LinearSVC(class_weight="balanced", max_iter=10000, tol=1e-6, C=0.01).fit(self.x[:earlier], y)
        scores = svm.decision_function(self.x[[self.row[p.id] for p in papers]])
        return [papers[i] for i in np.argsort(-scores, kind="stable")]


# -- the run ------------------------------------------------------------------------------------------

@dataclass
class Scores:
    ndcg: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)

    def add(self, order: list[Paper], cat: str) -> None:
        hits = [p.primary_category == cat for p in order]
        self.ndcg.append(ndcg_at(hits))
        self.recall.append(recall_at(hits))

    def mean(self) -> tuple[float, float]:
        return float(np.mean(self.ndcg)), float(np.mean(self.recall))


def run_window(name: str, days, vectors, embedder, work: Path, baselines: bool = True) -> tuple[dict[str, Scores], dict]:
    window = WINDOWS[name]
    seeds = pick_seeds(days, window, name)
    feedback_days = days_between(days, window.start, window.end)[:FEEDBACK_DAYS]
    scored_days = days_between(days, window.start, window.end)[FEEDBACK_DAYS:]
    stored = list({p.id: p for ps in seeds.values() for p in ps}.values()) + [
        p for d in feedback_days + scored_days for p in days[d]]
    readers = DigestReaders(work / f"{name}.db", seeds, stored, vectors, embedder)
    sanity = SanityLite(days, days_between(days, window.seed_days[0], window.end)) if baselines else None
    liked: dict[str, list[Paper]] = {cat: [] for cat in READERS}
    counts = {"likes": 0, "dislikes": 0, "reader-days": 0}
    by_id = {p.id: p for ps in days.values() for p in ps}
    methods = ["arXiv's listing order", "keyword counting", "zotero-arxiv-daily", "arxiv-sanity-lite",
               "digest", "zotero-arxiv-daily + likes", "arxiv-sanity-lite + likes", "digest + feedback"]
    results = {m: Scores() for m in methods}
    timing = {m: 0.0 for m in methods}

    def timed(method, make):
        started = time.perf_counter()
        order = make()
        timing[method] += time.perf_counter() - started
        return order

    for cat in READERS:
        for day in feedback_days:
            likes, dislikes = reader_feedback(readers.rank(cat, days[day], day), cat)
            readers.give_feedback(cat, likes, dislikes)
            liked[cat] += [by_id[i] for i in likes]
            counts["likes"] += len(likes)
            counts["dislikes"] += len(dislikes)
    for day in scored_days:
        papers = days[day]
        for cat, (_, words) in READERS.items():
            if not any(p.primary_category == cat for p in papers):
                continue
            counts["reader-days"] += 1
            with_likes = seeds[cat] + liked[cat]
            orders = {
                "arXiv's listing order": lambda: listing_order(papers),
                "keyword counting": lambda: keyword_order(papers, words),
                "zotero-arxiv-daily": lambda: zotero_order(papers, seeds[cat], vectors),
                "arxiv-sanity-lite": lambda: sanity.order(papers, day, seeds[cat]),
                "zotero-arxiv-daily + likes": lambda: zotero_order(papers, with_likes, vectors),
                "arxiv-sanity-lite + likes": lambda: sanity.order(papers, day, with_likes),
                "digest + feedback": lambda: readers.rank(cat, papers, day),
            }
            for method, make in orders.items():
                if baselines or method.startswith("digest"):
                    results[method].add(timed(method, make), cat)
    readers.forget_feedback()  # the same database, now without feedback: digest as a new reader sees it
    for day in scored_days:
        for cat in READERS:
            if any(p.primary_category == cat for p in days[day]):
                results["digest"].add(timed("digest", lambda: readers.rank(cat, days[day], day)), cat)
    counts["scored days"] = len(scored_days)
    counts["timing"] = timing
    return results, counts


def print_table(name: str, results: dict[str, Scores], counts: dict) -> None:
    window = WINDOWS[name]
    print(f"\n{name} window: seeds from {window.seed_days[0]}..{window.seed_days[1]}, feedback on the first "
          f"{FEEDBACK_DAYS} days from {window.start}, scored on the {counts['scored days']} days after, to "
          f"{window.end}: {len(READERS)} readers, {counts['reader-days']} scored reader-days, "
          f"{counts['likes']} likes and {counts['dislikes']} dislikes\n")
    print("| method | nDCG@10 no feedback | recall@20 no feedback | nDCG@10 after 8 days of feedback "
          "| recall@20 after feedback |")
    print("| --- | --- | --- | --- | --- |")
    pairs = [("arXiv's listing order", None), ("keyword counting", None),
             ("zotero-arxiv-daily", "zotero-arxiv-daily + likes"), ("arxiv-sanity-lite", "arxiv-sanity-lite + likes"),
             ("digest", "digest + feedback")]
    for before, after in pairs:
        if not results[before].ndcg:
            continue
        cells = [f"{v:.3f}" for v in results[before].mean()]
        cells += [f"{v:.3f}" for v in results[after].mean()] if after else ["–", "–"]
        print(f"| {before} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="the window the constants were chosen on")
    parser.add_argument("--digest-only", action="store_true", help="skip the baselines (to try a change quickly)")
    args = parser.parse_args()
    name = "dev" if args.dev else "test"
    started = time.monotonic()
    days = load_days()
    vectors = load_vectors([p for ps in days.values() for p in ps])
    embedder = embed.Embedder(EmbeddingSettings())
    print(f"{sum(map(len, days.values()))} papers over {len(days)} days ({time.monotonic() - started:.0f}s to load)")
    with tempfile.TemporaryDirectory() as work:
        results, counts = run_window(name, days, vectors, embedder, Path(work), baselines=not args.digest_only)
    print_table(name, results, counts)
    ours, ours_fb = results["digest"].mean(), results["digest + feedback"].mean()
    if args.digest_only:
        return 0
    svm_fb = results["arxiv-sanity-lite + likes"].mean()
    print(f"\ndigest + feedback - arxiv-sanity-lite + likes: nDCG@10 {ours_fb[0] - svm_fb[0]:+.3f}; "
          f"ratio x{ours_fb[0] / svm_fb[0]:.2f}")
    per_day = {m: t / max(1, counts["reader-days"]) * 1000 for m, t in counts["timing"].items()}
    print("ms per reader-day: " + ", ".join(f"{m} {v:.1f}" for m, v in per_day.items()))
    met = ours[0] >= 0.70 and ours[1] >= 0.85 and ours_fb[0] >= 0.74 and ours_fb[0] - svm_fb[0] >= 0.04
    print(f"targets (no feedback nDCG@10 >= 0.70, recall@20 >= 0.85; feedback nDCG@10 >= 0.74 and +0.04 over "
          f"the SVM): {'met' if met else 'NOT met'}   ({time.monotonic() - started:.0f}s)")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
