"""A reader's likes and dislikes change the next digest, through the path `digest like` and `digest run` use:
storage.feedback.set_feedback -> the feedback table -> profiles.profile_signals -> rank.rank_papers, with the bundled
model on real papers of two listing days. The papers' own primary categories tell which are alike."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import statistics

import numpy as np
import pytest
from feeds import listing_papers

from digest import embed, learn, profiles, rank
from digest.config import EmbeddingSettings, parse_settings
from digest.records import Announcement, Paper
from digest.storage import db as dbm
from digest.storage import papers as paper_rows
from digest.storage.feedback import set_feedback

FIRST, NEXT = dt.date(2026, 6, 23), dt.date(2026, 6, 26)
PER_DAY = 60  # enough papers of each kind to compare, few enough to embed in seconds


def paper_of(row: dict) -> Paper:
    return Paper(id=row["id"], version=1, title=row["title"], abstract=row["abstract"], authors=row["authors"],
                 categories=row["categories"], primary_category=row["primary_category"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two real days stored and embedded once for the module (embedding is the slow part); each test
    gets its own copy of the database."""
    folder = tmp_path_factory.mktemp("learning")
    days = {day: [paper_of(r) for r in listing_papers(day)[:PER_DAY]] for day in (FIRST, NEXT)}
    db = dbm.open_db(folder / "digest.db")
    for day, papers in days.items():
        paper_rows.save_announcements(db, [Announcement(p, day, "new", i) for i, p in enumerate(papers)], "listing")
    settings = parse_settings(f'[storage]\npath = "{folder / "digest.db"}"\n[profiles.any]\ninterests = ["x"]\n')
    embedder = embed.Embedder(EmbeddingSettings())
    vectors = embed.embed_papers(db, [p for ps in days.values() for p in ps], settings, embedder=embedder)
    db.conn.close()
    return folder / "digest.db", days, vectors, embedder


@pytest.fixture
def two_days(tmp_path, built):
    """The two days, and a profile about language models with two seed papers, in a fresh database."""
    source, days, vectors, embedder = built
    shutil.copy(source, tmp_path / "digest.db")
    db = dbm.open_db(tmp_path / "digest.db")
    seeds = [p.id for p in days[FIRST] if p.primary_category == "cs.CL"][:2]
    settings = parse_settings(f'[storage]\npath = "{tmp_path / "digest.db"}"\n[profiles.me]\n'
                              f'interests = ["large language models"]\nseed_papers = {seeds!r}\n'.replace("'", '"'))
    return db, settings, days, vectors, embedder


def digest_of(two_days, announcements=None, words=None) -> list:
    """The next day's ranking as `digest run` makes it for profile "me"."""
    db, settings, days, vectors, embedder = two_days
    signals, warnings = profiles.profile_signals(db, settings, settings.profiles["me"], embedder=embedder)
    assert warnings == []
    items = announcements or [Announcement(p, NEXT, "new", i) for i, p in enumerate(days[NEXT])]
    return rank.rank_papers(items, vectors, signals, top=15, words=words)


def mean_rank(ranked, category: str) -> float:
    return statistics.mean(r.rank for r in ranked if r.paper.primary_category == category)


def first_of(two_days, category: str, count: int) -> list[str]:
    return [p.id for p in two_days[2][FIRST] if p.primary_category == category][:count]


def assert_whole(ranked, two_days) -> None:
    assert sorted(r.paper.id for r in ranked) == sorted(p.id for p in two_days[2][NEXT])
    assert [r.rank for r in ranked] == list(range(1, len(two_days[2][NEXT]) + 1))


@pytest.mark.slow
def test_liked_papers_bring_their_neighbours_up_in_the_next_digest(two_days):
    before = digest_of(two_days)
    for paper_id in first_of(two_days, "cs.IT", 4):  # information theory: far from language models
        set_feedback(two_days[0], paper_id, 1, "me")
    after = digest_of(two_days)

    assert_whole(after, two_days)
    assert mean_rank(after, "cs.IT") < mean_rank(before, "cs.IT") - 5
    risen = min((r for r in after if r.paper.primary_category == "cs.IT"), key=lambda r: r.rank)
    assert "liked" in risen.reason, risen.reason


