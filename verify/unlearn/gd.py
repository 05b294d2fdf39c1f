"""Gradient difference: ascend on the forget set, descend on the retain set.

Liu et al., "Continual Learning and Private Unlearning" (CoLLAs 2022), and the
``grad_diff`` baseline of Maini et al., "TOFU: A Task of Fictitious Unlearning
for LLMs" (COLM 2024): ``−NLL(forget) + retain_weight · NLL(retain)``, so the
descent on retained text holds utility while the ascent erases the forget set.
"""

from __future__ import annotations

import torch

from verify.unlearn._likelihood import batch_nll
from verify.unlearn._registry import Batch, register
from verify.unlearn._settings import UnlearnSettings


@register("gd")
def gradient_difference(
    model: torch.nn.Module,
    forget_batch: Batch,
    retain_batch: Batch,
    ref_model: torch.nn.Module,
    settings: UnlearnSettings,
) -> torch.Tensor:
    """``−NLL(forget) + retain_weight · NLL(retain)``; the reference model is not used."""
    retain = batch_nll(model, retain_batch) if settings.retain_weight else 0.0
    return -batch_nll(model, forget_batch) + settings.retain_weight * retain
