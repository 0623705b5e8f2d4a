"""Read and write model configs in Triton's formats: protobuf text (config.pbtxt) and JSON."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, text_format

from infer._proto import model_config_pb2
from infer.config.model import ModelConfig, model_config_from_dict
from infer.errors import ModelConfigError

__all__ = ["config_from_json", "config_from_pbtxt", "config_to_proto", "proto_to_config"]


def proto_to_config(msg: Any, where: str) -> ModelConfig:
    data = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return model_config_from_dict(data, where)


def config_from_pbtxt(text: str, where: str) -> ModelConfig:
    msg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise ModelConfigError(f"{where}: {e}") from None
    return proto_to_config(msg, where)


def config_from_json(text: str, where: str) -> ModelConfig:
    msg = model_config_pb2.ModelConfig()
    try:
        json_format.Parse(text, msg)
    except json_format.ParseError as e:
        raise ModelConfigError(f"{where}: {e}") from None
    return proto_to_config(msg, where)


def config_to_proto(config: ModelConfig) -> Any:
    msg = model_config_pb2.ModelConfig()
    data = config.model_dump(exclude_none=True, exclude_defaults=True)
    data["version_policy"] = config.version_policy.model_dump(exclude_none=True) or {"latest": {"num_versions": 1}}
    if "latest" in data["version_policy"]:
        data["version_policy"]["latest"].setdefault(
            "num_versions", config.version_policy.latest.num_versions if config.version_policy.latest else 1
        )
    json_format.ParseDict(data, msg)
    return msg
