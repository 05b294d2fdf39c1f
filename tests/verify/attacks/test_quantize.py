"""The quantization attack: known answers for RTN, and whole models quantized but never mutated."""

from __future__ import annotations

import pytest
import torch
from optimum.quanto import QModuleMixin

from tests.verify.attacks.conftest import logits, parameters_copy, tiny_gpt2
from verify.attacks import ATTACKS, NothingToQuantizeError, QuantizationSettingsError
from verify.attacks.quantize import quantize_quanto, quantize_rtn, rtn

# Hand-made rows whose w / scale never lands on a .5 tie, so float32 rounding cannot flip a level.
ASYM_ROW = [-1.0, -0.35, 0.0, 0.25, 2.0]  # scale 3/15 = 0.2, zero 5: q = 0, 3, 5, 6, 15
SYM_ROW = [-1.4, -0.45, 0.0, 0.33, 1.4]  # scale 1.4/7 = 0.2: q = -7, -2, 0, 2, 7


def _rtn(values, *, bits=4, group_size=128, symmetric=False) -> torch.Tensor:
    return rtn(torch.tensor([values]), bits=bits, group_size=group_size, symmetric=symmetric)[0]


def _close(got: torch.Tensor, want) -> bool:
    return torch.allclose(got, torch.tensor(want), rtol=0, atol=1e-6)


def _relative_error(model, attacked, ids) -> float:
    before = logits(model, ids)
    return ((logits(attacked, ids) - before).norm() / before.norm()).item()


def test_asymmetric_4bit_known_answer():
    assert _close(_rtn(ASYM_ROW), [-1.0, -0.4, 0.0, 0.2, 2.0])


def test_symmetric_4bit_known_answer():
    assert _close(_rtn(SYM_ROW, symmetric=True), [-1.4, -0.4, 0.0, 0.4, 1.4])


def test_each_group_has_its_own_scale():
    row = [0.01, -0.02, 1.0, -3.0]  # one group: scale 4/15, zero 11, the small values round to 0
    assert _close(_rtn(row, group_size=4), [0.0, 0.0, 16 / 15, -44 / 15])
    assert _close(_rtn(row, group_size=2), [0.01, -0.02, 16 / 15, -44 / 15])


def test_a_last_group_shorter_than_group_size_is_quantized_on_its_own():
    row = [0.01, -0.02, 1.0, -3.0, 0.5]  # groups of 2: the lone 0.5 is its own group, kept exactly
    assert _close(_rtn(row, group_size=2), [0.01, -0.02, 16 / 15, -44 / 15, 0.5])


def test_values_on_the_8bit_grid_survive():
    grid = [(k - 128) * 0.01 for k in range(256)]  # lo -1.28, hi 1.27: scale 0.01, zero 128
    assert _close(_rtn(grid, bits=8, group_size=256), grid)


def test_quantizing_twice_changes_nothing_more():
    weight = torch.randn(8, 40, generator=torch.Generator().manual_seed(0))
    for symmetric in (False, True):
        once = rtn(weight, bits=4, group_size=16, symmetric=symmetric)
        again = rtn(once, bits=4, group_size=16, symmetric=symmetric)
        assert not torch.equal(once, weight)
        assert torch.allclose(again, once, rtol=0, atol=1e-6)


def test_a_zero_group_stays_zero_and_dtype_is_kept():
    weight = torch.zeros(2, 4, dtype=torch.bfloat16)
    for symmetric in (False, True):
        out = rtn(weight, bits=4, group_size=4, symmetric=symmetric)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, weight)


def test_bad_settings_are_refused_together():
    with pytest.raises(QuantizationSettingsError, match=r"bits=3(.|\n)*group_size=0"):
        rtn(torch.ones(1, 4), bits=3, group_size=0, symmetric=False)
    with pytest.raises(QuantizationSettingsError, match="bits=2"):
        quantize_quanto(tiny_gpt2(), bits=2)


def test_a_model_with_nothing_to_quantize_is_refused():
    with pytest.raises(NothingToQuantizeError, match="pick another attack"):
        quantize_rtn(torch.nn.Sequential(torch.nn.Embedding(4, 2)), bits=4)


def test_int8_changes_logits_slightly_and_int4_much_more(ids):
    model = tiny_gpt2(init_std=0.2)
    err8 = _relative_error(model, ATTACKS["quantize_rtn_int8"](model), ids)
    err4 = _relative_error(model, ATTACKS["quantize_rtn_int4"](model), ids)
    assert 0 < err8 < 0.03
    assert err4 > 5 * err8


def test_every_block_weight_is_on_the_grid_and_the_head_is_full_precision(model):
    attacked = quantize_rtn(model, bits=4, group_size=16)
    block = attacked.transformer.h[0]
    for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
        again = rtn(layer.weight, bits=4, group_size=16, symmetric=False)
        assert torch.allclose(again, layer.weight, rtol=0, atol=1e-6)
    original = model.transformer.h[0].mlp.c_fc.weight.t()
    assert not torch.equal(block.mlp.c_fc.weight, original)
    assert attacked.lm_head.weight is attacked.transformer.wte.weight
    assert torch.equal(attacked.lm_head.weight, model.lm_head.weight)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_attack_returns_a_new_model_and_leaves_its_input_alone(name, model, ids):
    before, before_logits = parameters_copy(model), logits(model, ids)
    attacked = ATTACKS[name](model)
    assert attacked is not model
    assert not torch.equal(logits(attacked, ids), before_logits)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(logits(model, ids), before_logits)


@pytest.mark.parametrize(("bits", "bound"), [(8, 0.03), (4, 0.3)])
def test_quanto_model_is_quantized_and_close_to_the_original(bits, bound, ids):
    model = tiny_gpt2(init_std=0.2)
    attacked = quantize_quanto(model, bits=bits, dense=False)
    assert sum(isinstance(m, QModuleMixin) for m in attacked.modules()) == 4
    assert not isinstance(attacked.lm_head, QModuleMixin)
    assert 0 < _relative_error(model, attacked, ids) < bound


@pytest.mark.parametrize("bits", [8, 4])
def test_quanto_dense_runs_quantos_grid_values_as_plain_linears(bits, ids):
    """The attack's dense form: quanto's frozen weights, equal up to float rounding."""
    model = tiny_gpt2(init_std=0.2)
    own, dense = quantize_quanto(model, bits=bits, dense=False), quantize_quanto(model, bits=bits)
    assert not any(isinstance(m, QModuleMixin) for m in dense.modules())
    own_w = [m.qweight.dequantize() for m in own.modules() if isinstance(m, QModuleMixin)]
    dense_w = [m.weight for m in dense.modules()
               if isinstance(m, torch.nn.Linear) and m is not dense.lm_head]  # fmt: skip
    assert len(own_w) == len(dense_w) == 4
    assert all(torch.equal(a, b) for a, b in zip(own_w, dense_w, strict=True))
    assert torch.allclose(logits(dense, ids), logits(own, ids), rtol=0, atol=1e-4)
    assert not torch.allclose(logits(dense, ids), logits(model, ids), rtol=0, atol=1e-4)


def test_quanto_int8_matches_symmetric_rtn_int8(model, ids):
    """An oracle: quanto's qint8 is symmetric absmax per output row: RTN, one group per row."""
    quanto = logits(quantize_quanto(model, bits=8), ids)
    ours = logits(quantize_rtn(model, bits=8, symmetric=True), ids)
    assert torch.allclose(quanto, ours, rtol=0, atol=1e-5)
