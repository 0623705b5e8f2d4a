"""Wire compatibility of infer's protobuf definitions with tritonclient's.

tritonclient ships its own generated modules for Triton's ``grpc_service.proto`` and
``model_config.proto``. They register the same ``inference.*`` names (and the same proto
file names) in protobuf's default descriptor pool as ours, so one process cannot import
both. Everything tritonclient-side therefore runs in a subprocess (``sys.executable -c``),
and this process only ever imports ``infer._proto``.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from infer._proto import grpc_service_pb2 as pb
from infer._proto import model_config_pb2 as mc

ROOT = Path(__file__).resolve().parents[2]

# Imports tritonclient's generated modules as `svc` and `mc` (the service module was
# renamed between releases, so try both names).
_TRITON_IMPORTS = """
import importlib
try:
    svc = importlib.import_module("tritonclient.grpc.grpc_service_pb2")
except ImportError:
    svc = importlib.import_module("tritonclient.grpc.service_pb2")
mc = importlib.import_module("tritonclient.grpc.model_config_pb2")
"""


def describe_files(file_descriptors: list[Any]) -> dict[str, Any]:
    """Summarise messages (with nested types), enums and services of proto files.

    Must stay self-contained: its source is also shipped to the tritonclient subprocess.
    """
    from google.protobuf import descriptor_pb2

    messages: dict[str, Any] = {}
    enums: dict[str, dict[str, int]] = {}
    services: dict[str, Any] = {}

    def add_enum(prefix: str, enum: Any) -> None:
        enums[f"{prefix}.{enum.name}"] = {v.name: v.number for v in enum.value}

    def add_message(prefix: str, msg: Any) -> None:
        full = f"{prefix}.{msg.name}"
        fields = {}
        for f in msg.field:
            oneof = msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
            fields[f.name] = {
                "number": f.number,
                "type": f.type,
                "label": f.label,
                "type_name": f.type_name,
                "oneof": oneof,
                "proto3_optional": f.proto3_optional,
            }
        messages[full] = {"fields": fields, "map_entry": msg.options.map_entry}
        for nested in msg.nested_type:
            add_message(full, nested)
        for enum in msg.enum_type:
            add_enum(full, enum)

    for fd in file_descriptors:
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        prefix = f".{proto.package}" if proto.package else ""
        for msg in proto.message_type:
            add_message(prefix, msg)
        for enum in proto.enum_type:
            add_enum(prefix, enum)
        for service in proto.service:
            services[f"{prefix}.{service.name}"] = {
                m.name: {
                    "input_type": m.input_type,
                    "output_type": m.output_type,
                    "client_streaming": m.client_streaming,
                    "server_streaming": m.server_streaming,
                }
                for m in service.method
            }
    return {"messages": messages, "enums": enums, "services": services}


def run_triton(body: str, tmp_path: Path, stdin: bytes = b"") -> Any:
    """Run ``body`` with tritonclient's modules imported; return the JSON it writes to ``out``."""
    out = tmp_path / "triton_out.json"
    script = "\n".join(
        [
            "from __future__ import annotations",
            "import json, sys",
            _TRITON_IMPORTS,
            textwrap.dedent(inspect.getsource(describe_files)),
            f"out = {str(out)!r}",
            textwrap.dedent(body),
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def triton_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    body = """
    with open(out, "w") as fh:
        json.dump(describe_files([svc.DESCRIPTOR, mc.DESCRIPTOR]), fh)
    """
    schema: dict[str, Any] = run_triton(body, tmp_path_factory.mktemp("schema"))
    return schema


@pytest.fixture(scope="module")
def our_schema() -> dict[str, Any]:
    return describe_files([pb.DESCRIPTOR, mc.DESCRIPTOR])


def test_triton_schema_is_not_empty(triton_schema: dict[str, Any]) -> None:
    # Guard against the comparisons below passing vacuously.
    assert ".inference.ModelInferRequest" in triton_schema["messages"]
    assert ".inference.ModelConfig" in triton_schema["messages"]
    assert ".inference.DataType" in triton_schema["enums"]
    assert len(triton_schema["services"][".inference.GRPCInferenceService"]) >= 20


def test_every_triton_message_and_field_matches(
    triton_schema: dict[str, Any], our_schema: dict[str, Any]
) -> None:
    problems: list[str] = []
    for name, theirs in sorted(triton_schema["messages"].items()):
        ours = our_schema["messages"].get(name)
        if ours is None:
            problems.append(f"missing message {name}")
            continue
        if ours["map_entry"] != theirs["map_entry"]:
            problems.append(f"{name}: map_entry {ours['map_entry']} != {theirs['map_entry']}")
        for field_name, tf in sorted(theirs["fields"].items()):
            of = ours["fields"].get(field_name)
            if of is None:
                problems.append(f"missing field {name}.{field_name}")
            elif of != tf:
                problems.append(f"{name}.{field_name}: ours {of} != triton {tf}")
        # A number triton uses must not carry a different field in ours.
        their_numbers = {f["number"]: n for n, f in theirs["fields"].items()}
        for field_name, of in ours["fields"].items():
            other = their_numbers.get(of["number"])
            if other is not None and other != field_name:
                problems.append(f"{name}: number {of['number']} is {field_name} in ours, {other} in triton")
    assert not problems, "\n".join(problems)


def test_every_triton_enum_value_matches(triton_schema: dict[str, Any], our_schema: dict[str, Any]) -> None:
    problems: list[str] = []
    for name, values in sorted(triton_schema["enums"].items()):
        ours = our_schema["enums"].get(name)
        if ours is None:
            problems.append(f"missing enum {name}")
            continue
        for value_name, number in sorted(values.items()):
            if ours.get(value_name) != number:
                problems.append(f"{name}.{value_name}: ours {ours.get(value_name)} != triton {number}")
    assert not problems, "\n".join(problems)


def test_every_triton_rpc_matches(triton_schema: dict[str, Any], our_schema: dict[str, Any]) -> None:
    problems: list[str] = []
    for service, methods in sorted(triton_schema["services"].items()):
        ours = our_schema["services"].get(service)
        if ours is None:
            problems.append(f"missing service {service}")
            continue
        for method, spec in sorted(methods.items()):
            if ours.get(method) != spec:
                problems.append(f"{service}/{method}: ours {ours.get(method)} != triton {spec}")
    assert not problems, "\n".join(problems)


def _infer_request() -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="simple", model_version="3", id="req-42")
    req.parameters["priority"].int64_param = 2
    req.parameters["sequence_start"].bool_param = True
    req.parameters["tag"].string_param = "unit"
    req.parameters["temperature"].double_param = 0.25
    req.parameters["budget"].uint64_param = 2**40

    raw_in = req.inputs.add(name="INPUT0", datatype="FP32", shape=[2, 3])
    raw_in.parameters["binary_data_size"].int64_param = 24
    typed_in = req.inputs.add(name="INPUT1", datatype="INT64", shape=[1, 2])
    typed_in.contents.int64_contents.extend([-7, 2**40])
    text_in = req.inputs.add(name="TEXT", datatype="BYTES", shape=[2])
    text_in.contents.bytes_contents.extend([b"hello", b"\x00\xff"])

    out = req.outputs.add(name="OUTPUT0")
    out.parameters["classification"].int64_param = 3
    req.outputs.add(name="OUTPUT1")
    req.raw_input_contents.append(bytes(range(24)))
    return req


def test_infer_request_from_ours_parses_in_tritonclient(tmp_path: Path) -> None:
    req = _infer_request()
    wire = req.SerializeToString()
    body = """
    from google.protobuf import json_format, unknown_fields
    msg = svc.ModelInferRequest()
    msg.ParseFromString(sys.stdin.buffer.read())
    result = {
        "dict": json_format.MessageToDict(msg, preserving_proto_field_name=True),
        "wire": msg.SerializeToString(deterministic=True).hex(),
        "unknown": len(unknown_fields.UnknownFieldSet(msg)),
        "param_kinds": {k: v.WhichOneof("parameter_choice") for k, v in msg.parameters.items()},
        "raw0": msg.raw_input_contents[0].hex(),
    }
    with open(out, "w") as fh:
        json.dump(result, fh)
    """
    result = run_triton(body, tmp_path, stdin=wire)
    assert result["dict"] == json_format.MessageToDict(req, preserving_proto_field_name=True)
    assert bytes.fromhex(result["wire"]) == req.SerializeToString(deterministic=True)
    assert result["unknown"] == 0
    assert result["param_kinds"] == {
        "priority": "int64_param",
        "sequence_start": "bool_param",
        "tag": "string_param",
        "temperature": "double_param",
        "budget": "uint64_param",
    }
    assert bytes.fromhex(result["raw0"]) == bytes(range(24))


def test_model_config_response_from_tritonclient_parses_in_ours(tmp_path: Path) -> None:
    body = """
    from google.protobuf import json_format
    resp = svc.ModelConfigResponse()
    cfg = resp.config
    cfg.name = "resnet"
    cfg.backend = "onnxruntime"
    cfg.platform = "onnxruntime_onnx"
    cfg.max_batch_size = 8
    cfg.version_policy.latest.num_versions = 2
    inp = cfg.input.add(name="input", data_type=mc.TYPE_FP32, format=mc.ModelInput.FORMAT_NCHW)
    inp.dims.extend([3, 224, 224])
    inp.reshape.shape.extend([1, 3, 224, 224])
    outp = cfg.output.add(name="probs", data_type=mc.TYPE_FP16, label_filename="labels.txt")
    outp.dims.extend([-1, 1000])
    db = cfg.dynamic_batching
    db.preferred_batch_size.extend([4, 8])
    db.max_queue_delay_microseconds = 100
    db.preserve_ordering = True
    db.priority_levels = 2
    db.default_priority_level = 1
    db.default_queue_policy.max_queue_size = 64
    db.priority_queue_policy[1].timeout_action = mc.ModelQueuePolicy.DELAY
    db.priority_queue_policy[1].default_timeout_microseconds = 5000
    db.priority_queue_policy[2].max_queue_size = 16
    db.priority_queue_policy[2].allow_timeout_override = True
    cfg.instance_group.add(name="cpu", kind=mc.ModelInstanceGroup.KIND_CPU, count=2)
    gpu = cfg.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    gpu.gpus.extend([0, 1])
    gpu.rate_limiter.priority = 3
    gpu.rate_limiter.resources.add(name="R1", count=2, **{"global": True})
    cfg.parameters["intra_op_thread_count"].string_value = "4"
    cfg.parameters["execution_mode"].string_value = "parallel"
    cfg.metric_tags["team"] = "infer"
    cfg.model_transaction_policy.decoupled = False
    cfg.optimization.input_pinned_memory.enable = True
    warm = cfg.model_warmup.add(name="w", batch_size=1, count=1)
    warm.inputs["input"].data_type = mc.TYPE_FP32
    warm.inputs["input"].dims.extend([3, 224, 224])
    warm.inputs["input"].zero_data = True
    result = {
        "wire": resp.SerializeToString().hex(),
        "wire_det": resp.SerializeToString(deterministic=True).hex(),
        "dict": json_format.MessageToDict(resp, preserving_proto_field_name=True),
    }
    with open(out, "w") as fh:
        json.dump(result, fh)
    """
    result = run_triton(body, tmp_path)
    resp = pb.ModelConfigResponse()
    resp.ParseFromString(bytes.fromhex(result["wire"]))

    assert json_format.MessageToDict(resp, preserving_proto_field_name=True) == result["dict"]
    assert resp.SerializeToString(deterministic=True) == bytes.fromhex(result["wire_det"])

    cfg = resp.config
    assert cfg.name == "resnet" and cfg.max_batch_size == 8
    assert cfg.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert cfg.version_policy.WhichOneof("policy_choice") == "latest"
    assert list(cfg.input[0].dims) == [3, 224, 224]
    assert cfg.input[0].data_type == mc.TYPE_FP32
    assert cfg.input[0].format == mc.ModelInput.FORMAT_NCHW
    assert list(cfg.output[0].dims) == [-1, 1000]
    assert cfg.output[0].data_type == mc.TYPE_FP16
    db = cfg.dynamic_batching
    assert list(db.preferred_batch_size) == [4, 8]
    assert sorted(db.priority_queue_policy) == [1, 2]
    assert db.priority_queue_policy[1].timeout_action == mc.ModelQueuePolicy.DELAY
    assert db.priority_queue_policy[1].default_timeout_microseconds == 5000
    assert db.priority_queue_policy[2].max_queue_size == 16
    assert [g.kind for g in cfg.instance_group] == [
        mc.ModelInstanceGroup.KIND_CPU,
        mc.ModelInstanceGroup.KIND_GPU,
    ]
    assert list(cfg.instance_group[1].gpus) == [0, 1]
    assert getattr(cfg.instance_group[1].rate_limiter.resources[0], "global") is True
    assert cfg.parameters["intra_op_thread_count"].string_value == "4"
    assert dict(cfg.metric_tags) == {"team": "infer"}
    assert cfg.model_warmup[0].inputs["input"].WhichOneof("input_data_type") == "zero_data"
