"""The vector index: one model's embeddings as memory-mapped float32 matrix files beside the database,
kept in step with the ``embeddings`` table (the truth) on every use, because reading a million blobs out
of SQLite for each semantic query would take seconds."""

from __future__ import annotations

import fcntl
import json
import re
from pathlib import Path

import numpy as np

from ..atomic import write_atomically
from ..storage.db import vectors_folder

# -- vectors ---------------------------------------------------------------------------------------

class VectorIndex:
    """One model's embeddings as two memory-mapped files beside the database: ``<model>.f32`` (a float32
    matrix, one row per paper) and ``<model>.ids`` (fixed-width ids, same order), in ``<db>.vectors/``.

    The ``embeddings`` table stays the truth. Its rows only grow or are replaced (a replaced row gets a
    new rowid), so the index remembers the highest rowid it has read and, when opened, appends or
    overwrites whatever came after: one indexed lookup when nothing changed. Deleting the folder forces
    a rebuild. Fixed-width ids let a query map rows to ids without reading a million of them.
    """

    ID_WIDTH = 32  # bytes; the longest arXiv id (old style, "solv-int/9901001") is 16

    def __init__(self, db, model: str, folder: Path | None = None):
        self.db = db
        self.model = model
        self.folder = folder if folder is not None else _index_folder(db)
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.id_array = np.zeros(0, dtype=f"S{self.ID_WIDTH}")
        self._mapped: dict | None = None  # the metadata of what is mapped now

    def __len__(self) -> int:
        return len(self.id_array)

    def _path(self, suffix: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9._-]", "_", self.model) + suffix)

    def open(self) -> "VectorIndex":
        """Bring the files up to date with the table, then map them. Calling it again on an open index
        is the cheap check before each query: the mapping is kept unless the table changed, because a
        fresh mapping of a million rows costs more page faults than the scan itself."""
        if self.folder is None:  # an in-memory database: keep the matrix in memory too
            self._load_all_from_table()
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # two processes syncing at once would interleave appends
                self._sync()
        except PermissionError:  # a reader without write access to the state folder: slower, still right
            self.folder = None
            self._load_all_from_table()
        return self

    def _sync(self) -> None:
        meta = self._read_meta()
        latest = self.db.execute("SELECT COALESCE(MAX(rowid), 0) FROM embeddings").fetchone()[0]
        if meta is None or meta["watermark"] > latest:
            # Missing, cut short, or from another database file: start again from the table.
            meta = {"watermark": 0, "count": 0, "dimensions": 0}
        if latest > meta["watermark"]:
            meta = self._apply_new_rows(meta, latest)
        if meta != self._mapped:
            self._map(meta)

    def _apply_new_rows(self, meta: dict, latest: int) -> dict:
        count, dims = meta["count"], meta["dimensions"]
        known = np.memmap(self._path(".ids"), dtype=self.id_array.dtype, mode="r", shape=(count,)) if count else []
        positions = {paper_id.decode(): n for n, paper_id in enumerate(known)}
        del known
        rows = self.db.execute(
            "SELECT paper_id, dimensions, vector FROM embeddings WHERE rowid > ? AND model = ? ORDER BY rowid",
            [meta["watermark"], self.model])
        mode = "r+b" if count else "w+b"
        with open(self._path(".f32"), mode) as vectors, open(self._path(".ids"), mode) as ids:
            for paper_id, dimensions, blob in rows:
                if dims and dimensions != dims:
                    continue  # a stray vector of another size cannot be compared; skip it
                dims = dimensions
                position = positions.get(paper_id)
                if position is None:
                    position = positions[paper_id] = count
                    count += 1
                vectors.seek(position * dims * 4)
                vectors.write(blob)
                ids.seek(position * self.ID_WIDTH)
                ids.write(paper_id.encode().ljust(self.ID_WIDTH, b"\0"))
            vectors.truncate(count * dims * 4)
            ids.truncate(count * self.ID_WIDTH)
        meta = {"watermark": latest, "count": count, "dimensions": dims}
        write_atomically(self._path(".json"), json.dumps(meta))  # last: a crash before it redoes the rows
        return meta

    def _map(self, meta: dict) -> None:
        count, dims = meta["count"], meta["dimensions"]
        self._mapped = meta
        if count == 0:
            return
        self.matrix = np.memmap(self._path(".f32"), dtype="<f4", mode="r", shape=(count, dims))
        self.id_array = np.memmap(self._path(".ids"), dtype=self.id_array.dtype, mode="r", shape=(count,))

    def _read_meta(self) -> dict | None:
        try:
            meta = json.loads(self._path(".json").read_text())
            vectors, ids = self._path(".f32").stat().st_size, self._path(".ids").stat().st_size
        except (OSError, ValueError):
            return None
        if vectors < meta["count"] * meta["dimensions"] * 4 or ids < meta["count"] * self.ID_WIDTH:
            return None  # a file lost its tail (a disk full, a copy cut short): rebuild
        return meta

    def _load_all_from_table(self) -> None:
        rows = self.db.execute("SELECT paper_id, vector FROM embeddings WHERE model = ? ORDER BY rowid",
                               [self.model]).fetchall()
        latest = {paper_id: blob for paper_id, blob in rows}
        if latest:
            self.id_array = np.array([i.encode() for i in latest], dtype=self.id_array.dtype)
            self.matrix = np.vstack([np.frombuffer(b, dtype="<f4") for b in latest.values()])

    def id_at(self, row: int) -> str:
        return self.id_array[row].decode()

    def position(self, paper_id: str) -> int | None:
        found = np.flatnonzero(self.id_array == paper_id.encode())
        return int(found[0]) if len(found) else None

    def vector(self, paper_id: str) -> np.ndarray | None:
        position = self.position(paper_id)
        return None if position is None else np.array(self.matrix[position])

    def nearest(self, query: np.ndarray, count: int) -> list[tuple[int, float]]:
        """The ``count`` best (row, cosine) pairs. Vectors are L2-normalised, so a dot product is the cosine."""
        if not len(self) or count <= 0:
            return []
        scores = self.matrix @ np.asarray(query, dtype=np.float32)
        count = min(count, len(scores))
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(i), float(scores[i])) for i in best]


def _index_folder(db) -> Path | None:
    path = db.execute("PRAGMA database_list").fetchone()[2]
    return vectors_folder(path) if path else None




