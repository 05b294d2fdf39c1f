"""The attack registry: every attack under its config name, each name claimed once."""

from __future__ import annotations

import pytest

from lineage.errors import BadInputError
from verify.attacks import ATTACKS, AttackError, DuplicateAttackError, register
from verify.attacks.quantize import quantize_rtn_int4

EXPECTED = {
    "quantize_rtn_int8", "quantize_rtn_int4", "quantize_quanto_int8", "quantize_quanto_int4",
}  # fmt: skip


def test_every_attack_registers_under_its_name():
    assert set(ATTACKS) == EXPECTED
    assert ATTACKS["quantize_rtn_int4"] is quantize_rtn_int4


def test_a_taken_name_is_refused_and_the_holder_kept():
    with pytest.raises(DuplicateAttackError, match=r"'quantize_rtn_int4'.*quantize_rtn_int4"):
        register("quantize_rtn_int4")(lambda model: model)
    assert ATTACKS["quantize_rtn_int4"] is quantize_rtn_int4


def test_registry_errors_are_bad_input():
    assert issubclass(DuplicateAttackError, AttackError)
    assert issubclass(AttackError, BadInputError)
    assert DuplicateAttackError.exit_code == 3


def test_register_returns_the_function_unchanged():
    def probe_attack(model):
        return model

    try:
        assert register("test_probe_attack")(probe_attack) is probe_attack
        assert ATTACKS["test_probe_attack"] is probe_attack
    finally:
        ATTACKS.pop("test_probe_attack", None)
