"""What "a like moves that paper's neighbours up in the next digest" means, measured: rank the day's
papers for the profile as the next run would (its signals read from the feedback table now), and find a
paper's nearest neighbour by the stored embeddings."""

from __future__ import annotations

import numpy as np
from world import day_feed

from digest import embed, rank
from digest.arxiv.feed import parse_feed
from digest.profiles import profile_signals


def stored_vectors(db, paper_ids: list[str], model: str) -> dict[str, np.ndarray]:
    """The vectors in the embeddings table for these papers and this model (papers without one absent)."""
    marks = ",".join("?" * len(paper_ids))
    rows = db.execute(f"SELECT paper_id, vector FROM embeddings WHERE model = ? AND paper_id IN ({marks})",
                      [model, *paper_ids]).fetchall()
    return {paper_id: embed.blob_to_vector(blob) for paper_id, blob in rows}


def ranks_now(db, settings, profile: str = "me") -> dict[str, int]:
    announcements = parse_feed(day_feed()).announcements
    vectors = stored_vectors(db, [a.paper.id for a in announcements], settings.embedding.model)
    signals, _ = profile_signals(db, settings, settings.profiles[profile])
    ranked = rank.rank_papers(announcements, vectors, signals, top=settings.top_for(settings.profiles[profile]))
    return {r.paper.id: r.rank for r in ranked}


def nearest_neighbour(db, settings, paper_id: str) -> str:
    ids = [a.paper.id for a in parse_feed(day_feed()).announcements]
    vectors = stored_vectors(db, ids, settings.embedding.model)
    others = [i for i in ids if i != paper_id]
    return max(others, key=lambda i: float(np.dot(vectors[i], vectors[paper_id])))
