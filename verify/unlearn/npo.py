"""Negative Preference Optimization: gradient ascent that slows as it succeeds.

Zhang et al., "Negative Preference Optimization: From Catastrophic Collapse to
Effective Unlearning" (COLM 2024). DPO with only a rejected answer: with
``r = π_θ(y|x) / π_ref(y|x)`` over whole sequences (log-likelihoods summed
over non-padding tokens) and ``π_ref`` the frozen original model,

    L_NPO = (2/β) · E[log(1 + r^β)] = −(2/β) · E[log σ(−β (log π_θ − log π_ref))].

Its gradient is gradient ascent's, weighted by ``2 r^β / (1 + r^β)``, which
falls to 0 as the forget text becomes unlikely: the collapse GA runs into is
slowed. At ``θ = ref`` the loss is ``(2/β) log 2``; as ``β → 0`` it tends to
``log r`` plus a constant, i.e. gradient ascent.

Two names, so a config says which it means:

* ``npo``: the forget term alone (``retain_weight`` is ignored);
* ``npo_rt``: NPO+RT, the forget term ``+ retain_weight · NLL(retain)``
  (mean token NLL, as in the paper's TOFU experiments).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from verify.unlearn._likelihood import batch_nll, sequence_logprob
from verify.unlearn._registry import Batch, register
from verify.unlearn._settings import UnlearnSettings


def npo_loss(
    model: torch.nn.Module, ref_model: torch.nn.Module, batch: Batch, *, beta: float
) -> torch.Tensor:
    """``−(2/β) · mean log σ(−β (log π_θ(y|x) − log π_ref(y|x)))`` over the rows of ``batch``."""
    with torch.no_grad():
        ref = sequence_logprob(ref_model, batch)
    log_ratio = sequence_logprob(model, batch) - ref
    return -(2 / beta) * F.logsigmoid(-beta * log_ratio).mean()


@register("npo")
def negative_preference(
    model: torch.nn.Module,
    forget_batch: Batch,
    retain_batch: Batch,
    ref_model: torch.nn.Module,
    settings: UnlearnSettings,
) -> torch.Tensor:
    """NPO on the forget batch; the retain batch is not used."""
    return npo_loss(model, ref_model, forget_batch, beta=settings.beta)


@register("npo_rt")
def negative_preference_retain(
    model: torch.nn.Module,
    forget_batch: Batch,
    retain_batch: Batch,
    ref_model: torch.nn.Module,
    settings: UnlearnSettings,
) -> torch.Tensor:
    """NPO on the forget batch ``+ retain_weight · NLL(retain batch)``."""
    forget = npo_loss(model, ref_model, forget_batch, beta=settings.beta)
    retain = batch_nll(model, retain_batch) if settings.retain_weight else 0.0
    return forget + settings.retain_weight * retain
