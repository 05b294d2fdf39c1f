"""Attacks by the name a config uses for them; a name is claimed once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from verify.attacks._errors import DuplicateAttackError

# model -> a new, attacked model; the input is never modified
Attack = Callable[[torch.nn.Module], torch.nn.Module]
ATTACKS: dict[str, Attack] = {}

_F = TypeVar("_F", bound=Attack)


def register(name: str) -> Callable[[_F], _F]:
    """Record an attack under ``name``; a second claim on a name raises, it never overwrites."""

    def claim(fn: _F) -> _F:
        if name in ATTACKS:
            held = ATTACKS[name]
            raise DuplicateAttackError(
                f"attack name {name!r} is already registered by "
                f"{held.__module__}.{held.__qualname__}: choose another name"
            )
        ATTACKS[name] = fn
        return fn

    return claim