@pytest.mark.slow
def test_disliked_papers_sink_their_neighbours_but_keep_them_in_the_digest(two_days):
    db, _, days, vectors, _ = two_days
    first = digest_of(two_days, [Announcement(p, FIRST, "new", i) for i, p in enumerate(days[FIRST])])
    # The reader dislikes the three vision papers highest in today's digest: not what they read about.
    disliked = [r.paper.id for r in first if r.paper.primary_category == "cs.CV"][:3]
    neighbours = nearest(two_days, disliked, 10)
    before = digest_of(two_days)
    for paper_id in disliked:
        set_feedback(db, paper_id, -1, "me")
    after = digest_of(two_days)

    assert_whole(after, two_days)
    rank_of = lambda ranked: statistics.mean(r.rank for r in ranked if r.paper.id in neighbours)
    # Three dislikes move them a little (about one place here): the learned model weighs feedback by how
    # much there is, and only near twins of a disliked paper (test_rank.py) take the direct penalty.
    assert rank_of(after) > rank_of(before), (rank_of(before), rank_of(after))


def nearest(two_days, paper_ids: list[str], count: int) -> set[str]:
    """The next day's papers closest (cosine) to any of these."""
    _, _, days, vectors, _ = two_days
    anchors = np.vstack([vectors[i] for i in paper_ids])
    closeness = {p.id: float((anchors @ vectors[p.id]).max()) for p in days[NEXT]}
    return set(sorted(closeness, key=closeness.get, reverse=True)[:count])


@pytest.mark.slow
def test_reasons_name_the_interest_and_the_liked_paper(two_days):
    liked = first_of(two_days, "cs.IT", 4)
    for paper_id in liked:
        set_feedback(two_days[0], paper_id, 1, "me")
    reasons = [r.reason for r in digest_of(two_days)]
    assert any(reason.startswith('about "large language models" +0.') for reason in reasons), reasons[:5]
    assert any(", like your seed and liked papers +0." in reason for reason in reasons)
    assert any("learned from your likes and dislikes +0." in reason for reason in reasons)


@pytest.mark.slow
def test_the_same_feedback_and_papers_give_the_same_order_in_any_input_order(two_days):
    for paper_id in first_of(two_days, "cs.IT", 3):
        set_feedback(two_days[0], paper_id, 1, "me")
    set_feedback(two_days[0], first_of(two_days, "cs.CV", 1)[0], -1, "me")
    expected = [(r.paper.id, r.score, r.reason) for r in digest_of(two_days)]
    items = [Announcement(p, NEXT, "new", i) for i, p in enumerate(two_days[2][NEXT])]
    random.Random(3).shuffle(items)
    assert [(r.paper.id, r.score, r.reason) for r in digest_of(two_days, items)] == expected


def test_words_read_once_give_exactly_the_tfidf_scikit_learn_fits_on_the_texts_at_hand():
    rows = listing_papers(FIRST) + listing_papers(NEXT)
    texts = [f"{r['title']}\n{r['abstract']}" for r in rows]
    words = learn.Words()
    # A run's profiles learn from overlapping sets of texts: each is fitted on its own texts alone.
    for chosen in (texts[:300], texts[200:], texts[:12], texts[:3], ["a b c", "a b c"], []):
        try:
            expected = learn.Words.vectorizer().fit_transform(chosen).toarray()
        except ValueError:  # scikit-learn's way of saying that no word is kept
            expected = np.zeros((len(chosen), 0))
        got = words.tfidf(chosen).toarray()
        assert got.shape == expected.shape
        assert np.allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_a_profile_ranked_with_the_runs_shared_words_gets_the_same_digest_as_alone(two_days):
    for paper_id in first_of(two_days, "cs.IT", 3):
        set_feedback(two_days[0], paper_id, 1, "me")
    set_feedback(two_days[0], first_of(two_days, "cs.CV", 1)[0], -1, "me")
    shared = learn.Words()
    digest_of(two_days, [Announcement(p, FIRST, "new", i) for i, p in enumerate(two_days[2][FIRST])], words=shared)
    alone = [(r.paper.id, r.score, r.reason) for r in digest_of(two_days)]
    assert [(r.paper.id, r.score, r.reason) for r in digest_of(two_days, words=shared)] == alone
