"""Recovery attacks: transformations that try to bring forgotten knowledge back.

Layers: model surgery that changes no output (:mod:`.conv1d`, GPT-2's
``Conv1D`` as ``nn.Linear``) under the attacks themselves (:mod:`.quantize`,
weight quantization after Zhang et al., ICLR 2025). Each attack registers
itself in :data:`ATTACKS` under the name a config uses; a name is claimed once.
Every attack returns a new model and leaves its input untouched.
"""

from __future__ import annotations

from verify.attacks import conv1d, quantize
from verify.attacks._errors import (
    AttackError,
    DuplicateAttackError,
    NothingToQuantizeError,
    QuantizationSettingsError,
)
from verify.attacks._registry import ATTACKS, Attack, register

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackError",
    "DuplicateAttackError",
    "NothingToQuantizeError",
    "QuantizationSettingsError",
    "conv1d",
    "quantize",
    "register",
]
