"""config.pbtxt parsing, completion from the model file, and version policies (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import DENSE_CONFIG, write_dense, write_double

from infer.config.model import ModelConfig, VersionPolicy
from infer.config.pbtxt import config_from_json, config_from_pbtxt, config_to_proto, proto_to_config
from infer.core.types import DataType, TensorSpec
from infer.errors import ModelConfigError
from infer.registry.complete import complete_config, served_specs
from infer.registry.repository import ModelRepository
from infer.runtimes.base import Signature


def test_a_full_triton_config_parses_with_its_meaning() -> None:
    cfg = config_from_pbtxt(DENSE_CONFIG, "dense")
    assert cfg.max_batch_size == 32
    assert cfg.input[0].datatype is DataType.FP32 and cfg.input[0].dims == [64]
    db = cfg.dynamic_batching
    assert db is not None and db.preferred_batch_size == [8, 16] and db.max_queue_delay_microseconds == 2000
    assert db.priority_levels == 2 and db.default_priority_level == 2
    assert db.policy(1).max_queue_size == 256
    assert cfg.instance_count == 2
    assert cfg.parameter("intra_op_thread_count") == "1"


def test_config_survives_a_round_trip_through_the_protobuf_message() -> None:
    cfg = config_from_pbtxt(DENSE_CONFIG, "dense")
    again = proto_to_config(config_to_proto(cfg), "again")
    assert again.model_dump(exclude={"version_policy"}) == cfg.model_dump(exclude={"version_policy"})
    # the implicit default policy is written out explicitly, as Triton reports it
    assert again.version_policy.latest is not None and again.version_policy.latest.num_versions == 1


@pytest.mark.parametrize("text,words", [
    ('name: "m" sequence_batching { }', "field 'sequence_batching' is not supported by infer"),
    ('name: "m" input [ { name: "x" data_type: TYPE_FP32 dims: [1] reshape { shape: [1] } } ]',
     "field 'input[0].reshape' is not supported by infer"),
    ('name: "m" ensemble_scheduling { }', "ensemble_scheduling"),
    ('name: "m" max_batch_size: -1', "max_batch_size"),
    ('name: "m" no_such_field: 1', "no_such_field"),
    ('name: "m" max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 8 ] }', "preferred_batch_size"),
    ('name: "m" max_batch_size: 4 dynamic_batching { priority_levels: 2 default_priority_level: 3 }',
     "default_priority_level"),
    ('name: "m" input [ { name: "x" data_type: TYPE_BF16 dims: [1] } ]', "data_type"),
    ('name: "m" instance_group [ { count: 65 } ]', "count"),
])
def test_unsupported_or_invalid_fields_are_refused_by_name(text: str, words: str) -> None:
    with pytest.raises(ModelConfigError) as e:
        config_from_pbtxt(text, "model 'm' config.pbtxt")
    assert words in e.value.message
    assert "model 'm' config.pbtxt" in e.value.message


def test_json_config_override() -> None:
    cfg = config_from_json('{"name": "m", "max_batch_size": 4, "version_policy": {"all": {}}}', "override")
    assert cfg.max_batch_size == 4 and cfg.version_policy.select([3, 1, 2]) == [1, 2, 3]


@pytest.mark.parametrize("policy,found,expected", [
    (VersionPolicy(), [1, 3, 2], [3]),
    (VersionPolicy.model_validate({"latest": {"num_versions": 2}}), [1, 3, 2], [2, 3]),
    (VersionPolicy.model_validate({"all": {}}), [2, 1], [1, 2]),
    (VersionPolicy.model_validate({"specific": {"versions": [1, 7]}}), [1, 2], [1]),
])
def test_version_policies(policy: VersionPolicy, found: list[int], expected: list[int]) -> None:
    assert policy.select(found) == expected


SIG = Signature(
    inputs=(TensorSpec("x", DataType.FP32, (-1, 4)),),
    outputs=(TensorSpec("y", DataType.FP32, (-1, 4)), TensorSpec("z", DataType.INT64, (-1,))),
)


def test_an_empty_config_is_completed_from_the_model_file() -> None:
    done = complete_config(ModelConfig(), SIG, name="m", default_max_batch_size=16, strict=False)
    assert done.name == "m" and done.max_batch_size == 16 and done.dynamic_batching is not None
    assert [(t.name, t.data_type, t.dims) for t in done.input] == [("x", "TYPE_FP32", [4])]
    assert [(t.name, t.dims) for t in done.output] == [("y", [4]), ("z", [])]
    ins, outs = served_specs(done)
    assert ins[0].shape == (-1, 4) and outs[1].shape == (-1,)


def test_a_partial_config_keeps_what_it_says() -> None:
    partial = config_from_pbtxt('name: "m" max_batch_size: 0', "m")
    no_batch = Signature(inputs=(TensorSpec("x", DataType.FP32, (2, 4)),),
                         outputs=(TensorSpec("y", DataType.FP32, (2, 4)),))
    done = complete_config(partial, no_batch, name="m", default_max_batch_size=16, strict=False)
    assert done.max_batch_size == 0 and done.dynamic_batching is None and done.input[0].dims == [2, 4]


@pytest.mark.parametrize("text,words", [
    ('input [ { name: "x" data_type: TYPE_FP64 dims: [4] } ]', "is TYPE_FP64 but the model file has TYPE_FP32"),
    ('input [ { name: "x" data_type: TYPE_FP32 dims: [5] } ]', "dims [5] do not match"),
    ('input [ { name: "w" data_type: TYPE_FP32 dims: [4] } ]', "has inputs ['x'] that the config does not declare"),
    ('output [ { name: "q" data_type: TYPE_FP32 dims: [4] } ]', "config output 'q' is not in the model file"),
    ('name: "other"', "differs from the directory name"),
])
def test_a_config_that_lies_about_the_model_is_refused(text: str, words: str) -> None:
    with pytest.raises(ModelConfigError) as e:
        complete_config(config_from_pbtxt(text, "m"), SIG, name="m", default_max_batch_size=16, strict=False)
    assert words in e.value.message


def test_strict_mode_needs_inputs_and_outputs() -> None:
    with pytest.raises(ModelConfigError, match="strict"):
        complete_config(ModelConfig(), SIG, name="m", default_max_batch_size=16, strict=True)


def test_batching_a_model_without_a_variable_first_dim_is_refused() -> None:
    fixed = Signature(inputs=(TensorSpec("x", DataType.FP32, (1, 4)),),
                      outputs=(TensorSpec("y", DataType.FP32, (1, 4)),))
    with pytest.raises(ModelConfigError, match="no variable first dimension"):
        complete_config(config_from_pbtxt("max_batch_size: 8", "m"), fixed, name="m", default_max_batch_size=16,
                        strict=False)


def test_repository_reads_layout_and_refuses_unsafe_names(tmp_path: Path) -> None:
    write_double(tmp_path, versions=(1, 3))
    write_dense(tmp_path, config=DENSE_CONFIG)
    (tmp_path / ".hidden").mkdir()
    repo = ModelRepository(tmp_path)
    assert repo.names() == ["dense", "double"]
    assert repo.versions("double") == [1, 3]
    assert repo.read_config("double") == ModelConfig(name="double")
    assert repo.read_config("dense").max_batch_size == 32
    for bad in ("../etc", "..", "a/b", ""):
        with pytest.raises(Exception) as e:
            repo.model_dir(bad)
        assert type(e.value).__name__ in ("InvalidArgument", "NotFound")


@pytest.mark.parametrize("fields,words", [
    ({"tls_cert": Path("c.pem")}, "--tls-cert and --tls-key go together"),
    ({"tls_client_ca": Path("ca.pem")}, "--tls-client-ca needs"),
    ({"load_models": ["m"]}, "--load-model needs --model-control-mode explicit"),
    ({"grpc_port": 70000}, "grpc_port"),
])
def test_server_config_cross_checks(fields: dict[str, object], words: str) -> None:
    from pydantic import ValidationError

    from infer.config.server import ServerConfig

    with pytest.raises(ValidationError, match=words):
        ServerConfig(**fields)  # type: ignore[arg-type]
