"""A profile's seed_library: the reader's own library, as Zotero, Mendeley and JabRef export it, seeds the
ranking. Each format is parsed by its library; the arXiv papers in it move their neighbours up."""

from __future__ import annotations

import json
from contextlib import closing

import pytest
from feeds import SUBMITTED, api_feed_xml, arxiv_section, listing_papers
from loopback import Reply
from neighbours import nearest_neighbour, ranks_now
from world import DAY, PROFILE, copy_database

from digest.arxiv.ids import title_key
from digest.config import parse_settings
from digest.library import LibraryError, read_library, weigh
from digest.profiles import profile_signals
from digest.storage.db import open_db

# As Zotero's "Export Library…" writes them: a preprint, a journal article with an arXiv URL, a book without any.
BIBTEX = r"""
@misc{vaswani_attention_2017,
	title = {Attention {Is} {All} {You} {Need}},
	url = {http://arxiv.org/abs/1706.03762},
	doi = {10.48550/arXiv.1706.03762},
	publisher = {arXiv},
	author = {Vaswani, Ashish and Shazeer, Noam},
	year = {2017},
	note = {arXiv:1706.03762 [cs]},
}

@article{old_style_1999,
	title = {Large {N} limit},
	journal = {Adv. Theor. Math. Phys.},
	eprint = {hep-th/9711200},
	archivePrefix = {arXiv},
	year = {1999},
}

@book{knuth_art_1997,
	title = {The {Art} of {Computer} {Programming}},
	publisher = {Addison-Wesley},
	author = {Knuth, Donald E.},
	year = {1997},
}

@article{bert_2019,
	title = {{BERT}: {Pre}-training of {Deep} {Bidirectional} {Transformers}},
	journal = {arXiv preprint arXiv:1810.04805},
	year = {2019},
}
"""

RIS = """TY  - GEN
TI  - Attention Is All You Need
AU  - Vaswani, Ashish
DO  - 10.48550/arXiv.1706.03762
UR  - http://arxiv.org/abs/1706.03762
ER  - 

TY  - BOOK
TI  - The Art of Computer Programming
AU  - Knuth, Donald E.
ER  - 

TY  - JOUR
TI  - BERT
UR  - https://arxiv.org/pdf/1810.04805v2.pdf
ER  - 
"""

CSL_JSON = [
    {"id": "a", "type": "article", "title": "Attention Is All You Need", "number": "arXiv:1706.03762",
     "DOI": "10.48550/arXiv.1706.03762"},
    {"id": "b", "type": "book", "title": "The Art of Computer Programming"},
    {"id": "c", "type": "article-journal", "title": "BERT", "URL": "http://arxiv.org/abs/1810.04805"},
]


@pytest.mark.parametrize("name, text", [("library.bib", BIBTEX), ("library.ris", RIS),
                                        ("library.json", json.dumps(CSL_JSON))])
