"""Unlearning methods by the name a config uses for them; a name is claimed once.

A method is one per-batch loss ``(model, forget_batch, retain_batch, ref_model,
settings) -> loss``, minimized by the shared loop in :mod:`._loop`. Batches are
:func:`training.loop.collate` dicts; ``ref_model`` is a frozen copy of the
original model, for methods that measure how far the model has moved.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from verify._registry import Registry
from verify.unlearn._errors import DuplicateUnlearnerError
from verify.unlearn._settings import UnlearnSettings

Batch = dict[str, torch.Tensor]
# (model, forget_batch, retain_batch, ref_model, settings) -> the loss to minimize
Unlearner = Callable[
    [torch.nn.Module, Batch, Batch, torch.nn.Module, UnlearnSettings], torch.Tensor
]
UNLEARNERS = Registry("unlearning method", DuplicateUnlearnerError)
register = UNLEARNERS.register
