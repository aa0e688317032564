"""One profile's configuration and feedback -> the Signals that rank.py scores papers against. The
feedback rows themselves are :mod:`digest.storage.feedback`'s.

Interests are embedded as text; seed papers and liked/disliked papers are embedded as papers, through the
same cache as every announced paper, so several profiles and runs never embed one paper twice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from .arxiv.ids import InvalidArxivId, normalize_id, title_key
from .records import Paper
from .storage.papers import get_papers, save_papers
from .storage.feedback import feedback_values, not_known_missing, remember_missing
from .text import one_line, plural

if TYPE_CHECKING:
    import sqlite_utils

    from .config import Profile, Settings  # annotations only: pydantic is for validating
    from .embed import Embedder
    from .rank import Anchor

log = logging.getLogger(__name__)

LOOKUPS_PER_RUN = 200  # ids of liked or library papers fetched from arXiv per profile and run: two requests

FetchPapers = Callable[..., "tuple[list[Paper], list[str]]"]  # (settings, ids, raise_errors=True)
FindTitle = Callable[["Settings", str], "Paper | None"]


def profile_signals(db: "sqlite_utils.Database", settings: Settings, profile: Profile, *,
                    fetch_papers: FetchPapers | None = None, find_title: FindTitle | None = None,
                    embedder: Embedder | None = None) -> tuple[Signals, list[str]]:
    """The profile's Signals and the warnings a person should see (a seed paper that does not exist).

    Seed papers missing from the database are fetched with ``fetch_papers(settings, ids) -> (papers,
    missing)`` (``digest.arxiv.fetch_papers``) and stored; without it only stored seeds are used. Library
    entries without an arXiv id are matched by title with ``find_title`` (``arxiv.api.find_by_title``).
    """
    # Here, not at the top: embed and rank load numpy, which the feedback commands below never need.
    from .embed import embed_papers, shared_embedder
    from .rank import Anchor, Signals

    embedder = embedder or shared_embedder(settings.embedding)
    warnings: list[str] = []
    seeds = _seed_papers(db, settings, profile.seed_papers, fetch_papers, warnings)
    library = _library_papers(db, settings, profile, fetch_papers, find_title, warnings)
    liked, disliked = _feedback_papers(db, settings, profile.name, fetch_papers)
    vectors = embed_papers(db, seeds + [p for p, _ in library] + liked + disliked, settings, embedder=embedder,
                           progress=False)

    def anchors(kind: str, papers: list[Paper], weights: list[float] | None = None) -> list[Anchor]:
        # The text too: the profile's learned model reads words as well as vectors (learn.py).
        return [Anchor(f"{kind} paper {p.id}", vectors[p.id], weight, text=p.text)
                for p, weight in zip(papers, weights or [1.0] * len(papers))]

    signals = Signals(
        interests=_interest_anchors(embedder, profile),
        seeds=anchors("seed", seeds) + anchors("library", [p for p, _ in library], [w for _, w in library]),
        liked=anchors("liked", liked),
        disliked=anchors("disliked", disliked),
        keywords=list(profile.keywords),
        negative_keywords=list(profile.negative_keywords),
        authors=list(profile.authors),
    )
    return signals, warnings


def _interest_anchors(embedder: Embedder, profile: Profile) -> list[Anchor]:
    from .rank import Anchor

    if not profile.interests:
        return []
    vectors = embedder.embed_queries([i.text for i in profile.interests])
    return [Anchor(i.text, v, i.weight) for i, v in zip(profile.interests, vectors)]


def _seed_papers(db, settings: Settings, given: list[str], fetch_papers: FetchPapers | None,
                 warnings: list[str]) -> list[Paper]:
    """Seeds from the database, else from arXiv; each one that cannot be had is a warning, not a failure."""
    wanted: dict[str, str] = {}  # normalised id -> as the user wrote it
    for text in given:
        try:
            wanted.setdefault(normalize_id(text)[0], text)
        except InvalidArxivId:
            warnings.append(f"seed paper {text} is not an arXiv id; using the other seeds")
    stored = get_papers(db, wanted)
    absent = [paper_id for paper_id in wanted if paper_id not in stored]
    if absent and fetch_papers is None:
        warnings += [f"seed paper {wanted[i]} is not stored and cannot be fetched now; using the other seeds"
                     for i in absent]
    elif absent:
        fetched, missing = fetch_papers(settings, absent)
        save_papers(db, fetched)
        stored.update(get_papers(db, [p.id for p in fetched]))
        gone = set(missing) | {i for i in absent if i not in stored}
        warnings += [f"seed paper {wanted[i]} was not found on arXiv; using the other seeds"
                     for i in absent if i in gone]
    return [stored[i] for i in wanted if i in stored]


def _library_papers(db, settings: Settings, profile: Profile, fetch_papers: FetchPapers | None,
                    find_title: FindTitle | None, warnings: list[str]) -> list[tuple[Paper, float]]:
    """The arXiv papers of the profile's seed_library with their weights (library.py); a file that cannot
    be read, entries arXiv has no paper for and papers that cannot be had are warnings, not failures."""
    from .library import LibraryError, library_of, matched_titles, weigh  # heavy, as above

    if not profile.seed_library:
        return []
    try:
        library = library_of(db, profile.seed_library)
    except LibraryError as exc:
        warnings.append(f"{exc}; ranking without the library")
        return []
    except Exception as exc:  # a parser's own failure on a strange file must not cost the day's digest
        warnings.append(f"seed library {profile.seed_library}: cannot be read ({one_line(exc)}); "
                        f"ranking without the library")
        return []
    find = (lambda title: find_title(settings, title)) if find_title else None
    by_title, found, pending = matched_titles(db, library.titles, find)
    save_papers(db, found)
    ids = [paper_id or by_title.get(title_key(title)) for paper_id, title in library.entries]
    weights = weigh([i for i in ids if i])
    skipped = sum(i is None for i in ids) - pending
    papers = _stored_or_fetched(db, settings, list(weights), fetch_papers)
    if skipped:
        warnings.append(f"seed library {profile.seed_library}: {plural(skipped, 'entry', 'entries')} with no "
                        f"arXiv id and no paper of that title on arXiv skipped")
    if pending:
        warnings.append(f"seed library {profile.seed_library}: {plural(pending, 'title')} still to look up on "
                        f"arXiv (a few each run)")
    unknown = sum(paper_id not in papers for paper_id in weights)
    if unknown:
        warnings.append(f"seed library {profile.seed_library}: {plural(unknown, 'arXiv paper')} neither stored "
                        f"nor fetched from arXiv now; using the others")
    return [(papers[i], weight) for i, weight in weights.items() if i in papers]


def _stored_or_fetched(db, settings: Settings, ids: list[str], fetch_papers: FetchPapers | None) -> dict[str, Paper]:
    """The papers of ``ids`` from the history; those it lacks are fetched from arXiv and stored, when a
    fetcher is given (a liked paper or a library entry may never have been in a digest)."""
    papers = get_papers(db, ids)
    absent = [paper_id for paper_id in ids if paper_id not in papers]
    wanted = not_known_missing(db, absent)[:LOOKUPS_PER_RUN]
    if wanted and fetch_papers is not None:
        from .arxiv.http import ArxivError  # requests: only when there is something to fetch

        try:
            fetched, missing = fetch_papers(settings, wanted, raise_errors=True)
        except ArxivError as exc:  # nothing learnt: asked again next run
            log.warning("%d papers not fetched from arXiv now: %s", len(wanted), one_line(exc))
            return papers
        save_papers(db, fetched)
        remember_missing(db, missing)
        papers.update(get_papers(db, [p.id for p in fetched]))
    return papers


def _feedback_papers(db, settings: Settings, profile: str,
                     fetch_papers: FetchPapers | None) -> tuple[list[Paper], list[Paper]]:
    """Liked and disliked papers: rows for every profile ('') and for this one, this one's winning.

    `digest like` accepts a paper not in the history yet; it is fetched (when it can be) like a seed.
    """
    values = feedback_values(db, profile)
    papers = _stored_or_fetched(db, settings, list(values), fetch_papers)
    liked = [papers[i] for i, v in values.items() if v > 0 and i in papers]
    disliked = [papers[i] for i, v in values.items() if v < 0 and i in papers]
    return liked, disliked
