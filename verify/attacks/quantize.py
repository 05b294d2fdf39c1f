"""The quantization attack: low-bit weights undo approximate unlearning.

Zhang et al., "Catastrophic Failure of LLM Unlearning via Quantization"
(ICLR 2025): unlearning that keeps utility moves weights only slightly, so
rounding them to a 4-bit grid often lands them where the original model's
weights land, and the "forgotten" knowledge comes back (the paper reports 21%
retained in full precision, 83% after 4-bit). 8-bit grids are fine enough to
keep the unlearning. Exact deletion (retraining without the data) has nothing
to bring back, which is what running this attack on our models should show.

Two quantizers, both weight-only and applied to every ``nn.Linear`` after
:func:`~verify.attacks.conv1d.conv1d_to_linear`:

* :func:`quantize_rtn`: simulated round-to-nearest, as the paper's RTN: weights
  are quantized and dequantized back to float, so the model runs anywhere. Each
  row is cut into consecutive groups of ``group_size`` inputs (the last may be
  shorter; a row shorter than ``group_size`` is one group). Asymmetric (default,
  the min-max quantizer of GPTQ, Frantar et al., ICLR 2023): the group's range
  ``[lo, hi]`` is widened to contain 0, ``scale = (hi - lo) / (2**bits - 1)``,
  ``zero = round(-lo / scale)``, ``q = clamp(round(w / scale) + zero, 0, 2**bits - 1)``,
  ``w' = (q - zero) * scale``. Symmetric: ``scale = max|w| / (2**(bits-1) - 1)``,
  ``w' = clamp(round(w / scale), -2**(bits-1), 2**(bits-1) - 1) * scale``.
  ``round`` is ``torch.round`` (ties to even); an all-zero group stays zero.
* :func:`quantize_quanto`: optimum-quanto's ``quantize`` + ``freeze``; both
  ``qint8`` (symmetric per output row) and ``qint4`` (asymmetric, groups of up
  to 128 inputs) run on CPU with optimum-quanto 0.2.7 and torch 2.13. The frozen
  weights are then dequantized once into plain ``nn.Linear`` layers: the same
  grid values quanto stores, run as dense float matmuls instead of unpacked on
  every forward (about 2x faster on CPU; logits differ from quanto's own
  kernels by float rounding only, 4e-5 at most on the demo's shards, and a test
  bounds it).

The output head is left in full precision in both: GPT-2 ties it to the token
embedding, so quantizing it would also quantize (or untie) the embedding, and
weight-only tools (GPTQ, AWQ) keep the head in full precision by default.
"""

from __future__ import annotations

import torch

from verify.attacks._errors import NothingToQuantizeError, QuantizationSettingsError
from verify.attacks._registry import register
from verify.attacks.conv1d import conv1d_to_linear

SUPPORTED_BITS = (4, 8)
DEFAULT_GROUP_SIZE = 128


def _quanto():
    """optimum-quanto, imported when a model is first quantized with it (1.8 s of imports
    that a verification whose quantized rows are all stored never needs)."""
    from optimum import quanto

    return quanto


def rtn(weight: torch.Tensor, *, bits: int, group_size: int, symmetric: bool) -> torch.Tensor:
    """``weight`` ``[out, in]`` rounded group-wise to a ``bits`` grid, dequantized (same dtype)."""
    _check_settings(bits, group_size)
    groups = weight.detach().float().split(group_size, dim=-1)
    rounded = [_rtn_symmetric(g, bits) if symmetric else _rtn_asymmetric(g, bits) for g in groups]
    return torch.cat(rounded, dim=-1).to(weight.dtype)


def _rtn_asymmetric(group: torch.Tensor, bits: int) -> torch.Tensor:
    top = 2**bits - 1
    lo = group.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = group.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = _nonzero((hi - lo) / top)
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(group / scale) + zero, 0, top)
    return (q - zero) * scale


def _rtn_symmetric(group: torch.Tensor, bits: int) -> torch.Tensor:
    top = 2 ** (bits - 1) - 1
    scale = _nonzero(group.abs().amax(dim=-1, keepdim=True) / top)
    return torch.clamp(torch.round(group / scale), -top - 1, top) * scale


