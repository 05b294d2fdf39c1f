"""Approximate unlearning: the post-hoc methods exact (SISA) deletion is contrasted with.

Layers: settings and errors (:class:`UnlearnSettings`, :class:`UnlearnError`)
under the shared loop (:func:`unlearn`: a copy of the model, seeded batches,
AdamW, a utility constraint with rollback) under the methods, one per module,
each a per-batch loss registered in :data:`UNLEARNERS` under the name a config
uses: ``ga`` (:mod:`.ga`), ``gd`` (:mod:`.gd`), ``npo`` and ``npo_rt``
(:mod:`.npo`). A name is claimed once. The input model is never modified.
"""

from __future__ import annotations

from verify.unlearn import ga, gd, npo
from verify.unlearn._errors import DuplicateUnlearnerError, UnlearnError, UnlearnSettingsError
from verify.unlearn._loop import UnlearnReport, unlearn
from verify.unlearn._registry import UNLEARNERS, Unlearner, register
from verify.unlearn._settings import UnlearnSettings, parse_settings

__all__ = [
    "UNLEARNERS",
    "DuplicateUnlearnerError",
    "UnlearnError",
    "UnlearnReport",
    "UnlearnSettings",
    "UnlearnSettingsError",
    "Unlearner",
    "ga",
    "gd",
    "npo",
    "parse_settings",
    "register",
    "unlearn",
]