def test_each_export_format_gives_its_arxiv_papers_newest_weighing_most_and_the_titles_to_look_up(tmp_path, name,
                                                                                                    text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    library = read_library(path)
    ids = [paper_id for paper_id, _ in library.entries if paper_id]
    expected = ["1706.03762", "hep-th/9711200", "1810.04805"] if name.endswith(".bib") else ["1706.03762", "1810.04805"]
    assert ids == expected
    assert library.titles == ["The Art of Computer Programming"]  # the book: to match by title
    weights = weigh(ids)
    assert list(weights)[0] == "1810.04805" and weights["1810.04805"] == 1.0  # the last entry: the newest
    assert weights["1706.03762"] == min(weights.values()) < 1.0  # the first entry: the oldest addition


def test_a_broken_or_missing_library_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(LibraryError, match=r"missing\.bib: cannot read the library: No such file"):
        read_library(tmp_path / "missing.bib")
    broken = tmp_path / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    with pytest.raises(LibraryError, match=r"broken\.json: not CSL JSON: "):
        read_library(broken)


@pytest.mark.slow
def test_a_paper_in_the_library_moves_its_neighbours_up_and_what_cannot_be_used_is_a_warning(template, tmp_path):
    db_path = copy_database(template, tmp_path / "digest.db")
    library_file = tmp_path / "export.bib"
    plain = parse_settings(f'[storage]\npath = "{db_path}"\n' + PROFILE, environ={})
    with closing(open_db(db_path)) as db:
        before = ranks_now(db, plain)
        chosen = next(paper for paper, rank in before.items() if rank == 40)
        neighbour = nearest_neighbour(db, plain, chosen)
        chosen_entry = f"@misc{{chosen, title = {{x}}, url = {{https://arxiv.org/abs/{chosen}v1}}}}\n"
        library_file.write_text(BIBTEX + chosen_entry, encoding="utf-8")
        seeded = parse_settings(f'[storage]\npath = "{db_path}"\n' + PROFILE + f'seed_library = "{library_file}"\n',
                                environ={})
        after = ranks_now(db, seeded)
        signals, warnings = profile_signals(db, seeded, seeded.profiles["me"])
    assert after[neighbour] < before[neighbour]
    assert [a.label for a in signals.seeds] == [f"library paper {chosen}"]
    assert warnings == [f"seed library {library_file}: 1 title still to look up on arXiv (a few each run)",
                        f"seed library {library_file}: 3 arXiv papers neither stored nor fetched from arXiv now; "
                        f"using the others"]


@pytest.mark.slow
def test_an_entry_without_an_arxiv_id_is_matched_by_its_exact_title_once(tmp_path, http_server):
    """The arXiv API on loopback answers a title query with the listing's papers sharing a title word."""
    from digest.arxiv import api

    rows = listing_papers(DAY)
    target = rows[7]

    def answer(request):
        query = request.query["search_query"][0]
        assert query.startswith('ti:"')
        words = set(query[4:-1].split())
        return Reply(body=api_feed_xml([(row, SUBMITTED[DAY]) for row in rows
                                        if words & set(title_key(row["title"]).split())][:10]))

    http_server.routes["/api/query"] = answer
    library_file = tmp_path / "export.json"
    library_file.write_text(json.dumps([{"id": "x", "type": "article-journal", "title": target["title"].upper()},
                                        {"id": "y", "type": "book", "title": "Gödel, Escher, Bach"}]))
    db_path = tmp_path / "digest.db"
    settings = parse_settings(arxiv_section(http_server.url) + f'[storage]\npath = "{db_path}"\n' + PROFILE
                              + f'seed_library = "{library_file}"\n', environ={})
    with closing(open_db(db_path)) as db:
        signals, warnings = profile_signals(db, settings, settings.profiles["me"], fetch_papers=api.fetch_papers,
                                            find_title=api.find_by_title)
        asked = len(http_server.requests)
        again, _ = profile_signals(db, settings, settings.profiles["me"], fetch_papers=api.fetch_papers,
                                   find_title=api.find_by_title)
    assert [a.label for a in signals.seeds] == [f"library paper {target['id']}"]
    assert warnings == [f"seed library {library_file}: 1 entry with no arXiv id and no paper of that title on arXiv "
                        f"skipped"]
    assert asked == 2  # one question per title
    assert len(http_server.requests) == asked, "a title was asked again"
    assert [a.label for a in again.seeds] == [f"library paper {target['id']}"]


# -- files an administrator (or an attacker) might point at (issue 24) ------------------------------

def test_a_library_exported_in_latin_1_or_utf_16_is_read(tmp_path):
    text = BIBTEX.replace("Knuth, Donald E.", "Gödel, Kurt")
    for encoding in ("latin-1", "utf-16"):
        path = tmp_path / f"{encoding}.bib"
        path.write_text(text, encoding=encoding)
        library = read_library(path)
        assert [paper_id for paper_id, _ in library.entries if paper_id] == ["1706.03762", "hep-th/9711200",
                                                                              "1810.04805"]


@pytest.mark.parametrize("name, content, refusal", [
    ("binary.bib", bytes(range(256)) * 64, r"binary\.bib: a binary file, not a BibTeX"),
    ("nested.json", b"[" * 200_000 + b"]" * 200_000, r"nested\.json: (nested too deeply|not CSL JSON)"),
])
def test_a_binary_or_deeply_nested_library_is_refused_in_one_line(tmp_path, name, content, refusal):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LibraryError, match=refusal) as refused:
        read_library(path)
    assert "\n" not in str(refused.value)


