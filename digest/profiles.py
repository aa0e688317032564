"""One profile's configuration and feedback -> the Signals that rank.py scores papers against.

Interests are embedded as text; seed papers and liked/disliked papers are embedded as papers, through the
same cache as every announced paper, so several profiles and runs never embed one paper twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from . import db as dbm
from .config import Profile, Settings
from .embed import Embedder, embed_papers, shared_embedder
from .rank import Anchor, Signals
from .records import Paper

if TYPE_CHECKING:
    import sqlite_utils

FetchPapers = Callable[[Settings, list[str]], "tuple[list[Paper], list[str]]"]


def profile_signals(db: "sqlite_utils.Database", settings: Settings, profile: Profile, *,
                    fetch_papers: FetchPapers | None = None,
                    embedder: Embedder | None = None) -> tuple[Signals, list[str]]:
    """The profile's Signals and the warnings a person should see (a seed paper that does not exist).

    Seed papers missing from the database are fetched with ``fetch_papers(settings, ids) -> (papers,
    missing)`` (``digest.arxiv.fetch_papers``) and stored; without it only stored seeds are used.
    """
    embedder = embedder or shared_embedder(settings.embedding)
    warnings: list[str] = []
    seeds = _seed_papers(db, settings, profile.seed_papers, fetch_papers, warnings)
    liked, disliked = _feedback_papers(db, settings, profile.name, fetch_papers)
    vectors = embed_papers(db, seeds + liked + disliked, settings, embedder=embedder, progress=False)
    signals = Signals(
        interests=_interest_anchors(embedder, profile),
        seeds=[Anchor(f"seed paper {p.id}", vectors[p.id]) for p in seeds],
        liked=[Anchor(f"liked paper {p.id}", vectors[p.id]) for p in liked],
        disliked=[Anchor(f"disliked paper {p.id}", vectors[p.id]) for p in disliked],
        keywords=list(profile.keywords),
        negative_keywords=list(profile.negative_keywords),
        authors=list(profile.authors),
    )
    return signals, warnings


def _interest_anchors(embedder: Embedder, profile: Profile) -> list[Anchor]:
    if not profile.interests:
        return []
    vectors = embedder.embed_queries([i.text for i in profile.interests])
    return [Anchor(i.text, v, i.weight) for i, v in zip(profile.interests, vectors)]


def _seed_papers(db, settings: Settings, given: list[str], fetch_papers: FetchPapers | None,
                 warnings: list[str]) -> list[Paper]:
    """Seeds from the database, else from arXiv; each one that cannot be had is a warning, not a failure."""
    from .arxiv.ids import InvalidArxivId, normalize_id

    wanted: dict[str, str] = {}  # normalised id -> as the user wrote it
    for text in given:
        try:
            wanted.setdefault(normalize_id(text)[0], text)
        except InvalidArxivId:
            warnings.append(f"seed paper {text} is not an arXiv id; using the other seeds")
    stored = dbm.get_papers(db, wanted)
    absent = [paper_id for paper_id in wanted if paper_id not in stored]
    if absent and fetch_papers is None:
        warnings += [f"seed paper {wanted[i]} is not stored and cannot be fetched now; using the other seeds"
                     for i in absent]
    elif absent:
        fetched, missing = fetch_papers(settings, absent)
        dbm.save_papers(db, fetched)
        stored.update(dbm.get_papers(db, [p.id for p in fetched]))
        gone = set(missing) | {i for i in absent if i not in stored}
        warnings += [f"seed paper {wanted[i]} was not found on arXiv; using the other seeds"
                     for i in absent if i in gone]
    return [stored[i] for i in wanted if i in stored]


def _feedback_papers(db, settings: Settings, profile: str,
                     fetch_papers: FetchPapers | None) -> tuple[list[Paper], list[Paper]]:
    """Liked and disliked papers: rows for every profile ('') and for this one, this one's winning.

    `digest like` accepts a paper not in the history yet; it is fetched (when it can be) like a seed.
    """
    rows = db.execute("SELECT paper_id, value FROM feedback WHERE profile IN ('', ?) "
                      "ORDER BY profile = ?, created_at, paper_id", [profile, profile]).fetchall()
    values = {paper_id: value for paper_id, value in rows}  # later rows (this profile's) overwrite
    papers = dbm.get_papers(db, values)
    absent = [paper_id for paper_id in values if paper_id not in papers]
    if absent and fetch_papers is not None:
        fetched, _ = fetch_papers(settings, absent)
        dbm.save_papers(db, fetched)
        papers.update(dbm.get_papers(db, [p.id for p in fetched]))
    liked = [papers[i] for i, v in values.items() if v > 0 and i in papers]
    disliked = [papers[i] for i, v in values.items() if v < 0 and i in papers]
    return liked, disliked
