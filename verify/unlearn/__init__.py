"""Approximate unlearning: the post-hoc methods exact (SISA) deletion is contrasted with.

Layers: settings and errors (:class:`UnlearnSettings`, :class:`UnlearnError`)
under the shared loop (:func:`unlearn`: a copy of the model, seeded batches,
AdamW, a utility constraint with rollback) under the methods, one per module,
each a per-batch loss registered in :data:`UNLEARNERS` under the name a config
uses: ``ga`` (:mod:`.ga`), ``gd`` (:mod:`.gd`), ``npo`` and ``npo_rt``
(:mod:`.npo`). A name is claimed once. The input model is never modified.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from verify.unlearn._errors import DuplicateUnlearnerError, UnlearnError, UnlearnSettingsError
from verify.unlearn._settings import UnlearnSettings, parse_settings

if TYPE_CHECKING:
    from verify.unlearn import ga, gd, npo
    from verify.unlearn._loop import UnlearnReport, unlearn
    from verify.unlearn._registry import UNLEARNERS, Unlearner, register

# The settings and errors above are plain data, which ``params.yaml`` parsing
# needs in every stage; the loop, the registry and the methods need torch.
# They load on first use, the methods first, so the registry a caller sees
# always holds every method.
_LAZY = {
    "UNLEARNERS": "_registry",
    "Unlearner": "_registry",
    "register": "_registry",
    "UnlearnReport": "_loop",
    "unlearn": "_loop",
    "ga": None,
    "gd": None,
    "npo": None,
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for method in ("ga", "gd", "npo"):
        importlib.import_module(f"{__name__}.{method}")
    where = _LAZY[name]
    value = importlib.import_module(f"{__name__}.{where or name}")
    if where is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


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
