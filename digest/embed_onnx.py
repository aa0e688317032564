"""The embedding model as an ONNX graph, run by onnxruntime: a process that only embeds never imports torch.

sentence-transformers' own ONNX backend (``backend="onnx"``) needs optimum-onnx, which cannot be installed
beside sentence-transformers 6 (it requires transformers < 4.58, sentence-transformers 6 requires 5.x). So
digest exports the model itself, once per model folder, in a child process that imports torch for that
alone: the graph holds the model's own sentence-transformers modules (the transformer, its pooling, any
dense or normalisation layer) as they ran when traced, and the tokenizer saved beside it is the fast
tokenizer sentence-transformers uses, truncating at the model's ``max_seq_length``. The export is kept only
if its vectors agree with sentence-transformers' on PROBE_TEXTS (cosine >= AGREEMENT), so the vectors
stored in the database stay valid across the switch. A model that does not export cleanly is remembered
(``<key>.failed``, with the reason) and embedded by sentence-transformers.

Layout, under ``cache_dir()/onnx/``::

    <key>/model.onnx, model.onnx.data   the graph, optimised once by onnxruntime; the weights beside it
                                         are memory-mapped instead of parsed
    <key>/tokenizer.json                 the fast tokenizer, truncation and padding set as the model uses them
    <key>/export.json                    what was exported, from where, with which versions, how well it agreed
    <key>/model.int8.onnx                for ``embedding.precision = "int8"`` only: the graph with its weights
                                         quantised to int8 per output channel, made from model.onnx on first use
    <key>/int8.json, int8.failed         how well the int8 graph agreed with model.onnx, or why there is none
    <key>.failed                         one line: why this model is embedded by sentence-transformers

The int8 graph runs 2.5-2.7x as fast here (integer dot products against float32 multiply-adds) and holds a
quarter of the weights' memory. Its vectors are not the same: a cosine of 0.99 or more to the float32 ones
on real abstracts, so they are stored under their own key (``EmbeddingSettings.vectors_key``)
and the ranking bench measures what they cost (bench/bench_embed_speed.py).

Longer than most modules on purpose: the export, its cache and lock, the quantisation and the encoder
that reads what they made are one format, changed together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .config import cache_dir
from .locks import process_alive
from .quiet import import_quietly, quiet_third_party

log = logging.getLogger(__name__)

# onnxruntime's official builds (1.29 and later) send usage telemetry to Microsoft and write a device id
# under ~/.cache unless this is set before it initialises; digest calls no one its user did not configure.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

# Bump when what an export writes changes: the key covers it, so older exports are not reused.
EXPORT_FORMAT = 1
# Least cosine similarity, text by text, between an export's vectors and sentence-transformers' own.
AGREEMENT = 0.9999
# Least mean cosine between the int8 graph's vectors and model.onnx's on PROBE_TEXTS. Per-channel int8 of the
# bundled model: 0.992 there (its least, 0.984, on the one-token "x") and 0.995 on 200 real abstracts (least
# 0.991). Per-tensor int8, what onnxruntime does unless told, drifts: 0.942, and 0.931 on the abstracts.
INT8_AGREEMENT = 0.985
GRAPH = "model.onnx"
INT8_GRAPH = "model.int8.onnx"
# The child's exit status for "this model does not export cleanly" (remembered), as opposed to a crash,
# a full disk or a kill (tried again by the next process).
NOT_EXPORTABLE = 3
EXPORT_TIMEOUT = 1800
INT8_TIMEOUT = 300  # quantising the bundled model takes a few seconds
# Graph inputs and the tokenizers.Encoding field each is read from.
FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
# Texts an export is checked on: short and long, one past any max_seq_length, padding in every batch.
PROBE_TEXTS = [
    "Graph neural networks for molecular property prediction",
    "  Leading and trailing spaces, Unicode (naïve café, Schrödinger, 量子) and $\\LaTeX$ math: $x^2 + y_i$.  ",
    "A recipe for lemon cake",
    "Attention Is All You Need\nThe dominant sequence transduction models are based on complex recurrent or "
    "convolutional neural networks in an encoder-decoder configuration. We propose a new simple network "
    "architecture, the Transformer, based solely on attention mechanisms. " * 12,
    "x",
]


class NotExportable(Exception):
    """This model cannot be run from an ONNX export that matches sentence-transformers."""


def model_folder(resolved: str) -> Path | None:
    """The local folder of a model: a path as given, or a Hub model's downloaded snapshot. None for a Hub
    model not downloaded yet (sentence-transformers downloads it; a later process exports it)."""
    if Path(resolved).is_dir():
        return Path(resolved)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(resolved, local_files_only=True))
    except Exception:  # not a Hub id, or not downloaded: both mean "no local folder"
        return None


def export_key(folder: Path) -> str:
    """A hash of the model folder's files (names, sizes, modification times) and of EXPORT_FORMAT.

    Hashing the files' contents (90 MB for the bundled model) would cost 0.1 s of every cold search; a
    reinstalled or edited model has new times or sizes, and is simply exported again."""
    digest = hashlib.sha256(f"digest onnx export {EXPORT_FORMAT}\n".encode())
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            stat = path.stat()
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


class OnnxEncoder:
    """Texts -> L2-normalised float32 rows, as SentenceTransformer.encode(normalize_embeddings=True) gives."""

    def __init__(self, folder: Path, threads: int = 0, graph: str | Path = GRAPH):
        import tokenizers


        onnxruntime = import_quietly("onnxruntime")

        meta = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        self.dimensions = int(meta["dimensions"])
        self.tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        padding = self.tokenizer.padding or {}
        self.pad = {"pad_id": padding.get("pad_id", 0), "pad_type_id": padding.get("pad_type_id", 0),
                    "pad_token": padding.get("pad_token", "[PAD]"), "direction": padding.get("direction", "right")}
        self.tokenizer.no_padding()  # each batch is padded to its own longest text below
        self.tokenizer.enable_truncation(max_length=int(meta["max_seq_length"]))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per physical core
        # Optimised once at export; applying the optimisations again would cost every process 0.1-0.2 s.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.log_severity_level = 3  # errors only: the journal gets digest's lines, not onnxruntime's
        self.graph = Path(graph).name
        self.session = onnxruntime.InferenceSession(str(folder / graph), options,
                                                    providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        # Tokenized once, then batched by token count: a batch is padded to its longest text, so texts of
        # similar length waste the least work.
        encodings = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            vectors[rows] = self._run([encodings[i] for i in rows])
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def _run(self, batch) -> np.ndarray:
        width = max(len(e.ids) for e in batch)
        for encoding in batch:
            encoding.pad(width, **self.pad)
        feeds = {name: np.array([getattr(e, FIELDS[name]) for e in batch], dtype=np.int64) for name in self.inputs}
        return self.session.run(None, feeds)[0]


def load_encoder(name: str, resolved: str, threads: int = 0, precision: str = "float32") -> OnnxEncoder | None:
    """The ONNX encoder of this model, exporting it first if this folder never was; None (with one log line)
    when sentence-transformers must embed instead. ``precision="int8"`` runs the int8 graph, made on first
    use; where it cannot be made, the float32 graph (with one log line)."""
    folder = model_folder(resolved)
    if folder is None:
        log.info("embedding.model %s: no local copy to export to ONNX; sentence-transformers loads it", name)
        return None
    target = cache_dir() / "onnx" / export_key(folder)
    failed = target.with_name(target.name + ".failed")
    try:
        if not (target / "export.json").exists() and not failed.exists():
            _export_in_child(name, resolved, target, failed)
        if failed.exists():
            log.info("embedding.model %s: embedded by sentence-transformers: %s", name,
                     failed.read_text(encoding="utf-8").strip())
            return None
        if not (target / "export.json").exists():
            return None  # the export failed and said why; the next process tries again
        if precision == "int8":
            encoder = _int8_encoder(name, target, threads)
            if encoder is not None:
                return encoder
        return OnnxEncoder(target, threads)
    except Exception as exc:  # an unreadable cache or a damaged export: the model itself still works
        log.warning("embedding.model %s: cannot use the ONNX export in %s (%s); using sentence-transformers",
                    name, target, _first_line(exc))
        return None


def _int8_encoder(name: str, target: Path, threads: int) -> OnnxEncoder | None:
    """The int8 graph's encoder, quantising the export first if that was never tried; None (with one log
    line) when the model runs in float32 instead."""
    failed, graph = target / "int8.failed", target / INT8_GRAPH
    try:
        if not graph.exists() and not failed.exists():
            log.info("embedding.precision int8: quantising %s's ONNX export, once", name)
            status, said = _child(["--int8", str(target)], INT8_TIMEOUT)
            if status == NOT_EXPORTABLE:
                failed.write_text(said + "\n", encoding="utf-8")
            elif status != 0:
                log.warning("embedding.precision int8: quantising %s failed (%s); float32 this time", name, said)
                return None
        if failed.exists():
            log.info("embedding.precision int8: %s runs in float32: %s (delete %s to try again)", name,
                     failed.read_text(encoding="utf-8").strip(), failed)
            return None
    except OSError as exc:  # an unreadable or read-only cache: float32 still works
        log.warning("embedding.precision int8: cannot quantise %s in %s (%s); float32 this time", name, target,
                    _first_line(exc))
        return None
    try:
        return OnnxEncoder(target, threads, INT8_GRAPH)
    except Exception as exc:  # damaged, or made by an onnxruntime this one cannot read: made again next time
        graph.unlink(missing_ok=True)
        log.warning("embedding.precision int8: cannot load %s's int8 graph (%s); float32 this time, and it is "
                    "made again by the next process", name, _first_line(exc))
        return None


def _child(args: list[str], timeout: float) -> tuple[int | None, str]:
    """Run ``python -m digest.embed_onnx ARGS``: its exit status (None if it timed out) and its last line."""
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    try:
        child = subprocess.run([sys.executable, "-m", "digest.embed_onnx", *args],
                               capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, f"took more than {timeout:.0f} s"
    return child.returncode, (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]


def _export_in_child(name: str, resolved: str, target: Path, failed: Path) -> None:
    """Export in a child process: torch and its memory go away with it, and this process stays without."""
    log.info("embedding.model %s: exporting to ONNX, once, into %s", name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    status, said = _child([resolved, str(target)], EXPORT_TIMEOUT)
    if status == 0:
        log.info("embedding.model %s: exported to ONNX in %.1f s", name, time.monotonic() - started)
    elif status == NOT_EXPORTABLE:
        failed.write_text(said + "\n", encoding="utf-8")
    else:
        log.warning("embedding.model %s: the ONNX export failed (%s); using sentence-transformers this time",
                    name, said)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- the export (in the child process) -----------------------------------------------------------------

def export(resolved: str, target: Path) -> None:
    """Export ``resolved`` into ``target``, checked against sentence-transformers; NotExportable says why not."""
    import warnings

    import onnxruntime
    import sentence_transformers
    import torch


    quiet_third_party()
    warnings.filterwarnings("ignore")  # the tracer's and the legacy exporter's warnings are about the trace
    model = _load_for_export(sentence_transformers.SentenceTransformer, resolved)
    features = model.preprocess(PROBE_TEXTS[:2])  # two lengths: the traced graph takes the masked path
    names = [key for key, value in features.items() if isinstance(value, torch.Tensor)]
    if set(names) - set(FIELDS) or "input_ids" not in names:
        raise NotExportable(f"its inputs {names} are not only token ids, attention mask and token types")
    if getattr(getattr(model, "tokenizer", None), "backend_tokenizer", None) is None:
        raise NotExportable("its tokenizer has no fast (tokenizers) version")
    scratch = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        _write_tokenizer(model, scratch)
        meta = {"model": resolved, "inputs": names, "max_seq_length": int(model.max_seq_length),
                "dimensions": int(model.get_embedding_dimension())}
        _write_json(scratch / "export.json", meta)
        for fused in (True, False):  # the fused graph is faster and smaller; the plain one, a second chance
            _write_graph(model, features, names, scratch, fused)
            agreement = _agreement(model, scratch)
            if agreement >= AGREEMENT:
                break
        else:
            raise NotExportable(f"its ONNX export's vectors differ from sentence-transformers' "
                                f"(least cosine {agreement:.6f} < {AGREEMENT})")
        meta.update(agreement=agreement, fused_attention=fused, modules=[type(m).__name__ for m in model],
                    exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    versions={"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                              "sentence-transformers": sentence_transformers.__version__})
        _write_json(scratch / "export.json", meta)
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "export.json").exists():  # not another process's finished export
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _load_for_export(loader, resolved: str):
    """The model with transformers' plain ("eager") attention where it has one: traced, PyTorch's fused
    attention becomes a tangle of ops that onnxruntime can neither fuse nor run in less memory."""
    try:
        return loader(resolved, device="cpu", model_kwargs={"attn_implementation": "eager"}).eval()
    except (TypeError, ValueError):  # not a transformers model, or one without eager attention
        return loader(resolved, device="cpu").eval()


def _write_graph(model, features, names: list[str], folder: Path, fused: bool) -> None:
    import onnx
    import onnxruntime
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """The whole SentenceTransformer (every module, pooling included) as a function of token tensors."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model({**dict(zip(names, tensors)), "modality": "text"})["sentence_embedding"]

    raw = folder / "raw.onnx"
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    with torch.no_grad():
        torch.onnx.export(SentenceEmbedding(), tuple(features[n] for n in names), str(raw), input_names=names,
                          output_names=["sentence_embedding"], dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
    graph = _fuse_attention(raw, model) if fused else onnx.load(str(raw))
    # The weights in a file of their own: onnxruntime maps it, where it parses a single 90 MB protobuf and
    # holds a second copy (102 MB against 188 MB peak for a session, 0.3 s against 1.5 s to open it).
    onnx.save_model(graph, str(folder / "plain.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="plain.onnx.data", size_threshold=1024)
    # Optimise once (constant folding, the remaining fusions) and save the result: later sessions skip that
    # work. EXTENDED, not ALL: ALL adds layouts specific to this machine's CPU, and a cache may be shared.
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / "model.onnx")
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.onnx.data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    onnxruntime.InferenceSession(str(folder / "plain.onnx"), options, providers=["CPUExecutionProvider"])
    for scrap in ("raw.onnx", "plain.onnx", "plain.onnx.data"):
        (folder / scrap).unlink()


def _fuse_attention(raw: Path, model):
    """onnxruntime's transformer optimizer: each layer's attention becomes one Attention op, which runs
    faster and holds a third less memory per batch than the ops it replaces (measured on the bundled model)."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    config = getattr(model[0].auto_model, "config", None) if hasattr(model[0], "auto_model") else None
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if not heads or not hidden:
        return onnx.load(str(raw))
    return optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0).model


def _write_tokenizer(model, folder: Path) -> None:
    """The fast tokenizer as sentence-transformers calls it: truncated at max_seq_length, padded to the
    longest text of a batch with the model's pad token, on the model's padding side."""
    import copy

    wrapper = model.tokenizer
    tokenizer = copy.deepcopy(wrapper.backend_tokenizer)
    tokenizer.enable_truncation(max_length=int(model.max_seq_length))
    tokenizer.enable_padding(pad_id=wrapper.pad_token_id or 0, pad_type_id=wrapper.pad_token_type_id or 0,
                             pad_token=wrapper.pad_token or "[PAD]", direction=wrapper.padding_side or "right")
    tokenizer.save(str(folder / "tokenizer.json"))


def _agreement(model, folder: Path) -> float:
    """The least cosine, text by text, between the export and sentence-transformers, in padded batches
    and alone."""
    expected = model.encode(PROBE_TEXTS, batch_size=2, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)
    encoder = OnnxEncoder(folder, threads=1)
    batched = encoder.encode(PROBE_TEXTS, batch_size=2)
    alone = np.vstack([encoder.encode([text], batch_size=1) for text in PROBE_TEXTS])
    return float(min((expected * batched).sum(axis=1).min(), (expected * alone).sum(axis=1).min()))


def quantize(folder: Path) -> None:
    """Write ``folder``/INT8_GRAPH: model.onnx with every weight quantised to int8 per output channel
    (activations are quantised batch by batch as it runs), optimised once like model.onnx, kept only if
    its vectors agree with model.onnx's (mean cosine >= INT8_AGREEMENT); NotExportable says why not."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for left in folder.glob(".int8.*"):  # a child killed at its timeout leaves its scratch folder
        pid = left.suffix.lstrip(".")
        if not pid.isdigit() or not process_alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)
    scratch = folder / f".int8.{os.getpid()}"
    scratch.mkdir()
    try:
        # Handed a path, the quantiser writes its shape-inferred copy beside that graph, in the export; handed
        # the graph itself (weights loaded), it works in a temporary folder of its own. The fused operators
        # (Attention, SkipLayerNormalization) are outside shape inference's domain: the quantiser must be
        # told their outputs are float.
        quantize_dynamic(onnx.load(str(folder / GRAPH)), scratch / "quantized.onnx", weight_type=QuantType.QInt8,
                         per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        options = onnxruntime.SessionOptions()
        # EXTENDED fuses each quantise-multiply-rescale into one operator: 8% faster than leaving it to BASIC.
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(scratch / INT8_GRAPH)
        onnxruntime.InferenceSession(str(scratch / "quantized.onnx"), options, providers=["CPUExecutionProvider"])
        float32, int8 = OnnxEncoder(folder, threads=1), OnnxEncoder(folder, threads=1, graph=scratch / INT8_GRAPH)
        agreement = float((float32.encode(PROBE_TEXTS, 2) * int8.encode(PROBE_TEXTS, 2)).sum(axis=1).mean())
        if agreement < INT8_AGREEMENT:
            raise NotExportable(f"its int8 vectors differ from float32's (mean cosine {agreement:.4f} "
                                f"< {INT8_AGREEMENT})")
        _write_json(scratch / "int8.json", {"agreement": agreement, "onnxruntime": onnxruntime.__version__,
                                            "quantised_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        os.replace(scratch / "int8.json", folder / "int8.json")
        os.replace(scratch / INT8_GRAPH, folder / INT8_GRAPH)  # last: its presence means "ready"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    """``python -m digest.embed_onnx MODEL TARGET``: what _export_in_child runs; ``--int8 TARGET``: what
    _int8_encoder runs. Exit status NOT_EXPORTABLE when the model cannot be exported or quantised
    (remembered), 1 for anything that may pass (a full disk, no memory)."""
    first, target = argv
    try:
        if first == "--int8":
            quantize(Path(target))
        else:
            export(first, Path(target))
    except (OSError, MemoryError) as exc:
        print(f"{type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1
    except NotExportable as exc:
        print(f"{'it' if first == '--int8' else 'its ONNX export'} is not usable: {exc}", file=sys.stderr)
        return NOT_EXPORTABLE
    except Exception as exc:  # the tracer, exporter and quantiser fail in many ways; all mean "not exportable"
        doing = "quantise to int8" if first == "--int8" else "export to ONNX"
        print(f"it does not {doing}: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return NOT_EXPORTABLE
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
