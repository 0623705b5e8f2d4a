"""Every module's __all__ names exist (httpx's test_exported_members habit)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import infer

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(infer.__path__, "infer.")
    if "._proto" not in m.name and not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_all_matches_the_module(name: str) -> None:
    mod = importlib.import_module(name)
    exported = getattr(mod, "__all__", None)
    if exported is None:
        assert mod.__file__ is not None and mod.__file__.endswith("__init__.py"), f"{name} has no __all__"
        return
    missing = [n for n in exported if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names {missing} that it does not define"
    assert len(set(exported)) == len(exported)
