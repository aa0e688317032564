"""One real announcement day through `digest run`, then the same day again.

The day: feed day 2026-06-23 of the real listing in tests/data/ (537 real papers), served as arXiv's Atom feed from
loopback; an OpenAI-compatible LLM on loopback answering after 1 s; a real SMTP server on loopback.
Prints the wall time of each stage (from run_stages), and the whole process's wall time and peak RSS, for

  first    the day from nothing: fetch, embed, rank, summarize, render, deliver
  again    `digest run` of the same day once more (nothing left to do: the target is < 10 % of first)
  rebuilt  the day's digest deleted and built again with warm caches (embeddings, summaries)

The embedding model's ONNX export is made beforehand in bench/out/cache (as a user's ~/.cache/digest
keeps it after the first run), so "first" is a first run of the day, not of the machine. A last run,
"first, torch", is the same day from nothing with the model in sentence-transformers (torch), as digest ran
it before (at the configured batch size, 8, where digest used 64 before): the baseline of the ratios.

    .venv/bin/python bench/bench_run.py
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from feeds import arxiv_section, feed_xml, listing_papers, serve_feeds  # noqa: E402
from loopback import LoopbackServer, Reply  # noqa: E402
from peak_rss import measure  # noqa: E402
from smtp_server import SMTPServer  # noqa: E402

from digest.taxonomy import CategoryExpression  # noqa: E402

DAY = dt.date(2026, 6, 23)
LLM_LATENCY = 1.0
STAGES = ["fetch", "embed", "rank", "summarize", "render", "deliver"]


def llm_reply(request) -> Reply:
    content = json.dumps({"tldr": "A stand-in model summarizes this paper in one plain sentence.", "problem": "p",
                          "related_work": "r", "method": "m",
                          "experiments": "e", "further_work": "f", "summary": "s"})
    body = {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "bench-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 400, "completion_tokens": 200, "total_tokens": 600}}
    return Reply(body=json.dumps(body), content_type="application/json", delay=LLM_LATENCY)


def known_categories(rows: list[dict]) -> list[str]:
    """Every category the rows' papers carry that arXiv's taxonomy knows: a feed of them holds every row."""
    codes = sorted({c for row in rows for c in row["categories"]})
    valid = []
    for code in codes:
        try:
            CategoryExpression.parse(code)
            valid.append(code)
        except Exception:
            pass
    return valid


ONE_PROFILE = ('\n[profiles.me]\ninterests = ["large language model agents", "vision-language models"]\n'
               'email_to = ["reader@example.org"]\n')


def write_config(folder: Path, http: LoopbackServer, smtp: SMTPServer, codes: list[str], *, files: bool = True,
                 sections: str = "", profiles: str = ONE_PROFILE) -> Path:
    """One profile over ``codes`` (or the ``profiles`` tables given), the LLM and SMTP servers on loopback;
    HTML files in ``folder`` too unless ``files`` is false; ``sections``: more TOML, as is."""
    config = folder / "config.toml"
    config.write_text(
        arxiv_section(http.url, categories="+".join(codes))
        + f'\n[storage]\npath = "{folder / "digest.db"}"\n'
        + (f'\n[files]\ndir = "{folder / "digests"}"\n' if files else "")
        + f'\n[llm]\nbase_url = "{http.url}/v1"\nmodel = "bench-model"\napi_key = "sk-bench"\n'
        + "summarize = 15\nconcurrency = 4\ntimeout = 30.0\n\n"
        + smtp.settings_toml()
        + sections
        + profiles,
        encoding="utf-8")
    return config


# `digest run` with the model in sentence-transformers, as digest embedded before the ONNX export.
TORCH_PATH = ("import sys\nfrom digest import embed\n"
              "embed.shared_embedder = lambda settings: embed.Embedder(settings, backend='sentence-transformers')\n"
              "from digest.cli import main\nsys.argv[0] = 'digest'\nmain()\n")


def bench_env() -> dict:
    """The environment of a measured `digest run`: the model's ONNX export in bench/out/cache."""
    env = {**os.environ, "XDG_CACHE_HOME": str(ROOT / "bench" / "out" / "cache")}
    env.pop("CACHE_DIRECTORY", None)
    return env


