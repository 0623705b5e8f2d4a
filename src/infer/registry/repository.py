"""The model repository on disk: ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/<version>/<file>``.

Everything read stays under the root: names are single path components, and every directory or file is checked
after symlinks are followed, so a symlink (or a config's ``default_model_filename``) that points outside the root
is as good as absent. Symlinks that stay inside the root are followed.
"""

from __future__ import annotations

import re
from pathlib import Path

from infer.config.model import ModelConfig
from infer.config.pbtxt import config_from_pbtxt
from infer.errors import InvalidArgument, ModelConfigError, NotFound

__all__ = ["ModelRepository", "confined"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def confined(path: Path, roots: list[Path] | tuple[Path, ...]) -> Path | None:
    """``path`` with symlinks followed when it lies under one of ``roots`` (themselves resolved), else None."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    for root in roots:
        if real == root or real.is_relative_to(root):
            return real
    return None


class ModelRepository:
    """Reads what the repository holds; knows nothing of what is loaded."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if not self.root.is_dir():
            raise ModelConfigError(f"model repository {root} is not a directory")

    def names(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir()
            if _NAME.match(p.name) and p.name != ".." and p.is_dir() and self._inside(p)
        )

    def _inside(self, path: Path) -> bool:
        return confined(path, (self.root,)) is not None

    def model_dir(self, name: str) -> Path:
        if not _NAME.match(name) or name in (".", ".."):
            raise InvalidArgument(f"model_name '{name[:200]}' is not a valid model name")
        path = self.root / name
        real = confined(path, (self.root,))
        if real is None or real == self.root or not path.is_dir():
            raise NotFound(f"model '{name}' is not in the model repository")
        return path

    def read_config(self, name: str) -> ModelConfig:
        """The config on disk; a model without config.pbtxt gets an empty one to be completed."""
        path = self.model_dir(name) / "config.pbtxt"
        if not path.exists():
            return ModelConfig(name=name)
        if not self._inside(path):
            raise ModelConfigError(f"model '{name}': config.pbtxt points outside the model repository")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ModelConfigError(f"{path}: cannot read: {e}") from None
        return config_from_pbtxt(text, f"model '{name}' config.pbtxt")

    def versions(self, name: str) -> list[int]:
        root = self.model_dir(name)
        return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir() and self._inside(p))

    def version_dir(self, name: str, version: int) -> Path:
        path = self.model_dir(name) / str(version)
        if path.exists() and not self._inside(path):
            raise ModelConfigError(f"model '{name}' version {version}: its directory points outside the repository")
        return path

    def find_model_file(self, name: str, version: int, filename: str) -> Path:
        path = self.version_dir(name, version) / filename
        if not path.is_file():
            raise ModelConfigError(f"model '{name}' version {version}: {filename} not found")
        if not self._inside(path):
            raise ModelConfigError(f"model '{name}' version {version}: {filename} points outside the repository")
        return path

    def guess_platform(self, name: str, versions: list[int]) -> str:
        """Platform from the files present, as Triton does without a config."""
        for v in versions:
            if (self.version_dir(name, v) / "model.onnx").is_file():
                return "onnxruntime_onnx"
            if (self.version_dir(name, v) / "rules.json").is_file():
                return "rules"
        return ""
