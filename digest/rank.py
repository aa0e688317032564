"""Vectors + profile -> ordered list with a reason per paper. Pure: no I/O, no model, no database.

Rank, never drop: every announced paper comes back exactly once with a rank. Negative signals lower a
paper's score; they never remove it. The score (documented in docs/ranking.md):

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
from .records import Announcement, Paper, Ranked, is_replacement

EXAMPLE_SHARE = 1.0
FEEDBACK_WEIGHT = 1.0
FEEDBACK_RAMP = 5
BACKGROUND_MIN = 20  # papers a day needs before its mean vector is taken as the background
DISLIKE_WEIGHT = 1.0
DISLIKE_NEAR = 0.5
KEYWORD_BONUS = 0.10
NEGATIVE_KEYWORD_PENALTY = 0.20
AUTHOR_BONUS = 1.0
CLOSE_TO_NOTHING = 0.10  # a similarity below this is about nothing the profile names


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
class Part:
    """One term of a paper's score, as its reason names it: the parts of a reason add up to the score."""

    label: str
    value: float
    keep: bool = False  # shown even at 0: it says what was not done ("not embedded yet")


@dataclass
class _Scored:
    announcement: Announcement
    score: float
    parts: list[Part]
    followed: bool


def rank_papers(announcements: list[Announcement], vectors: dict[str, np.ndarray], signals: Signals, *,
                top: int, rest_order: str = "score", words: learn.Words | None = None) -> list[Ranked]:
    """Every input paper exactly once, ranked 1..n: the top section, the rest, then replacements.

    The top section is the first ``top`` papers by score, longer when a paper by a followed author ranks
    below them (it then takes every paper down to that one, so scores never rise down the page); the rest
    follow by score, or in arXiv's listing order when ``rest_order`` is "arxiv". Ties are broken by
    arXiv's position, then by id, so the same input always gives the same order. ``words``: one
    :class:`learn.Words` for every profile of a run, so the learned models read each text once.
    """
    if rest_order not in ("score", "arxiv"):
        raise ValueError(f"rest_order must be \"score\" or \"arxiv\", got {rest_order!r}")
    scored = _score_all(announcements, vectors, signals, words)
    by_score = sorted(scored, key=_score_key)
    listed = [s for s in by_score if not is_replacement(s.announcement.kind)]
    replaced = [s for s in by_score if is_replacement(s.announcement.kind)]
    cut = max([min(top, len(listed))] + [i + 1 for i, s in enumerate(listed) if s.followed])
    head, rest = listed[:cut], listed[cut:]
    if rest_order == "arxiv":
        rest.sort(key=_listing_key)
        replaced.sort(key=_listing_key)
    sections = [("top", head), ("rest", rest), ("replaced", replaced)]
    ordered = [(section, s) for section, items in sections for s in items]
    return [Ranked(paper=s.announcement.paper, rank=rank, score=round(s.score, 4),
                   reason=reason_text(s.parts, round(s.score, 4)), section=section, kind=s.announcement.kind)
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
        parts = embedded.parts.get(a.paper.id) or [Part("not embedded yet, so not compared", 0.0, keep=True)]
        more, by_followed = _text_terms(a.paper, keywords, negatives, followed)
        out.append(_Scored(a, sum(p.value for p in parts + more), parts + more, by_followed))
    return out


# -- the reason: the score's parts, in words ----------------------------------------------------------

def reason_text(parts: list[Part], score: float) -> str:
    """``about "X" +0.52, common to today's papers -0.21, keyword "RAG" +0.10``: every part of the score
    with its value, rounded so that the shown values add up to the shown score exactly. A part too small
    to show (under 0.005) is left out unless it says what was not done; what rounding and the left-out
    parts leave over moves the parts that rounding moved most, a cent each (largest remainder), so a
    fixed bonus keeps its value and no part is off by more than a cent."""
    shown = [p for p in parts if p.keep or abs(p.value) >= 0.005] or parts[:1]
    if not shown:
        return ""
    cents = [round(p.value * 100) for p in shown]
    left = round(float(f"{score:.2f}") * 100) - sum(cents)
    step = 1 if left > 0 else -1
    order = sorted(range(len(shown)), key=lambda i: (shown[i].value * 100 - cents[i]) * step, reverse=True)
    for n in range(abs(left)):
        cents[order[n % len(order)]] += step
    return ", ".join(f"{p.label} {_signed(c)}" for p, c in zip(shown, cents))


def reason_values(reason: str) -> list[float]:
    """The values of a reason's parts, as :func:`reason_text` writes them (for tests and readers' tools)."""
    return [float(v) for v in re.findall(r"(?<= )([+-]\d+\.\d\d)(?=, |$)", reason)]


def _signed(cents: int) -> str:
    return f"{'-' if cents < 0 else '+'}{abs(cents) // 100}.{abs(cents) % 100:02d}"


@dataclass
class _Embedded:
    """The vector parts of every embedded paper's score, computed for the whole day at once: the
    background, the learned model and the spread are properties of the day, not of one paper."""

    parts: dict[str, list[Part]]

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
        similarity = _Similarity.of(day, background, signals)
        learned = _learned(day, background, [a.paper for a in papers], signals, similarity.total, words)
        parts = {}
        for i, a in enumerate(papers):
            paper_parts = similarity.parts(i)
            if learned is not None and abs(learned[i]) >= 0.005:
                paper_parts.append(Part("learned from your likes and dislikes", float(learned[i])))
            if signals.disliked:
                paper_parts += _dislike_penalty(day[i], signals)
            parts[a.paper.id] = paper_parts
        return cls(parts)


@dataclass
class _Similarity:
    """The formula's similarity for every paper of the day, and what a reader is told of it: the closest
    interest and the seed and liked papers, each by its plain cosine, and what all of the day's papers
    share (the background) taken off. Below CLOSE_TO_NOTHING a paper is close to nothing the profile names."""

    total: np.ndarray  # the similarity term of each paper's score
    terms: list[tuple[float, np.ndarray, list[str]]]  # each term's share, plain cosine and label, per paper

    @classmethod
    def of(cls, day: np.ndarray, background: np.ndarray, signals: Signals) -> "_Similarity":
        papers = learn.centred(day, background)
        terms = []
        if signals.interests:
            interests = np.vstack([a.vector for a in signals.interests])
            weights = np.array([a.weight for a in signals.interests], dtype=np.float32)
            centred = papers @ learn.centred(interests, background).T * weights
            best = centred.argmax(axis=1)
            rows = np.arange(len(day))
            plain = (day @ interests.T * weights)[rows, best]
            terms.append((1.0, centred[rows, best], plain, [f'about "{signals.interests[j].label}"' for j in best]))
        examples = signals.seeds + signals.liked
        if examples:
            # Weighted: a library's older entries count less (library.py); seeds and likes weigh 1 each.
            mean = np.average([a.vector for a in examples], axis=0, weights=[a.weight for a in examples])
            plain = day @ learn.centred(mean, np.zeros_like(mean))[0]
            label = f"like your {_example_kinds(examples)} papers"
            terms.append((EXAMPLE_SHARE if terms else 1.0, papers @ learn.centred(mean, background)[0], plain,
                          [label] * len(day)))
        if not terms:
            return cls(np.zeros(len(day), dtype=np.float32), [])
        shares = sum(share for share, *_ in terms)
        total = sum(share * centred for share, centred, *_ in terms) / shares
        return cls(total, [(share / shares, plain, labels) for share, _, plain, labels in terms])

    def parts(self, i: int) -> list[Part]:
        if not self.terms:
            return [Part("no interest or paper to compare with", 0.0, keep=True)]
        total = float(self.total[i])
        if total < CLOSE_TO_NOTHING:
            return [Part("close to none of your interests or papers", total, keep=True)]
        parts = [Part(labels[i], share * float(plain[i])) for share, plain, labels in self.terms]
        # What the background took off, so the parts add up to the similarity exactly; on a day too small
        # for a background it is float noise, under what a reason shows.
        shared = total - sum(p.value for p in parts)
        return parts + [Part("common to today's papers" if shared < 0 else "distinct from today's papers", shared)]


def _example_kinds(examples: list[Anchor]) -> str:
    """"seed", "seed and liked", "seed, library and liked": the kinds of paper that make the profile's taste."""
    kinds = list(dict.fromkeys(a.label.split(" ", 1)[0] for a in examples))
    return kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} and {kinds[-1]}"