def run_day(config: Path, torch_path: bool = False) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one `digest run` process."""
    program = ["-c", TORCH_PATH] if torch_path else ["-m", "digest"]
    args = [sys.executable, *program, "--config", str(config), "run", "--day", DAY.isoformat()]
    wall, peak, _, _ = measure(args, bench_env())
    return wall, peak


def export_model() -> None:
    """The ONNX export, made once into bench/out/cache before anything is timed."""
    code = ("import logging, sys\nlogging.basicConfig(level=logging.INFO)\nfrom digest import embed\n"
            "from digest.config import EmbeddingSettings\nfrom digest.embed_onnx import OnnxEncoder\n"
            "sys.exit(0 if isinstance(embed.Embedder(EmbeddingSettings())._load(), OnnxEncoder) else 1)\n")
    subprocess.run([sys.executable, "-c", code], env=bench_env(), check=True)


def stage_times(db_path: Path) -> dict[str, float]:
    with sqlite3.connect(db_path) as conn:
        run_id = conn.execute("SELECT MAX(id) FROM runs").fetchone()[0]
        rows = conn.execute("SELECT stage, duration FROM run_stages WHERE run_id = ?", [run_id]).fetchall()
    return {stage: duration or 0.0 for stage, duration in rows}


def main() -> None:
    codes = known_categories(listing_papers(DAY))
    export_model()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp, LoopbackServer() as http, SMTPServer() as smtp:
        folder = Path(tmp)
        serve_feeds(http, {DAY: feed_xml(DAY, codes)}, day=DAY)
        http.routes["/v1/chat/completions"] = llm_reply
        config = write_config(folder, http, smtp, codes)
        db_path = folder / "digest.db"

        results, peaks = {}, {}
        for name in ("first", "again", "rebuilt"):
            if name == "rebuilt":
                with sqlite3.connect(db_path) as conn:
                    conn.execute("PRAGMA foreign_keys = ON")
                    conn.execute("DELETE FROM digests")
            wall, peaks[name] = run_day(config)
            results[name] = (wall, stage_times(db_path))
        with sqlite3.connect(db_path) as conn:
            papers = conn.execute("SELECT COUNT(*) FROM announcements WHERE announced_on = ?",
                                  [DAY.isoformat()]).fetchone()[0]
        emails = len(smtp.messages)
        for stale in folder.glob("digest.db*"):  # the same day from nothing, the way digest embedded before
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        torch_wall, torch_peak = run_day(config, torch_path=True)
        torch_embed = stage_times(db_path).get("embed")

    print(f"digest run --day {DAY}: {papers} papers, LLM latency {LLM_LATENCY:.0f} s, {emails} emails sent in all")
    print(f"{'stage':<10}" + "".join(f"{name:>10}" for name in results) + f"{'again/1st':>11}{'rebuilt/1st':>12}")
    first = results["first"][1]
    for stage in STAGES + ["process"]:
        cells = []
        for name, (wall, stages) in results.items():
            value = wall if stage == "process" else stages.get(stage)
            cells.append(f"{value:>9.2f}s" if value is not None else f"{'-':>10}")
        base = results["first"][0] if stage == "process" else first.get(stage)
        ratios = ""
        for name in ("again", "rebuilt"):
            wall, stages = results[name]
            value = wall if stage == "process" else stages.get(stage)
            ratios += f"{(value / base):>11.1%}" if base and value is not None else f"{'-':>11}"
        print(f"{stage:<10}" + "".join(cells) + ratios)
    print(f"{'peak RSS':<10}" + "".join(f"{peaks[name]:>7.0f} MB" for name in results))
    print("(process: wall time of the whole `digest run` process, Python start-up and imports included;")
    print(" peak RSS: the largest resident memory of that process)")
    print(f"\nthe first run with the model in sentence-transformers (torch), as before: embed {torch_embed:.2f} s, "
          f"process {torch_wall:.2f} s, peak RSS {torch_peak:.0f} MB")
    first_wall, first_peak = results["first"][0], peaks["first"]
    print(f"now / before: embed {first.get('embed', 0) / torch_embed:.2f}x, process {first_wall / torch_wall:.2f}x, "
          f"peak RSS {first_peak / torch_peak:.2f}x")
    worst = max(peaks.values())
    print(f"target, `digest run` peak RSS <= 500 MB for a 500-paper day: {worst:.0f} MB at most for {papers} papers "
          f"({'met' if worst <= 500 else 'NOT met'})")


if __name__ == "__main__":
    main()
