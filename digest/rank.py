"""Vectors + profile -> ordered list with a reason per paper. Pure: no I/O, no model, no database.

Rank, never drop: every announced paper comes back exactly once with a rank. Negative signals lower a
paper's score; they never remove it. The score (documented in README.md, "Ranking"):

    interest   = max_i(w_i * cos(p, i))                 # the best-matching interest, by its weight
    examples   = mean_e cos(p, e)                       # seed papers and liked papers, as one centroid
    similarity = (interest + SEED_SHARE * examples) / (1 + SEED_SHARE)   # or the one term a profile has
    score      = similarity
                 - DISLIKE_WEIGHT * max(0, max_d cos(p, d))         # the closest disliked paper
                 + KEYWORD_BONUS * (keywords found)                  # whole words, title or abstract
                 - NEGATIVE_KEYWORD_PENALTY * (negative keywords found)
                 + AUTHOR_BONUS * (1 if a followed author wrote it)

``cos`` is the cosine of L2-normalised vectors. Interests are separate topics, so a paper needs to match one
of them well (the maximum); seed and liked papers are examples of one taste, so they count as their mean.
SEED_SHARE was chosen on days before the benchmark's test days (bench/bench_rank_quality.py).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from .records import Announcement, Paper, Ranked

SEED_SHARE = 0.25
DISLIKE_WEIGHT = 0.3
KEYWORD_BONUS = 0.10
NEGATIVE_KEYWORD_PENALTY = 0.20
AUTHOR_BONUS = 1.0
REPLACEMENTS = ("replace", "replace-cross")


@dataclass
class Anchor:
    """One thing the profile is about, as a vector. ``label`` is how a reason names it."""

    label: str
    vector: np.ndarray
    weight: float = 1.0


@dataclass
class Signals:
    """Everything one profile says about what it wants, ready to score papers against."""

    interests: list[Anchor] = field(default_factory=list)  # label: the interest's text
    seeds: list[Anchor] = field(default_factory=list)  # label: "seed paper 2401.01234"
    liked: list[Anchor] = field(default_factory=list)  # label: "liked paper 2401.01234"
    disliked: list[Anchor] = field(default_factory=list)  # label: "disliked paper 2401.01234"
    keywords: list[str] = field(default_factory=list)
    negative_keywords: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)


@dataclass
class _Scored:
    announcement: Announcement
    score: float
    reason: str
    followed: bool


def rank_papers(announcements: list[Announcement], vectors: dict[str, np.ndarray], signals: Signals, *,
                top: int, rest_order: str = "score") -> list[Ranked]:
    """Every input paper exactly once, ranked 1..n: the top section, the rest, then replacements.

    ``top`` papers (and every paper by a followed author, which can make the section larger) form the
    top section; the rest follow by score, or in arXiv's listing order when ``rest_order`` is "arxiv".
    Ties are broken by arXiv's position, then by id, so the same input always gives the same order.
    """
    if rest_order not in ("score", "arxiv"):
        raise ValueError(f"rest_order must be \"score\" or \"arxiv\", got {rest_order!r}")
    scored = _score_all(announcements, vectors, signals)
    by_score = sorted(scored, key=_score_key)
    listed = [s for s in by_score if s.announcement.kind not in REPLACEMENTS]
    replaced = [s for s in by_score if s.announcement.kind in REPLACEMENTS]
    head = [s for i, s in enumerate(listed) if i < top or s.followed]
    chosen = {id(s) for s in head}
    rest = [s for s in listed if id(s) not in chosen]
    if rest_order == "arxiv":
        rest.sort(key=_listing_key)
        replaced.sort(key=_listing_key)
    sections = [("top", head), ("rest", rest), ("replaced", replaced)]
    ordered = [(section, s) for section, items in sections for s in items]
    return [Ranked(paper=s.announcement.paper, rank=rank, score=round(s.score, 4), reason=s.reason,
                   section=section, kind=s.announcement.kind)
            for rank, (section, s) in enumerate(ordered, start=1)]


def _score_key(s: _Scored):
    # Rounded so that float noise in the last bits never decides an order; then arXiv's order, then id.
    return (-round(s.score, 6), s.announcement.position, s.announcement.paper.id)


def _listing_key(s: _Scored):
    return (s.announcement.position, s.announcement.paper.id)


def _score_all(announcements: list[Announcement], vectors: dict[str, np.ndarray], signals: Signals) -> list[_Scored]:
    matrices = _Matrices.of(signals)
    keywords = [(k, _word_pattern(k)) for k in dict.fromkeys(signals.keywords)]
    negatives = [(k, _word_pattern(k)) for k in dict.fromkeys(signals.negative_keywords)]
    followed = {_person(name): name for name in signals.authors}
    out = []
    for a in announcements:
        vector = vectors.get(a.paper.id)
        score, parts = (0.0, ["not embedded"]) if vector is None else _vector_terms(vector, signals, matrices)
        bonus, more, by_followed = _text_terms(a.paper, keywords, negatives, followed)
        parts += more
        out.append(_Scored(a, score + bonus, "; ".join(parts) or "no interest to compare with", by_followed))
    return out


@dataclass
class _Matrices:
    """The profile's vectors stacked once per ranking, not once per paper."""

    interests: np.ndarray
    weights: np.ndarray
    examples: np.ndarray
    example_weights: np.ndarray
    disliked: np.ndarray

    @classmethod
    def of(cls, signals: Signals) -> "_Matrices":
        return cls(_matrix([a.vector for a in signals.interests]),
                   np.array([a.weight for a in signals.interests], dtype=np.float32),
                   _matrix([a.vector for a in signals.seeds + signals.liked]),
                   np.array([a.weight for a in signals.seeds + signals.liked], dtype=np.float32),
                   _matrix([a.vector for a in signals.disliked]))


