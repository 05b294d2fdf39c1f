"""Gradient ascent: raise the forget set's loss, and nothing else.

Jang et al., "Knowledge Unlearning for Mitigating Privacy Risks in Language
Models" (ACL 2023): minimize the negated next-token NLL of the forget texts.
It is unbounded below, so it eventually destroys the model; the shared loop's
utility constraint (retain loss) and forget target are what stop it.
"""

from __future__ import annotations

import torch

from verify.unlearn._likelihood import batch_nll
from verify.unlearn._registry import Batch, register
from verify.unlearn._settings import UnlearnSettings


@register("ga")
def gradient_ascent(
    model: torch.nn.Module,
    forget_batch: Batch,
    retain_batch: Batch,
    ref_model: torch.nn.Module,
    settings: UnlearnSettings,
) -> torch.Tensor:
    """``−NLL(forget)``; the retain batch and the reference model are not used."""
    return -batch_nll(model, forget_batch)
