"""A profile's own model, learned from what its reader liked and disliked. Pure: vectors and texts in, scores out.

Likes as more points in a centroid barely move a ranking (bench/bench_rank_learning.py, September-October:
-0.003 nDCG@10 after eight days of feedback); a linear model trained on them does (+0.034), as arxiv-sanity-
lite's SVM does on TF-IDF. Each paper is described twice: by its embedding with the day's mean vector
subtracted (what sets it apart from the rest of the day), and by the TF-IDF of its title and abstract (words
and word pairs, fitted on the papers at hand), which catches a field's own vocabulary that an embedding blurs.
Logistic regression (scikit-learn) learns one weight per feature:

- liked: the seed papers and liked papers;
- not liked, weighted: disliked papers (DISLIKED_WEIGHT each) and the day's own papers (DAY_WEIGHT shared
  among them: most of a day is not for the reader, a few papers are).

Training on a day of a few hundred papers takes a fraction of a second, most of it the TF-IDF. Every constant
here was chosen on the benchmark's first two months only (see docs/benchmarks.md, "Ranking quality").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DISLIKED_WEIGHT = 3.0
DAY_WEIGHT = 30.0
TFIDF_WEIGHT = 2.0  # TF-IDF features against the unit-length embedding: the two count about equally
REGULARIZATION_C = 1.0  # scikit-learn's default
MAX_DF = 0.2  # words in more of the papers at hand than this say nothing about a field


@dataclass
class Example:
    """One paper the model learns from: its vector, its title and abstract, and how much it counts."""

    vector: np.ndarray
    text: str
    liked: bool
    weight: float = 1.0


def learned_scores(examples: list[Example], day_vectors: np.ndarray, day_texts: list[str],
                   background: np.ndarray) -> np.ndarray | None:
    """The model's score for each of the day's papers (higher: more like what the reader liked), or None
    when there is nothing to learn from (no liked example). The day's papers are negatives themselves,
    weighted DAY_WEIGHT in all; ``background`` is their mean vector."""
    if not any(e.liked for e in examples) or not len(day_vectors):
        return None
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts = [e.text for e in examples] + list(day_texts)
    vectors = np.vstack([np.vstack([e.vector for e in examples]), day_vectors])
    words = TfidfVectorizer(strip_accents="unicode", stop_words="english", ngram_range=(1, 2), min_df=2,
                            max_df=MAX_DF, sublinear_tf=True, token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b")
    try:
        tfidf = words.fit_transform(texts)
    except ValueError:  # no word in two papers (a tiny day): the embeddings alone
        tfidf = sparse.csr_matrix((len(texts), 0))
    features = sparse.hstack([sparse.csr_matrix(centred(vectors, background)), TFIDF_WEIGHT * tfidf]).tocsr()
    labels = np.array([e.liked for e in examples] + [False] * len(day_texts))
    weights = np.array([e.weight for e in examples] + [DAY_WEIGHT / len(day_texts)] * len(day_texts))
    model = LogisticRegression(C=REGULARIZATION_C, max_iter=1000)
    model.fit(features, labels, sample_weight=weights)
    return model.decision_function(features[len(examples):])


def centred(vectors: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Rows minus the background, back to unit length (a row equal to the background stays zero)."""
    moved = np.atleast_2d(vectors) - background
    norms = np.linalg.norm(moved, axis=1, keepdims=True)
    return np.divide(moved, norms, out=np.zeros_like(moved), where=norms > 1e-9)