def test_a_library_that_is_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    import os
    import threading

    fifo = tmp_path / "export.bib"
    os.mkfifo(fifo)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_refusal(fifo)), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # let the blocked open() return, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO as the library waited for a writer")
    assert outcome == [f"{fifo}: not a regular file"]


def _refusal(path) -> str:
    try:
        read_library(path)
    except LibraryError as exc:
        return str(exc)
    return "read"


def test_a_library_larger_than_the_cap_is_refused(tmp_path, monkeypatch):
    from digest import library

    monkeypatch.setattr(library, "MAX_LIBRARY_BYTES", 1024)  # 64 MB by default; the same path, smaller
    path = tmp_path / "big.bib"
    path.write_text(BIBTEX * 10, encoding="utf-8")
    with pytest.raises(LibraryError, match=r"big\.bib: larger than 0 MB"):
        read_library(path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fifo", "nested", "latin-1 garbage"])
def test_a_library_file_that_cannot_be_read_costs_a_warning_not_the_run(tmp_path, kind):
    import os

    path = tmp_path / "export.json"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(b'{"items": ' * 100_000 if kind == "nested" else b"\xff\xfe\x00\xd8 broken")
    settings = parse_settings(f'[storage]\npath = "{tmp_path / "digest.db"}"\n' + PROFILE
                              + f'seed_library = "{path}"\n', environ={})
    with closing(open_db(settings.database_path())) as db:
        signals, warnings = profile_signals(db, settings, settings.profiles["me"])
    assert signals.interests and signals.seeds == []
    assert len(warnings) == 1 and warnings[0].endswith("; ranking without the library"), warnings


def test_a_library_is_parsed_again_only_when_its_size_or_time_changed(tmp_path):
    import os

    from digest.library import library_of

    path = tmp_path / "export.bib"
    path.write_text(BIBTEX, encoding="utf-8")
    with closing(open_db(tmp_path / "digest.db")) as db:
        first = library_of(db, path)
        stamp = path.stat().st_mtime_ns
        path.write_text(BIBTEX.replace("1706.03762", "1706.03999"), encoding="utf-8")  # same size
        os.utime(path, ns=(stamp, stamp))
        assert library_of(db, path) == first, "parsed again though neither size nor time changed"
        os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
        assert "1706.03999" in [paper_id for paper_id, _ in library_of(db, path).entries]


@pytest.mark.slow
def test_ids_arxiv_does_not_have_are_asked_a_capped_number_at_a_time_and_then_not_again_for_a_month(
        tmp_path, http_server):
    from digest.arxiv import api
    from digest.profiles import LOOKUPS_PER_RUN
    from digest.storage.feedback import set_feedback

    asked: list[str] = []

    def answer(request):
        asked.extend(request.query["id_list"][0].split(","))
        return Reply(body=api_feed_xml([]))  # arXiv has none of them

    http_server.routes["/api/query"] = answer
    library_file = tmp_path / "export.bib"
    library_file.write_text("".join(f"@misc{{e{n}, title = {{T{n}}}, eprint = {{2501.{n:05d}}}, "
                                    f"archivePrefix = {{arXiv}}}}\n" for n in range(250)), encoding="utf-8")
    settings = parse_settings(arxiv_section(http_server.url) + f'[storage]\npath = "{tmp_path / "digest.db"}"\n'
                              + PROFILE + f'seed_library = "{library_file}"\n', environ={})
    runs = []
    with closing(open_db(settings.database_path())) as db:
        for n in range(50):  # a forged reply's likes, for every profile
            set_feedback(db, f"2502.{n:05d}", 1)
        for _ in range(4):
            asked.clear()
            profile_signals(db, settings, settings.profiles["me"], fetch_papers=api.fetch_papers)
            runs.append(len(asked))
    assert runs == [LOOKUPS_PER_RUN + 50, 250 - LOOKUPS_PER_RUN, 0, 0]
