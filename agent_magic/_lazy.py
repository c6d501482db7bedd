"""Import a module on first use."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for module ``name``; the first attribute access imports it and ``submodules``.

    (``importlib.util.LazyLoader`` loses submodule attributes when the lazy module
    is the first to import the package, so a plain proxy is used instead.)
    """

    def __init__(self, name: str, submodules: tuple[str, ...] = ()) -> None:
        self._name = name
        self._submodules = submodules
        self._module: ModuleType | None = None

    def _load(self) -> ModuleType:
        if self._module is None:
            module = importlib.import_module(self._name)
            for sub in self._submodules:
                importlib.import_module(f"{self._name}.{sub}")
            self._module = module
        return self._module

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)


def lazy_import(name: str, submodules: tuple[str, ...] = ()) -> Any:
    """A stand-in for ``import name`` (and ``import name.sub`` for each of ``submodules``) that imports on first use."""
    return LazyModule(name, submodules)
