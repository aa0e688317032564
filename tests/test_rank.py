"""Ranking is pure: hand-made vectors give exact scores and reasons; nothing is ever dropped."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest
from feeds import listing_papers

from digest.rank import Anchor, Signals, rank_papers, reason_values
from digest.records import Announcement, Paper

DAY = dt.date(2026, 6, 23)


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def announced(paper_id: str, position: int, title: str = "A paper", authors=("Ann Author",), kind: str = "new",
              abstract: str = "An abstract.") -> Announcement:
    paper = Paper(id=paper_id, version=1, title=title, abstract=abstract, authors=list(authors),
                  categories=["cs.LG"], primary_category="cs.LG")
    return Announcement(paper, DAY, kind, position)


@pytest.fixture
def signals() -> Signals:
    return Signals(
        interests=[Anchor("graph neural networks", unit(1, 0, 0))],
        seeds=[Anchor("seed paper 2401.00001", unit(0, 1, 0))],
        disliked=[Anchor("disliked paper 2401.00009", unit(0, 0, 1))],
        keywords=["GNN"],
        negative_keywords=["survey"],
        authors=["Jose Garcia"],
    )


@pytest.fixture
def day():
    items = [
        announced("2606.00001", 0, "Near the seed"),
        announced("2606.00002", 1, "Scalable GNNs for molecules"),
        announced("2606.00003", 2, "A survey of everything", authors=("José  García", "Bo Li")),
        announced("2606.00004", 3, "Like the paper you disliked"),
    ]
    vectors = {"2606.00001": unit(0.6, 0.8, 0), "2606.00002": unit(1, 0, 0), "2606.00003": unit(0, 0, 1),
               "2606.00004": unit(0.8, 0, 0.6)}
    return items, vectors


def table(ranked) -> list[tuple]:
    return [(r.rank, r.paper.id, r.score, r.section, r.reason) for r in ranked]


def test_scores_and_reasons_for_a_constructed_case(day, signals):
    # Four papers: too few for a background (rank.BACKGROUND_MIN), so similarities are plain cosines;
    # one dislike trains the model, which a single piece of feedback moves only a little.
    items, vectors = day
    ranked = rank_papers(items, vectors, signals, top=1)
    assert table(ranked) == [
        (1, "2606.00001", 0.7708, "top",
         'about "graph neural networks" +0.30, like your seed papers +0.40, learned from your likes and dislikes +0.07'),
        (2, "2606.00002", 0.5757, "top",
         'about "graph neural networks" +0.50, learned from your likes and dislikes -0.02, keyword "GNN" +0.10'),
        (3, "2606.00003", 0.2933, "top",
         "close to none of your interests or papers +0.00, learned from your likes and dislikes -0.01, "
         'close to your disliked paper 2401.00009 -0.50, negative keyword "survey" -0.20, '
         'followed author "Jose Garcia" +1.00'),
        (4, "2606.00004", 0.2603, "rest",
         'about "graph neural networks" +0.40, learned from your likes and dislikes -0.04, '
         "close to your disliked paper 2401.00009 -0.10"),
    ]
    # The followed author's paper ranks third: the top section runs down to it, so no score rises down the page.
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    for r in ranked:
        assert sum(reason_values(r.reason)) == pytest.approx(float(f"{r.score:.2f}"), abs=1e-9)


def test_negative_signals_reorder_and_never_remove(day, signals):
    items, vectors = day
    liked = dict(interests=signals.interests, seeds=signals.seeds)
    order = lambda s: [r.paper.id for r in rank_papers(items, vectors, s, top=2)]
    assert order(Signals(**liked)) == ["2606.00001", "2606.00002", "2606.00004", "2606.00003"]
    assert order(Signals(**liked, negative_keywords=["molecules"])) == [
        "2606.00001", "2606.00004", "2606.00002", "2606.00003"]
    assert order(Signals(**liked, disliked=[Anchor("disliked paper 2606.00001", unit(0.6, 0.8, 0))])) == [
        "2606.00002", "2606.00004", "2606.00001", "2606.00003"]


def test_a_followed_authors_paper_is_always_in_the_top_section(day, signals):
    items, vectors = day
    ranked = rank_papers(items, vectors, Signals(interests=signals.interests, authors=["jose garcia"]), top=0)
    assert [(r.paper.id, r.section) for r in ranked if r.section == "top"] == [("2606.00002", "top"),
                                                                              ("2606.00003", "top")]
    assert len(ranked) == 4


def test_followed_authors_make_the_top_section_larger(day, signals):
    items, vectors = day
    ranked = rank_papers(items, vectors, Signals(interests=signals.interests, authors=["Ann Author"]), top=1)
    assert [(r.paper.id, r.score, r.section) for r in ranked] == [
        ("2606.00002", 2.0, "top"), ("2606.00004", 1.8, "top"), ("2606.00001", 1.6, "top"),
        ("2606.00003", 0.0, "rest")]


def test_ties_are_broken_by_arxiv_position_then_id_whatever_the_input_order(signals):
    items = [announced("2606.00009", 2), announced("2606.00003", 1), announced("2606.00001", 2),
             announced("2606.00002", 0)]
    vectors = {a.paper.id: unit(1, 1, 0) for a in items}
    expected = ["2606.00002", "2606.00003", "2606.00001", "2606.00009"]
    for seed in range(5):
        shuffled = items[:]
        random.Random(seed).shuffle(shuffled)
        assert [r.paper.id for r in rank_papers(shuffled, vectors, signals, top=2)] == expected


def test_the_rest_can_follow_arxivs_order(day, signals):
    items, vectors = day
    ranked = rank_papers(items, vectors, signals, top=0, rest_order="arxiv")
    assert [(r.rank, r.paper.id, r.section) for r in ranked] == [
        (1, "2606.00001", "top"), (2, "2606.00002", "top"), (3, "2606.00003", "top"), (4, "2606.00004", "rest")]
    with pytest.raises(ValueError, match='rest_order must be "score" or "arxiv", got \'date\''):
        rank_papers(items, vectors, signals, top=1, rest_order="date")


def test_replacements_come_last_in_their_own_section(signals):
    items = [announced("2606.00001", 0, kind="replace"), announced("2606.00002", 1),
             announced("2606.00003", 2, kind="replace-cross"), announced("2606.00004", 3, kind="cross")]
    vectors = {"2606.00001": unit(1, 0, 0), "2606.00002": unit(0, 0, 1), "2606.00003": unit(0.9, 0.1, 0),
               "2606.00004": unit(0.5, 0.5, 0.5)}
    ranked = rank_papers(items, vectors, signals, top=5)
    assert [(r.rank, r.paper.id, r.section, r.kind) for r in ranked] == [
        (1, "2606.00004", "top", "cross"), (2, "2606.00002", "top", "new"),
        (3, "2606.00003", "replaced", "replace-cross"), (4, "2606.00001", "replaced", "replace")]


def test_a_paper_without_a_vector_is_still_ranked(signals):
    items = [announced("2606.00001", 0), announced("2606.00002", 1, title="GNN tricks")]
    ranked = rank_papers(items, {"2606.00001": unit(1, 0, 0)}, Signals(interests=signals.interests, keywords=["GNN"]),
                         top=1)
    assert table(ranked) == [
        (1, "2606.00001", 1.0, "top", 'about "graph neural networks" +1.00'),
        (2, "2606.00002", 0.1, "rest", 'not embedded yet, so not compared +0.00, keyword "GNN" +0.10'),
    ]


def test_keywords_are_whole_words_in_any_case_with_plurals():
    signals = Signals(keywords=["LLM", "graph"])
    items = [announced("2606.00001", 0, "LLMs as judges"), announced("2606.00002", 1, "Paragraph parsing"),
             announced("2606.00003", 2, abstract="Knowledge-graph completion with an llm.")]
    ranked = rank_papers(items, {}, signals, top=0)
    assert table(ranked) == [
        (1, "2606.00003", 0.2, "rest",
         'not embedded yet, so not compared +0.00, keyword "LLM" +0.10, keyword "graph" +0.10'),
        (2, "2606.00001", 0.1, "rest", 'not embedded yet, so not compared +0.00, keyword "LLM" +0.10'),
        (3, "2606.00002", 0.0, "rest", "not embedded yet, so not compared +0.00"),
    ]


def test_weights_scale_an_interest():
    items = [announced("2606.00001", 0), announced("2606.00002", 1)]
    vectors = {"2606.00001": unit(1, 0, 0), "2606.00002": unit(0, 1, 0)}
    even = Signals(interests=[Anchor("vision", unit(1, 0, 0)), Anchor("speech", unit(0, 1, 0))])
    heavy = Signals(interests=[Anchor("vision", unit(1, 0, 0)), Anchor("speech", unit(0, 1, 0), weight=2.0)])
    assert [r.score for r in rank_papers(items, vectors, even, top=1)] == [1.0, 1.0]
    assert table(rank_papers(items, vectors, heavy, top=1)) == [
        (1, "2606.00002", 2.0, "top", 'about "speech" +2.00'),
        (2, "2606.00001", 1.0, "rest", 'about "vision" +1.00'),
    ]


def test_an_empty_day_ranks_to_nothing(signals):
    assert rank_papers([], {}, signals, top=15) == []


def test_every_paper_of_a_real_500_paper_day_is_ranked_exactly_once(signals):
    rows = listing_papers(DAY)
    assert len(rows) > 500
    items = [announced(r["id"], i, r["title"], r["authors"], abstract=r["abstract"]) for i, r in enumerate(rows)]
    # rank.py only needs vectors of the right shape here; test_embed.py ranks this day with the real model.
    generator = np.random.default_rng(7)
    vectors = {a.paper.id: unit(*generator.normal(size=3)) for a in items}
    for rest_order in ("score", "arxiv"):
        ranked = rank_papers(items, vectors, signals, top=15, rest_order=rest_order)
        assert [r.rank for r in ranked] == list(range(1, len(rows) + 1))
        assert sorted(r.paper.id for r in ranked) == sorted(r["id"] for r in rows)
        assert len({r.paper.id for r in ranked}) == len(rows)
        assert [r.section for r in ranked[:15]] == ["top"] * 15 and {r.section for r in ranked[15:]} == {"rest"}
        scores = [r.score for r in ranked[15:]]
        assert scores == sorted(scores, reverse=True) or rest_order == "arxiv"
