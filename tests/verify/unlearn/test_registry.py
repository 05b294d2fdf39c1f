"""The unlearning-method registry: every method under its config name, each name claimed once."""

from __future__ import annotations

import pytest

from lineage.errors import BadInputError
from verify.unlearn import (
    UNLEARNERS,
    DuplicateUnlearnerError,
    UnlearnError,
    UnlearnSettingsError,
    register,
)
from verify.unlearn.ga import gradient_ascent
from verify.unlearn.gd import gradient_difference
from verify.unlearn.npo import negative_preference, negative_preference_retain


def test_every_method_registers_under_its_name():
    assert dict(UNLEARNERS) == {
        "ga": gradient_ascent,
        "gd": gradient_difference,
        "npo": negative_preference,
        "npo_rt": negative_preference_retain,
    }


def test_a_taken_name_is_refused_and_the_holder_kept():
    with pytest.raises(DuplicateUnlearnerError, match=r"'npo'.*negative_preference"):
        register("npo")(lambda *args: None)
    assert UNLEARNERS["npo"] is negative_preference


def test_errors_are_bad_input_under_one_root():
    for error in (DuplicateUnlearnerError, UnlearnSettingsError):
        assert issubclass(error, UnlearnError)
        assert error.exit_code == 3
    assert issubclass(UnlearnError, BadInputError)


def test_register_returns_the_function_unchanged():
    def probe(model, forget_batch, retain_batch, ref_model, settings):
        return model

    try:
        assert register("test_probe_unlearner")(probe) is probe
        assert UNLEARNERS["test_probe_unlearner"] is probe
    finally:
        UNLEARNERS.pop("test_probe_unlearner", None)
