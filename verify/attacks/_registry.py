"""Attacks by the name a config uses for them; a name is claimed once."""

from __future__ import annotations

from collections.abc import Callable

import torch

from verify._registry import Registry
from verify.attacks._errors import DuplicateAttackError

# model -> a new, attacked model; the input is never modified
Attack = Callable[[torch.nn.Module], torch.nn.Module]
ATTACKS = Registry("attack", DuplicateAttackError)
register = ATTACKS.register
