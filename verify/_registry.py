"""Registries keyed by the name a config uses (metrics, attacks, ...); a name is claimed once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

_F = TypeVar("_F", bound=Callable)


class Registry(dict):
    """A name → function map whose ``register`` refuses a second claim on a name.

    ``kind`` names what is registered in messages; ``error`` is the package's
    own exception for a duplicate, so each package keeps its error root.
    """

    def __init__(self, kind: str, error: type[Exception]) -> None:
        super().__init__()
        self.kind, self.error = kind, error

    def register(self, name: str) -> Callable[[_F], _F]:
        """Record a function under ``name``; it never overwrites."""

        def claim(fn: _F) -> _F:
            if name in self:
                held = self[name]
                raise self.error(
                    f"{self.kind} name {name!r} is already registered by "
                    f"{held.__module__}.{held.__qualname__}: choose another name"
                )
            self[name] = fn
            return fn

        return claim