def _learned(day: np.ndarray, background: np.ndarray, papers: list[Paper], signals: Signals,
             similarity: np.ndarray, words: learn.Words | None) -> np.ndarray | None:
    """The learned term for every paper of the day, or None before the first like or dislike."""
    feedback = len(signals.liked) + len(signals.disliked)
    if not feedback:
        return None
    examples = ([learn.Example(a.vector, a.text, True) for a in signals.seeds + signals.liked]
                + [learn.Example(a.vector, a.text, False, learn.DISLIKED_WEIGHT) for a in signals.disliked])
    scores = learn.learned_scores(examples, day, [p.text for p in papers], background, words)
    if scores is None:
        return None
    spread = float(similarity.std()) or 1.0
    z = (scores - scores.mean()) / (scores.std() or 1.0)
    return FEEDBACK_WEIGHT * feedback / (feedback + FEEDBACK_RAMP) * spread * z


def _dislike_penalty(vector: np.ndarray, signals: Signals) -> list[Part]:
    """A paper close to a disliked one goes down at once, by how much closer than DISLIKE_NEAR it is: the
    learned model weighs a first dislike lightly, and a reader who dislikes a paper expects its twins to
    sink in the next digest."""
    cosines = np.vstack([a.vector for a in signals.disliked]) @ vector
    worst = int(np.argmax(cosines))
    if cosines[worst] <= DISLIKE_NEAR:
        return []
    return [Part(f"close to your {signals.disliked[worst].label}", -DISLIKE_WEIGHT * float(cosines[worst] - DISLIKE_NEAR))]


def _text_terms(paper: Paper, keywords: list, negatives: list,
                followed: dict[str, str]) -> tuple[list[Part], bool]:
    """Keywords, negative keywords and followed authors: (reason parts, by a followed author)."""
    parts = []
    text = paper.text
    for word, pattern in keywords:
        if pattern.search(text):
            parts.append(Part(f'keyword "{word}"', KEYWORD_BONUS))
    for word, pattern in negatives:
        if pattern.search(text):
            parts.append(Part(f'negative keyword "{word}"', -NEGATIVE_KEYWORD_PENALTY))
    authors = [followed[_person(n)] for n in paper.authors if _person(n) in followed]
    if authors:
        parts.append(Part(f'followed author "{authors[0]}"', AUTHOR_BONUS))
    return parts, bool(authors)


def _word_pattern(word: str) -> re.Pattern:
    # Whole words in any case, a plural "s" allowed: "GNN" finds "GNNs" but not "GNNExplainer".
    return re.compile(rf"(?<!\w){re.escape(word.strip())}s?(?!\w)", re.IGNORECASE)


def _person(name: str) -> str:
    """Names compared without case, accents or extra spaces: "José  García" == "jose garcia"."""
    plain = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return " ".join(plain.casefold().replace(".", ". ").split())
