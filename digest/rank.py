"""Vectors + profile -> ordered list with a reason per paper. Pure: no I/O, no model, no database.

Rank, never drop: every announced paper comes back exactly once with a rank. Negative signals lower a
paper's score; they never remove it. The score (documented in README.md, "Ranking"):

    c(p, x)    = cos(p - m, x - m)          # m: the mean vector of the day's papers, what they all share
                                            #    (0 on a day of fewer than BACKGROUND_MIN papers)
    interest   = max_i(w_i * c(p, i))                   # the best-matching interest, by its weight
    examples   = c(p, mean of the seed and liked papers) # one taste, one centroid
    similarity = (interest + EXAMPLE_SHARE * examples) / (1 + EXAMPLE_SHARE)   # or the one term there is
    learned    = FEEDBACK_WEIGHT * n / (n + FEEDBACK_RAMP) * spread * z(model(p))   # once there is feedback
    score      = similarity + learned
                 - DISLIKE_WEIGHT * max(0, cos(p, closest disliked paper) - DISLIKE_NEAR)
                 + KEYWORD_BONUS * (keywords found)                  # whole words, title or abstract
                 - NEGATIVE_KEYWORD_PENALTY * (negative keywords found)
                 + AUTHOR_BONUS * (1 if a followed author wrote it)

``model`` is the profile's own classifier (learn.py), trained on its seeds and likes against its dislikes
and the day's own papers; ``z`` puts its scores on the day's scale (mean 0, standard
deviation 1), ``spread`` is the standard deviation of the day's similarity and ``n`` the number of liked and
disliked papers, so a first like nudges and forty likes count fully. The dislike penalty acts at once, on
near twins of a disliked paper only (plain cosine above DISLIKE_NEAR).

Interests are separate topics, so a paper needs to match one of them well (the maximum); seed and liked
papers are examples of one taste, so they count as their mean. Every constant was chosen on the first two
months of bench/bench_rank_learning.py and reported on the last two.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from . import learn
from .records import Announcement, Paper, Ranked

EXAMPLE_SHARE = 1.0
FEEDBACK_WEIGHT = 1.0
FEEDBACK_RAMP = 5
BACKGROUND_MIN = 20  # papers a day needs before its mean vector is taken as the background
DISLIKE_WEIGHT = 1.0
DISLIKE_NEAR = 0.5
KEYWORD_BONUS = 0.10
NEGATIVE_KEYWORD_PENALTY = 0.20
AUTHOR_BONUS = 1.0
REPLACEMENTS = ("replace", "replace-cross")


@dataclass
class Anchor:
    """One thing the profile is about, as a vector. ``label`` is how a reason names it; ``text`` is a paper's
    title and abstract, which the learned model reads (empty for an interest)."""

    label: str
    vector: np.ndarray
    weight: float = 1.0
    text: str = ""


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
                top: int, rest_order: str = "score", words: learn.Words | None = None) -> list[Ranked]:
    """Every input paper exactly once, ranked 1..n: the top section, the rest, then replacements.

    ``top`` papers (and every paper by a followed author, which can make the section larger) form the
    top section; the rest follow by score, or in arXiv's listing order when ``rest_order`` is "arxiv".
    Ties are broken by arXiv's position, then by id, so the same input always gives the same order.
    ``words``: one :class:`learn.Words` for every profile of a run, so the learned models read each text once.
    """
    if rest_order not in ("score", "arxiv"):
        raise ValueError(f"rest_order must be \"score\" or \"arxiv\", got {rest_order!r}")
    scored = _score_all(announcements, vectors, signals, words)
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


def _score_all(announcements: list[Announcement], vectors: dict[str, np.ndarray], signals: Signals,
               words: learn.Words | None) -> list[_Scored]:
    embedded = _Embedded.of(announcements, vectors, signals, words)
    keywords = [(k, _word_pattern(k)) for k in dict.fromkeys(signals.keywords)]
    negatives = [(k, _word_pattern(k)) for k in dict.fromkeys(signals.negative_keywords)]
    followed = {_person(name): name for name in signals.authors}
    out = []
    for a in announcements:
        score, parts = embedded.terms.get(a.paper.id, (0.0, ["not embedded"]))
        bonus, more, by_followed = _text_terms(a.paper, keywords, negatives, followed)
        out.append(_Scored(a, score + bonus, "; ".join(parts + more) or "no interest to compare with", by_followed))
    return out


@dataclass
class _Embedded:
    """The vector part of every embedded paper's score, computed for the whole day at once: the background,
    the learned model and the spread are properties of the day, not of one paper."""

    terms: dict[str, tuple[float, list[str]]]

    @classmethod
    def of(cls, announcements: list[Announcement], vectors: dict[str, np.ndarray], signals: Signals,
           words: learn.Words | None = None) -> "_Embedded":
        # Sorted, so the same papers in any input order give the same matrices and the same model.
        papers = sorted({a.paper.id: a for a in announcements if a.paper.id in vectors}.values(),
                        key=lambda a: (a.position, a.paper.id))
        if not papers:
            return cls({})
        day = np.vstack([vectors[a.paper.id] for a in papers]).astype(np.float32)
        # Fewer papers than that say too little about what a day's papers share: plain cosines then.
        background = day.mean(axis=0) if len(day) >= BACKGROUND_MIN else np.zeros(day.shape[1], np.float32)
        similarity = _similarity(day, background, signals)
        learned = _learned(day, background, [a.paper for a in papers], signals, similarity, words)
        closest = _closest(day, signals)
        terms = {}
        for i, a in enumerate(papers):
            score, parts = float(similarity[i]), []
            if closest is not None:
                parts.append(closest[i])
            if learned is not None and abs(learned[i]) >= 0.005:
                score += float(learned[i])
                parts.append(f"{'like' if learned[i] > 0 else 'unlike'} papers you liked {learned[i]:+.2f}")
            if signals.disliked:
                penalty, part = _dislike_penalty(day[i], signals)
                score -= penalty
                parts += part
            terms[a.paper.id] = (score, parts)
        return cls(terms)


def _similarity(day: np.ndarray, background: np.ndarray, signals: Signals) -> np.ndarray:
    """The formula's similarity for every paper of the day, with the day's background removed."""
    papers = learn.centred(day, background)
    terms = []
    if signals.interests:
        interests = learn.centred(np.vstack([a.vector for a in signals.interests]), background)
        weights = np.array([a.weight for a in signals.interests], dtype=np.float32)
        terms.append((1.0, (papers @ interests.T * weights).max(axis=1)))
    examples = signals.seeds + signals.liked
    if examples:
        # Weighted: a library's older entries count less (library.py); seeds and likes weigh 1 each.
        centroid = learn.centred(np.average([a.vector for a in examples], axis=0,
                                            weights=[a.weight for a in examples]), background)[0]
        terms.append((EXAMPLE_SHARE if terms else 1.0, papers @ centroid))
    if not terms:
        return np.zeros(len(day), dtype=np.float32)
    return sum(share * values for share, values in terms) / sum(share for share, _ in terms)


def _learned(day: np.ndarray, background: np.ndarray, papers: list[Paper], signals: Signals,
             similarity: np.ndarray, words: learn.Words | None) -> np.ndarray | None:
    """The learned term for every paper of the day, or None before the first like or dislike."""
    feedback = len(signals.liked) + len(signals.disliked)
    if not feedback:
        return None
    examples = ([learn.Example(a.vector, a.text, True) for a in signals.seeds + signals.liked]
                + [learn.Example(a.vector, a.text, False, learn.DISLIKED_WEIGHT) for a in signals.disliked])
    scores = learn.learned_scores(examples, day, [f"{p.title}\n{p.abstract}" for p in papers], background, words)
    if scores is None:
        return None
    spread = float(similarity.std()) or 1.0
    z = (scores - scores.mean()) / (scores.std() or 1.0)
    return FEEDBACK_WEIGHT * feedback / (feedback + FEEDBACK_RAMP) * spread * z


def _closest(day: np.ndarray, signals: Signals) -> list[str] | None:
    """What a person would call each paper closest to: the interest (by weighted cosine) or the seed or
    liked paper with the highest cosine, as "about ..." or "like ..."; an interest wins a tie."""
    anchors = signals.interests + signals.seeds + signals.liked
    if not anchors:
        return None
    weights = np.array([a.weight for a in signals.interests] + [1.0] * (len(anchors) - len(signals.interests)))
    cosines = day @ np.vstack([a.vector for a in anchors]).T
    best = np.argmax(cosines * weights, axis=1)
    return [f"{_name(anchors[j])} ({cosines[i, j]:.2f})" for i, j in enumerate(best)]


def _dislike_penalty(vector: np.ndarray, signals: Signals) -> tuple[float, list[str]]:
    """A paper close to a disliked one goes down at once, by how much closer than DISLIKE_NEAR it is: the
    learned model weighs a first dislike lightly, and a reader who dislikes a paper expects its twins to
    sink in the next digest."""
    cosines = np.vstack([a.vector for a in signals.disliked]) @ vector
    worst = int(np.argmax(cosines))
    if cosines[worst] <= DISLIKE_NEAR:
        return 0.0, []
    penalty = DISLIKE_WEIGHT * float(cosines[worst] - DISLIKE_NEAR)
    return penalty, [f"like your {signals.disliked[worst].label} ({cosines[worst]:.2f}) -{penalty:.2f}"]


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


def _name(anchor: Anchor) -> str:
    """Interests are quoted topics ("about ..."); papers are named by what they are ("like seed paper ...")."""
    if anchor.label.startswith("liked paper "):
        return f"like your {anchor.label}"
    if anchor.label.startswith("seed paper "):
        return f"like {anchor.label}"
    return f'about "{anchor.label}"'


def _word_pattern(word: str) -> re.Pattern:
    # Whole words in any case, a plural "s" allowed: "GNN" finds "GNNs" but not "GNNExplainer".
    return re.compile(rf"(?<!\w){re.escape(word.strip())}s?(?!\w)", re.IGNORECASE)


def _person(name: str) -> str:
    """Names compared without case, accents or extra spaces: "José  García" == "jose garcia"."""
    plain = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return " ".join(plain.casefold().replace(".", ". ").split())
