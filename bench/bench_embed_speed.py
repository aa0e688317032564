"""Embedding throughput and memory on one real arXiv day, against plain SentenceTransformer.encode in the same run.

Texts: the 537 papers (title + abstract) announced on 2026-06-22 in
tests/data/listing_2026-06-22_to_06-30.jsonl.gz. Baseline: ``SentenceTransformer(model).encode(texts)``
with its defaults. Every variant encodes the same texts ROUNDS times, each time in a fresh process (torch's
and onnxruntime's thread pools in one process slow each other), interleaved with the others so that a
neighbour's load on the machine hits them alike; the best round counts. "agrees" is the least cosine
similarity, text by text, between the variant's vectors and the baseline's (normalised): 0.9999 or more is
"the same vectors", which keeps every stored embedding valid. nDCG@10 is bench_rank_quality's ranking
("seeds + text") with every vector from that variant.

Then the float32 ceiling: the model's matrix products for these texts counted in floating-point operations,
each path's rate in GFLOP/s, and the rate of one large float32 matrix product of the model's own shape in
onnxruntime and in torch: no float32 path can beat plain encode by more than the faster of those over
plain's rate, whatever it does with threads, batches or graphs.

Then each batch size's peak memory: a fresh process embeds the whole day with it and reports its peak RSS
(the process's whole footprint: Python, the model, the batch's activations).

The ONNX export is made (once) in bench/out/cache, like a user's ~/.cache/digest.

    .venv/bin/python bench/bench_embed_speed.py [--rounds 2] [--skip-quality] [--skip-memory] [--quick]
    (--quick: only the baseline, digest in float32 and int8, and batch 64)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["XDG_CACHE_HOME"] = str(ROOT / "bench" / "out" / "cache")
os.environ.pop("CACHE_DIRECTORY", None)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_rank_quality as quality  # noqa: E402
import numpy as np  # noqa: E402

from digest import embed, embed_onnx, rank  # noqa: E402
from digest.config import EmbeddingSettings, cache_dir  # noqa: E402
from digest.records import Announcement  # noqa: E402
from peak_rss import measure  # noqa: E402

DAY = "2026-06-22"
BASELINE = "plain encode (defaults: batch 32)"
DIGEST = f"digest: ONNX, batch {EmbeddingSettings().batch_size}"
INT8 = f"digest: ONNX int8 (precision), batch {EmbeddingSettings().batch_size}"
PER_TENSOR = "ONNX int8 per tensor (quantiser's default)"
QUICK = (BASELINE, DIGEST, "ONNX, batch 64", INT8)
MEMORY_BATCHES = (4, 8, 16, 32, 64)


def day_texts() -> list[str]:
    return [p.text for p in quality.load_days()[DAY]]


def variants(quick: bool = False) -> dict:
    """name -> a factory of that variant's encode function (texts -> float32 rows); with ``quick``, only
    those in QUICK. Each variant is built and timed in a process of its own (time_in_child): torch's and
    onnxruntime's thread pools in one process slow each other (plain encode took 38 s beside the ONNX
    sessions in one run, 24-30 s alone)."""
    chosen = {
        BASELINE: lambda: _plain().encode,
        "before: sentence-transformers, batch 64": lambda: partial(_plain().encode, batch_size=64,
                                                                   normalize_embeddings=True),
        DIGEST: lambda: embed.Embedder(EmbeddingSettings()).embed_texts,
        "ONNX, batch 16": lambda: partial(_float32().encode, batch_size=16),
        "ONNX, batch 64": lambda: partial(_float32().encode, batch_size=64),
        "ONNX, batch 16, not length-sorted": lambda: partial(unsorted, _float32(), size=16),
        "ONNX, batch 16, 1 thread": lambda: partial(_float32(threads=1).encode, batch_size=16),
        "ONNX, batch 16, threads never spin": lambda: partial(without_spinning, size=16),
        INT8: lambda: embed.Embedder(EmbeddingSettings(precision="int8")).embed_texts,
        PER_TENSOR: lambda: partial(per_tensor_int8().encode, batch_size=8),
    }
    return {name: build for name, build in chosen.items() if not quick or name in QUICK}


def _plain():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(embed.resolve_model("all-MiniLM-L6-v2"), device="cpu")


def _float32(threads: int = 0):
    return embed_onnx.OnnxEncoder(_export_folder(), threads=threads)


def prepare() -> None:
    """The export, its int8 graph and the per-tensor int8 model, made before anything is timed."""
    ours = embed.Embedder(EmbeddingSettings(precision="int8"))
    if not isinstance(ours._load(), embed_onnx.OnnxEncoder) or ours._model.graph != embed_onnx.INT8_GRAPH:
        sys.exit("the bundled model did not export to ONNX or quantise to int8; see the log above")
    per_tensor_int8()


def per_tensor_int8():
    """The export quantised by onnxruntime's defaults (one scale per weight tensor), the first int8 tried:
    it drifts (least cosine 0.87), which is why digest's int8 has one scale per output channel."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = ROOT / "bench" / "out" / f"int8-per-tensor-{_export_folder().name}"
    if not (folder / "model.onnx").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("tokenizer.json", "export.json"):
            (folder / name).write_bytes((_export_folder() / name).read_bytes())
        # The export's fused operators (Attention, SkipLayerNormalization) are outside shape inference's
        # domain: their outputs are float, which the quantiser must be told.
        quantize_dynamic(_export_folder() / "model.onnx", folder / "model.onnx", weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return embed_onnx.OnnxEncoder(folder)


def model_gflop(texts: list[str]) -> float:
    """The multiply-adds of the model's matrix products (projections, feed-forward, attention scores and
    mixing) for these texts, each at its own token count, in GFLOP: what every path must compute."""
    import json

    folder = embed_onnx.model_folder(embed.resolve_model("all-MiniLM-L6-v2"))
    config = json.loads((folder / "config.json").read_text())
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    counts = [len(e.ids) for e in embed_onnx.OnnxEncoder(_export_folder()).tokenizer.encode_batch(texts)]
    per_layer = sum(2 * n * (4 * hidden * hidden + 2 * hidden * inner) + 4 * n * n * hidden for n in counts)
    return layers * per_layer / 1e9


def gemm_gflops(rows: int = 2048, repeats: int = 30) -> dict[str, float]:
    """GFLOP/s of one float32 matrix product of the feed-forward's shape ([rows, hidden] x [hidden, inner]),
    the best of ``repeats``, in onnxruntime (2 threads, as digest runs) and in torch (its default threads)."""
    import onnx
    import onnxruntime
    import torch
    from onnx import TensorProto, helper, numpy_helper

    hidden, inner = 384, 1536
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, hidden), dtype=np.float32)
    w = rng.standard_normal((hidden, inner), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [rows, hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, inner])],
                              [numpy_helper.from_array(w, "w")])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(onnx.helper.make_model(graph).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    ta, tw = torch.from_numpy(a), torch.from_numpy(w)
    flop = 2 * rows * hidden * inner / 1e9
    best = {}
    # One library after the other: onnxruntime's threads spin for a while after each run and would slow
    # torch's if the two took turns.
    for name, run in (("onnxruntime", lambda: session.run(None, {"a": a})), ("torch", lambda: ta @ tw)):
        run()
        took = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            took.append(time.perf_counter() - started)
        best[name] = min(took)
        time.sleep(0.5)
    return {name: flop / seconds for name, seconds in best.items()}


def without_spinning(texts: list[str], size: int, encoders: dict = {}) -> np.ndarray:
    """onnxruntime's idle threads spin between operators by default; this session lets them sleep."""
    if not encoders:
        import onnxruntime

        encoder = encoders["it"] = embed_onnx.OnnxEncoder(_export_folder())
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        encoder.session = onnxruntime.InferenceSession(str(_export_folder() / "model.onnx"), options,
                                                       providers=["CPUExecutionProvider"])
    return encoders["it"].encode(texts, size)


def _export_folder() -> Path:
    """The bundled model's export in bench/out/cache, made by variants() if it was not there."""
    folder = embed_onnx.model_folder(embed.resolve_model("all-MiniLM-L6-v2"))
    return cache_dir() / "onnx" / embed_onnx.export_key(folder)


def unsorted(encoder, texts: list[str], size: int) -> np.ndarray:
    """Batches in the texts' own order: what length-sorting saves."""
    encodings = encoder.tokenizer.encode_batch(texts)
    rows = np.vstack([encoder._run(encodings[start:start + size]) for start in range(0, len(texts), size)])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def time_variants(names: list[str], rounds: int) -> tuple[dict, dict]:
    """(best seconds, vectors) per variant, each round timing every variant once in a fresh process."""
    best = {name: float("inf") for name in names}
    outputs = {}
    for _ in range(rounds):  # interleaved, so that other load on the machine hits every variant alike
        for number, name in enumerate(names):
            vectors = ROOT / "bench" / "out" / f"vectors-{number}.npy"
            printed = subprocess.run([sys.executable, __file__, "--time", name, str(vectors)], check=True,
                                     capture_output=True, text=True).stdout
            best[name] = min(best[name], float(printed.split()[-1]))
            outputs[name] = np.load(vectors)
    return best, outputs


def time_in_child(name: str, vectors: str) -> int:
    """Build one variant, warm it up, time one encode of the day's texts; print the seconds, save the rows."""
    texts = day_texts()
    encode = variants()[name]()
    encode(texts[:8])  # first-call allocations
    started = time.perf_counter()
    rows = encode(texts)
    took = time.perf_counter() - started
    np.save(vectors, np.asarray(rows, dtype=np.float32))
    print(took)
    return 0


def least_cosine(rows: np.ndarray, reference: np.ndarray) -> float:
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return float((rows * reference).sum(axis=1).min())


def ranking_quality(encode) -> float:
    """Mean nDCG@10 of digest's ranking (seeds + text) when every vector comes from ``encode``."""
    days = quality.load_days()
    seeds = quality.pick_seeds(days)
    papers = {p.id: p for d in quality.TEST_DAYS for p in days[d]}
    papers.update({p.id: p for d in quality.SEED_DAYS for p in days.get(d, []) if p.id in
                   {s for ids in seeds.values() for s in ids}})
    ids = list(papers)
    rows = encode([papers[i].text for i in ids])
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    vectors = dict(zip(ids, rows.astype(np.float32)))
    lines = [quality.PROFILES[c][0] for c in quality.PROFILES]
    interest = dict(zip(quality.PROFILES, encode(lines)))
    orders = {}
    for cat in quality.PROFILES:
        line_vector = interest[cat] / np.linalg.norm(interest[cat])
        signals = rank.Signals(interests=[rank.Anchor(quality.PROFILES[cat][0], line_vector)],
                               seeds=[rank.Anchor(f"seed paper {i}", vectors[i]) for i in seeds[cat]])
        for day in quality.TEST_DAYS:
            items = [Announcement(p, dt.date.fromisoformat(day), "new", i) for i, p in enumerate(days[day])]
            orders[(cat, day)] = [r.paper for r in rank.rank_papers(items, vectors, signals, top=quality.TOP)]
    return quality.mean_of(quality.evaluate(orders), 0)


def peak_rss_child(kind: str, batch: int) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a fresh process embedding the day with ``kind`` at ``batch``."""
    return measure([sys.executable, __file__, "--child", kind, str(batch)])[:2]


def child(kind: str, batch: int) -> int:
    texts = day_texts()
    if kind in ("onnx", "int8"):
        precision = "int8" if kind == "int8" else "float32"
        embed.Embedder(EmbeddingSettings(batch_size=batch, precision=precision)).embed_texts(texts)
    else:
        from sentence_transformers import SentenceTransformer

        SentenceTransformer(embed.resolve_model("all-MiniLM-L6-v2"), device="cpu").encode(texts, batch_size=batch)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="four variants: baseline, digest, batch 64, int8")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--time", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))
    if args.time:
        return time_in_child(*args.time)
    texts = day_texts()
    prepare()
    builders = variants(args.quick)
    seconds, outputs = time_variants(list(builders), args.rounds)
    import onnxruntime
    import torch

    base = seconds[BASELINE]
    print(f"{len(texts)} real abstracts ({DAY}), best of {args.rounds} interleaved rounds, each variant timed in "
          f"a fresh process, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}")
    print(f"{'variant':<42}{'seconds':>9}{'papers/s':>10}{'speed-up':>10}{'agrees':>10}  nDCG@10")
    plain_quality, loss = None, {}
    for name, took in seconds.items():
        agrees = least_cosine(outputs[name], outputs[BASELINE])
        score = "same vectors" if agrees >= embed_onnx.AGREEMENT else ""
        # nDCG@10 of the baseline, and of each variant whose vectors differ (the same vectors rank the same).
        if not args.skip_quality and (name == BASELINE or agrees < embed_onnx.AGREEMENT):
            value = ranking_quality(builders[name]())
            plain_quality = value if plain_quality is None else plain_quality
            loss[name] = 1 - value / plain_quality
            score = f"{value:.3f}" + ("" if name == BASELINE else f" ({-loss[name]:+.1%})")
        print(f"{name:<42}{took:9.2f}{len(texts) / took:10.1f}{base / took:9.2f}x{agrees:10.5f}  {score}")
    speed_up, agrees = base / seconds[DIGEST], least_cosine(outputs[DIGEST], outputs[BASELINE])
    print(f"target, digest >= 1.4x plain with the same vectors: {speed_up:.2f}x, least cosine {agrees:.5f} "
          f"({'met' if speed_up >= 1.4 and agrees >= embed_onnx.AGREEMENT else 'NOT met'})")
    if INT8 in loss:
        faster = base / seconds[INT8]
        print(f"target, a variant >= 2x within 0.5% nDCG@10: int8 {faster:.2f}x, nDCG@10 {-loss[INT8]:+.1%} "
              f"({'met' if faster >= 2 and loss[INT8] <= 0.005 else 'NOT met'})")
    gflop, gemm = model_gflop(texts), gemm_gflops()
    plain_rate = gflop / base
    print(f"\nfloat32 ceiling: the model's matrix products for these texts are {gflop:,.0f} GFLOP")
    print(f"{'what':<42}{'GFLOP/s':>9}{'x plain':>9}")
    for name in (BASELINE, DIGEST, INT8):
        print(f"{name:<42}{gflop / seconds[name]:9.1f}{base / seconds[name]:8.2f}x")
    for name, rate in gemm.items():
        print(f"{f'one float32 matrix product, {name}':<42}{rate:9.1f}{rate / plain_rate:8.2f}x")
    ceiling = max(gemm.values()) / plain_rate
    print(f"so no float32 path can be more than {ceiling:.2f}x plain here; digest's float32 path reaches "
          f"{seconds[BASELINE] / seconds[DIGEST]:.2f}x, {gflop / seconds[DIGEST] / max(gemm.values()):.0%} "
          f"of the matrix product's rate")
    if args.skip_memory:
        return 0
    print(f"\npeak RSS of a fresh process embedding the {len(texts)} abstracts (Python, model, activations)")
    print(f"{'path, batch size':<42}{'seconds':>9}{'peak RSS':>10}{'x plain':>9}")
    plain_seconds, plain_rss = peak_rss_child("sentence-transformers", 32)
    print(f"{'plain encode, batch 32 (baseline)':<42}{plain_seconds:9.1f}{plain_rss:7.0f} MB{1:8.2f}x")
    for batch in MEMORY_BATCHES:
        took, rss = peak_rss_child("onnx", batch)
        print(f"{f'digest ONNX, batch {batch}':<42}{took:9.1f}{rss:7.0f} MB{rss / plain_rss:8.2f}x")
    took, rss = peak_rss_child("int8", EmbeddingSettings().batch_size)
    print(f"{f'digest ONNX int8, batch {EmbeddingSettings().batch_size}':<42}{took:9.1f}{rss:7.0f} MB"
          f"{rss / plain_rss:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