def _vector_terms(vector: np.ndarray, signals: Signals, m: _Matrices) -> tuple[float, list[str]]:
    """Similarity to what the profile likes, minus the penalty for resembling what it dislikes."""
    score, parts = 0.0, []
    similarity, closest = _similarity(vector, signals, m.interests, m.weights, m.examples, m.example_weights)
    if closest is not None:
        score += similarity
        parts.append(f"closest to {_name(closest)} ({_cosine(vector, closest):.2f})")
    if len(m.disliked):
        cosines = m.disliked @ vector
        worst = int(np.argmax(cosines))
        if cosines[worst] > 0:
            penalty = DISLIKE_WEIGHT * float(cosines[worst])
            score -= penalty
            parts.append(f"near {signals.disliked[worst].label} ({cosines[worst]:.2f}) -{penalty:.2f}")
    return score, parts


def _text_terms(paper: Paper, keywords: list, negatives: list,
                followed: dict[str, str]) -> tuple[float, list[str], bool]:
    """Keywords, negative keywords and followed authors: (score change, reason parts, by a followed author)."""
    score, parts = 0.0, []
    text = f"{paper.title}\n{paper.abstract}"
    for word, pattern in keywords:
        if pattern.search(text):
            score += KEYWORD_BONUS
            parts.append(f'keyword "{word}" +{KEYWORD_BONUS:.2f}')
    for word, pattern in negatives:
        if pattern.search(text):
            score -= NEGATIVE_KEYWORD_PENALTY
            parts.append(f'negative keyword "{word}" -{NEGATIVE_KEYWORD_PENALTY:.2f}')
    authors = [followed[_person(n)] for n in paper.authors if _person(n) in followed]
    if authors:
        score += AUTHOR_BONUS
        parts.append(f'followed author "{authors[0]}" +{AUTHOR_BONUS:.2f}')
    return score, parts, bool(authors)


def _matrix(vectors: list[np.ndarray]) -> np.ndarray:
    return np.vstack(vectors).astype(np.float32) if vectors else np.zeros((0, 0), dtype=np.float32)


def _similarity(vector: np.ndarray, signals: Signals, interests: np.ndarray, weights: np.ndarray,
                examples: np.ndarray, example_weights: np.ndarray) -> tuple[float, Anchor | None]:
    """The formula's similarity term, and the anchor a person would call the paper closest to: the
    interest or example paper with the highest (weighted) cosine."""
    terms, candidates = [], []
    if len(interests):
        weighted = weights * (interests @ vector)
        best = int(np.argmax(weighted))
        terms.append((1.0, float(weighted[best])))
        candidates.append((float(weighted[best]), signals.interests[best]))
    if len(examples):
        cosines = examples @ vector
        best = int(np.argmax(cosines))
        # Weighted: a library's older entries count less (library.py); seeds and likes weigh 1 each.
        terms.append((SEED_SHARE if terms else 1.0, float(np.average(cosines, weights=example_weights))))
        candidates.append((float(cosines[best]), (signals.seeds + signals.liked)[best]))
    if not terms:
        return 0.0, None
    similarity = sum(share * value for share, value in terms) / sum(share for share, _ in terms)
    closest = max(candidates, key=lambda c: c[0])[1]  # an interest wins a tie: it is listed first
    return similarity, closest


def _cosine(vector: np.ndarray, anchor: Anchor) -> float:
    return float(np.dot(vector, anchor.vector))


def _name(anchor: Anchor) -> str:
    """Interests are quoted text; papers are named by what they are ("seed paper 2401.01234")."""
    return anchor.label if anchor.label.startswith(("seed paper ", "liked paper ")) else f'"{anchor.label}"'


def _word_pattern(word: str) -> re.Pattern:
    # Whole words in any case, a plural "s" allowed: "GNN" finds "GNNs" but not "GNNExplainer".
    return re.compile(rf"(?<!\w){re.escape(word.strip())}s?(?!\w)", re.IGNORECASE)


def _person(name: str) -> str:
    """Names compared without case, accents or extra spaces: "José  García" == "jose garcia"."""
    plain = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return " ".join(plain.casefold().replace(".", ". ").split())
