"""Conv1D → Linear: the converted model computes the very same logits."""

from __future__ import annotations

import torch
from transformers.pytorch_utils import Conv1D

from tests.verify.attacks.conftest import logits, parameters_copy, tiny_gpt2
from verify.attacks.conv1d import conv1d_to_linear


def test_converted_model_gives_bit_identical_logits(model, ids):
    converted = conv1d_to_linear(model)
    assert torch.equal(logits(converted, ids), logits(model, ids))


def test_no_conv1d_remains_and_every_projection_is_linear(model):
    converted = conv1d_to_linear(model)
    assert not any(isinstance(m, Conv1D) for m in converted.modules())
    block = converted.transformer.h[0]
    for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
        assert type(layer) is torch.nn.Linear
    assert block.attn.c_attn.weight.shape == (96, 32)  # [out, in]: 3 * n_embd from n_embd


def test_weight_is_the_transpose_and_bias_is_copied(model):
    conv = model.transformer.h[0].mlp.c_fc
    linear = conv1d_to_linear(model).transformer.h[0].mlp.c_fc
    assert torch.equal(linear.weight, conv.weight.t())
    assert torch.equal(linear.bias, conv.bias)
    assert linear.weight.data_ptr() != conv.weight.data_ptr()


def test_tied_head_stays_tied_to_the_copied_embedding(model):
    converted = conv1d_to_linear(model)
    assert converted.lm_head.weight is converted.transformer.wte.weight
    assert converted.transformer.wte.weight is not model.transformer.wte.weight


def test_the_original_is_untouched(model, ids):
    before, before_logits = parameters_copy(model), logits(model, ids)
    converted = conv1d_to_linear(model)
    with torch.no_grad():
        converted.transformer.h[0].mlp.c_fc.weight.add_(1.0)
    assert isinstance(model.transformer.h[0].mlp.c_fc, Conv1D)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(logits(model, ids), before_logits)


def test_conversion_draws_no_random_numbers():
    model = tiny_gpt2(seed=3)
    state = torch.random.get_rng_state()
    conv1d_to_linear(model)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_training_mode_is_kept():
    converted = conv1d_to_linear(tiny_gpt2().train())
    assert converted.transformer.h[0].attn.c_attn.training
