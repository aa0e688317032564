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
                   background: np.ndarray, words: "Words | None" = None) -> np.ndarray | None:
    """The model's score for each of the day's papers (higher: more like what the reader liked), or None
    when there is nothing to learn from (no liked example). The day's papers are negatives themselves,
    weighted DAY_WEIGHT in all; ``background`` is their mean vector. ``words``: the run's :class:`Words`,
    shared by every profile's model, so each text is read once per run."""
    if not any(e.liked for e in examples) or not len(day_vectors):
        return None
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    texts = [e.text for e in examples] + list(day_texts)
    vectors = np.vstack([np.vstack([e.vector for e in examples]), day_vectors])
    tfidf = (words or Words()).tfidf(texts)
    features = sparse.hstack([sparse.csr_matrix(centred(vectors, background)), TFIDF_WEIGHT * tfidf]).tocsr()
    labels = np.array([e.liked for e in examples] + [False] * len(day_texts))
    weights = np.array([e.weight for e in examples] + [DAY_WEIGHT / len(day_texts)] * len(day_texts))
    model = LogisticRegression(C=REGULARIZATION_C, max_iter=1000)
    model.fit(features, labels, sample_weight=weights)
    return model.decision_function(features[len(examples):])


class Words:
    """The words (and word pairs) of titles and abstracts, read once per text and counted from then on.

    Reading the words is most of a model's training (0.22 s of 0.37 s for a 531-paper day), and every
    profile of a run learns from the same day, so a run keeps one Words for all its profiles. What
    :meth:`tfidf` gives is exactly scikit-learn's ``TfidfVectorizer(strip_accents="unicode",
    stop_words="english", ngram_range=(1, 2), min_df=2, max_df=MAX_DF, sublinear_tf=True,
    token_pattern=TOKENS).fit_transform(texts)``, columns in the same order (tests/test_learning.py
    compares them): the vocabulary and weights still belong to the texts at hand, not to the whole run.
    It holds each text it has read, so it lives as long as one run.
    """

    TOKENS = r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b"
    MIN_DF = 2

    def __init__(self):
        self._analyze = None
        self._terms: dict[str, int] = {}  # term -> column in the counts of every text read
        self._names: list[str] = []  # column -> term
        self._read: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # text -> (columns, counts), columns ascending

    @staticmethod
    def vectorizer():
        """The TF-IDF the model reads, as scikit-learn would fit it on its own."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(strip_accents="unicode", stop_words="english", ngram_range=(1, 2),
                               min_df=Words.MIN_DF, max_df=MAX_DF, sublinear_tf=True, token_pattern=Words.TOKENS)

    def tfidf(self, texts: list[str]):
        """The TF-IDF matrix of ``texts`` (a row each), fitted on them; no column when no word is in two of
        them and in few enough (a tiny day: the model then reads the embeddings alone)."""
        from scipy import sparse
        from sklearn.preprocessing import normalize

        counts = self._counts(texts)
        n = len(texts)
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        kept = np.flatnonzero((df >= self.MIN_DF) & (df <= MAX_DF * n))
        if MAX_DF * n < self.MIN_DF or not len(kept):
            return sparse.csr_matrix((n, 0))
        kept = kept[np.argsort(np.array([self._names[i] for i in kept]))]  # scikit-learn's order: by term
        matrix = counts[:, kept].tocsr()
        matrix.sort_indices()
        np.log(matrix.data, matrix.data)
        matrix.data += 1.0
        idf = np.full(len(kept), n + 1, dtype=np.float64) / (df[kept] + 1.0)
        np.log(idf, out=idf)
        matrix.data *= idf[matrix.indices] + 1.0
        return normalize(matrix, norm="l2", copy=False)

    def _counts(self, texts: list[str]):
        """Word counts of ``texts``, a row each, over every term read so far (float64, as scikit-learn's)."""
        from scipy import sparse

        rows = [self._row(text) for text in texts]
        indptr = np.concatenate([[0], np.cumsum([len(columns) for columns, _ in rows])])
        columns = np.concatenate([c for c, _ in rows]) if rows else np.zeros(0, np.int64)
        values = np.concatenate([v for _, v in rows]) if rows else np.zeros(0)
        return sparse.csr_matrix((values.astype(np.float64), columns, indptr), shape=(len(texts), len(self._names)))

    def _row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        if text not in self._read:
            if self._analyze is None:
                self._analyze = self.vectorizer().build_analyzer()
            counted: dict[int, int] = {}
            for term in self._analyze(text):
                column = self._terms.setdefault(term, len(self._terms))
                if column == len(self._names):
                    self._names.append(term)
                counted[column] = counted.get(column, 0) + 1
            columns = np.array(sorted(counted), dtype=np.int64)
            self._read[text] = (columns, np.array([counted[c] for c in columns], dtype=np.float64))
        return self._read[text]


def centred(vectors: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Rows minus the background, back to unit length (a row equal to the background stays zero)."""
    moved = np.atleast_2d(vectors) - background
    norms = np.linalg.norm(moved, axis=1, keepdims=True)
    return np.divide(moved, norms, out=np.zeros_like(moved), where=norms > 1e-9)