def _nonzero(scale: torch.Tensor) -> torch.Tensor:
    """An all-zero group has scale 0; any positive scale maps it to zero exactly."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def _check_settings(bits: int, group_size: int) -> None:
    problems = []
    if bits not in SUPPORTED_BITS:
        problems.append(f"bits={bits}: use one of {SUPPORTED_BITS}")
    if group_size < 1:
        problems.append(f"group_size={group_size}: use a positive number of inputs per group")
    if problems:
        raise QuantizationSettingsError("cannot quantize with these settings", problems=problems)


def quantize_rtn(
    model: torch.nn.Module,
    *,
    bits: int,
    group_size: int = DEFAULT_GROUP_SIZE,
    symmetric: bool = False,
) -> torch.nn.Module:
    """A copy of ``model``, all linear weights but the head RTN-quantized; ``model`` unchanged."""
    _check_settings(bits, group_size)
    attacked = conv1d_to_linear(model)
    with torch.no_grad():
        for linear in _quantizable_linears(attacked):
            linear.weight.copy_(
                rtn(linear.weight, bits=bits, group_size=group_size, symmetric=symmetric)
            )
    return attacked


def quantize_quanto(model: torch.nn.Module, *, bits: int, dense: bool = True) -> torch.nn.Module:
    """A copy of ``model``, weights quantized and frozen by optimum-quanto; ``model`` unchanged.

    ``dense``: run the frozen grid values as plain linears (:func:`dequantized`);
    False keeps quanto's own ``QLinear`` modules.
    """
    _check_settings(bits, DEFAULT_GROUP_SIZE)
    attacked = conv1d_to_linear(model)
    _quantizable_linears(attacked)  # refuses a model with nothing to quantize
    quanto = _quanto()
    weights = {8: quanto.qint8, 4: quanto.qint4}[bits]
    quanto.quantize(attacked, weights=weights, exclude=_head_names(attacked))
    quanto.freeze(attacked)
    return dequantized(attacked) if dense else attacked


def build_kernels() -> None:
    """Compile optimum-quanto's CPU unpacking kernel now (``make env``), not mid-verification.

    quanto builds it with ``torch.utils.cpp_extension`` on the first int4 weight
    it unpacks in an environment (about 30 s on 2 cores), then reuses the build.
    """
    layer = torch.nn.Sequential(torch.nn.Linear(8, 8))
    quanto = _quanto()
    quanto.quantize(layer, weights=quanto.qint4)
    quanto.freeze(layer)
    layer[0].qweight.dequantize()


def dequantized(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every frozen quanto linear replaced by an ``nn.Linear`` of its grid values."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and hasattr(child, "qweight"):
                dense = torch.nn.Linear(child.in_features, child.out_features,
                                        bias=child.bias is not None,
                                        dtype=child.weight.dtype)  # fmt: skip
                with torch.no_grad():
                    dense.weight.copy_(child.qweight.dequantize())
                    if child.bias is not None:
                        dense.bias.copy_(child.bias)
                setattr(parent, name, dense)
    return model.eval()


def _quantizable_linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """Every ``nn.Linear`` except the output head, each shared weight once."""
    head, seen, out = _head(model), set(), []
    for module in model.modules():
        linear = isinstance(module, torch.nn.Linear) and module is not head
        if linear and id(module.weight) not in seen:
            seen.add(id(module.weight))
            out.append(module)
    if not out:
        raise NothingToQuantizeError(
            f"{type(model).__name__} has no nn.Linear or Conv1D layer besides its output head: "
            "the quantization attack would change nothing; pick another attack for this model"
        )
    return out


def _head(model: torch.nn.Module) -> torch.nn.Module | None:
    get_head = getattr(model, "get_output_embeddings", None)
    return get_head() if callable(get_head) else None


def _head_names(model: torch.nn.Module) -> list[str]:
    head = _head(model)
    return [name for name, module in model.named_modules() if module is head]


@register("quantize_rtn_int8")
def quantize_rtn_int8(model: torch.nn.Module) -> torch.nn.Module:
    return quantize_rtn(model, bits=8)


@register("quantize_rtn_int4")
def quantize_rtn_int4(model: torch.nn.Module) -> torch.nn.Module:
    return quantize_rtn(model, bits=4)


@register("quantize_quanto_int8")
def quantize_quanto_int8(model: torch.nn.Module) -> torch.nn.Module:
    return quantize_quanto(model, bits=8)


@register("quantize_quanto_int4")
def quantize_quanto_int4(model: torch.nn.Module) -> torch.nn.Module:
    return quantize_quanto(model, bits=4)
