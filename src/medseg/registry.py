"""A name -> factory registry: ``register(name)``, ``get(name)`` (errors list the choices), ``names()``."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from medseg.errors import ConfigError


class Registry:
    """Maps names to factories. One instance per kind of thing (models, losses, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}
        self._descriptions: dict[str, str] = {}

    def register(
        self, name: str, description: str = ""
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``fn`` under ``name``; a duplicate name is a programming error."""

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            doc = (fn.__doc__ or "").strip().splitlines()
            self._descriptions[name] = description or (doc[0] if doc else "")
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory for ``name``; an unknown name raises ConfigError listing close matches."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{hint} Choices: {', '.join(sorted(self._items))}"
            ) from None

    def describe(self, name: str) -> str:
        """One-line description of ``name``."""
        self.get(name)
        return self._descriptions[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching a shell-style ``pattern``."""
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items
