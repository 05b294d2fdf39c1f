"""GPT-2's ``Conv1D`` layers as ``torch.nn.Linear``, with the same outputs.

Why: weight quantizers (the RTN here, optimum-quanto) act on ``nn.Linear``,
while GPT-2 (Radford et al., 2019) keeps its attention and MLP projections in
Hugging Face's ``Conv1D``, which computes ``x @ W + b`` with ``W`` stored
``[in, out]``. A ``Linear`` stores ``[out, in]`` and computes ``x @ weight.T + b``,
so ``weight = W.T`` gives the same numbers (bit-identical in float32 on CPU,
which the tests check). An attack must start from the model the auditor was
handed, not from a perturbed one.

The converted model is for in-memory attacks: its parameter shapes no longer
match a GPT-2 checkpoint, so do not ``save_pretrained`` it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers.pytorch_utils import Conv1D


def conv1d_to_linear(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model``, each ``Conv1D`` an equal ``nn.Linear``; ``model`` is untouched.

    Tied parameters (GPT-2's ``wte`` and ``lm_head``) stay tied: one deep copy keeps
    shared parameters shared, and neither of them is a ``Conv1D``.
    """
    converted = copy.deepcopy(model)
    for parent, name, conv in _conv1d_children(converted):
        setattr(parent, name, _as_linear(conv))
    return converted


def _conv1d_children(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, Conv1D]]:
    # imported here, not at the top: loading the attacks' registry loads no transformers
    from transformers.pytorch_utils import Conv1D

    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, Conv1D)
    ]


def _as_linear(conv: Conv1D) -> torch.nn.Linear:
    """Built on the meta device, then given ``W.T``: no random init, the global RNG is untouched."""
    weight = conv.weight.detach()
    linear = torch.nn.Linear(conv.nx, conv.nf, bias=conv.bias is not None, device="meta")
    linear.weight = torch.nn.Parameter(
        weight.t().contiguous(), requires_grad=conv.weight.requires_grad
    )
    if conv.bias is not None:
        bias = conv.bias.detach().clone()
        linear.bias = torch.nn.Parameter(bias, requires_grad=conv.bias.requires_grad)
    return linear.train(conv.training)
