"""Recovery attacks: transformations that try to bring forgotten knowledge back.

Layers: model surgery that changes no output (:mod:`.conv1d`, GPT-2's
``Conv1D`` as ``nn.Linear``) under the attacks themselves: weight quantization
(:mod:`.quantize`, Zhang et al., ICLR 2025), relearning on a disjoint part of
the forget set (:mod:`.relearn`, Hu et al. 2024), in-context re-introduction
(:mod:`.incontext`, Shumailov et al. 2024) and extraction with B sampled
candidates (:mod:`.extract`, Patil et al., ICLR 2024).

Model-to-model attacks register in :data:`ATTACKS` under the name a config
uses; a name is claimed once. The other three need data besides the model
(relearn texts, a person's records, probes), so the stage calls them directly.
Every attack leaves its input untouched.
"""

from __future__ import annotations

from verify.attacks import conv1d, extract, incontext, quantize, relearn
from verify.attacks._errors import (
    AttackError,
    DuplicateAttackError,
    ExtractionSettingsError,
    ForgetSplitError,
    InContextError,
    NothingToQuantizeError,
    QuantizationSettingsError,
    RelearnLeakError,
    RelearnSettingsError,
)
from verify.attacks._registry import ATTACKS, Attack, register

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackError",
    "DuplicateAttackError",
    "ExtractionSettingsError",
    "ForgetSplitError",
    "InContextError",
    "NothingToQuantizeError",
    "QuantizationSettingsError",
    "RelearnLeakError",
    "RelearnSettingsError",
    "conv1d",
    "extract",
    "incontext",
    "quantize",
    "register",
    "relearn",
]
