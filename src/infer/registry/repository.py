"""The model repository on disk: ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/<version>/<file>``."""

from __future__ import annotations

import re
from pathlib import Path

from infer.config.model import ModelConfig
from infer.config.pbtxt import config_from_pbtxt
from infer.errors import InvalidArgument, ModelConfigError, NotFound

__all__ = ["ModelRepository"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


class ModelRepository:
    """Reads what the repository holds; knows nothing of what is loaded."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise ModelConfigError(f"model repository {root} is not a directory")

    def names(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name) and p.name != ".."
        )

    def model_dir(self, name: str) -> Path:
        if not _NAME.match(name) or name in (".", ".."):
            raise InvalidArgument(f"model_name '{name[:200]}' is not a valid model name")
        path = self.root / name
        if not path.is_dir() or path.resolve().parent != self.root:
            raise NotFound(f"model '{name}' is not in the model repository")
        return path

    def read_config(self, name: str) -> ModelConfig:
        """The config on disk; a model without config.pbtxt gets an empty one to be completed."""
        path = self.model_dir(name) / "config.pbtxt"
        if not path.exists():
            return ModelConfig(name=name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ModelConfigError(f"{path}: cannot read: {e}") from None
        return config_from_pbtxt(text, f"model '{name}' config.pbtxt")

    def versions(self, name: str) -> list[int]:
        root = self.model_dir(name)
        return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())

    def version_dir(self, name: str, version: int) -> Path:
        return self.model_dir(name) / str(version)

    def find_model_file(self, name: str, version: int, filename: str) -> Path:
        path = self.version_dir(name, version) / filename
        if not path.is_file():
            raise ModelConfigError(f"model '{name}' version {version}: {filename} not found")
        return path

    def guess_platform(self, name: str, versions: list[int]) -> str:
        """Platform from the files present, as Triton does without a config."""
        for v in versions:
            if (self.version_dir(name, v) / "model.onnx").is_file():
                return "onnxruntime_onnx"
            if (self.version_dir(name, v) / "rules.json").is_file():
                return "rules"
        return ""
