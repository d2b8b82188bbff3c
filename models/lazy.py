"""Package attributes imported on first use (PEP 562), for torch-free package imports."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Getattr = Callable[[str], Any]
Dir = Callable[[], list[str]]


def lazy_attributes(package: str, homes: dict[str, str],
                    namespace: dict[str, Any]) -> tuple[Getattr, Dir]:
    """``__getattr__`` and ``__dir__`` for ``package``: name ``n`` comes from ``homes[n]``.

    A name is imported from its module the first time it is asked for, then kept
    in ``namespace`` (the package's globals).
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(homes))

    return __getattr__, __dir__
