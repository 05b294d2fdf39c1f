"""Settings and inputs: every problem is named at once, before any step is taken."""

from __future__ import annotations

import pydantic
import pytest

from tests.verify.unlearn.conftest import FORGET, N_POSITIONS, RETAIN, TOKENIZER, tiny_model
from verify.unlearn import UnlearnSettings, UnlearnSettingsError, parse_settings, unlearn


def test_defaults_are_the_small_step_regime():
    s = UnlearnSettings()
    assert (s.lr, s.steps, s.batch_size, s.utility_tolerance, s.forget_target) == (
        1e-4, 60, 8, 0.05, 3.0,
    )  # fmt: skip


def test_parse_lists_every_problem():
    with pytest.raises(UnlearnSettingsError) as caught:
        parse_settings({"lr": -1e-4, "steps": 0, "forget_target": 0.5, "learning_rate": 1})
    problems = caught.value.problems
    assert len(problems) == 4
    for name in ("lr", "steps", "forget_target", "learning_rate"):
        assert any(p.startswith(f"{name}:") for p in problems), name


def test_parse_accepts_a_config_section():
    assert parse_settings({"lr": 5e-5, "forget_target": None}) == UnlearnSettings(
        lr=5e-5, forget_target=None
    )


def test_settings_are_frozen_and_checked_on_construction():
    with pytest.raises(pydantic.ValidationError):
        UnlearnSettings(lr=0)
    with pytest.raises(pydantic.ValidationError):
        UnlearnSettings().lr = 1.0  # type: ignore[misc]


def test_unlearn_lists_every_bad_input_together():
    with pytest.raises(UnlearnSettingsError) as caught:
        unlearn("sgd", tiny_model(), [], [], UnlearnSettings(), n_positions=1, tokenizer=TOKENIZER)
    problems = "\n".join(caught.value.problems)
    assert "'sgd'" in problems and "'npo'" in problems  # the unknown name, and what to use
    assert "n_positions=1" in problems
    assert "forget_texts is empty" in problems
    assert "retain_texts is empty" in problems


@pytest.mark.parametrize(
    ("forget", "retain", "missing"), [([], RETAIN, "forget"), (FORGET, [], "retain")]
)
def test_an_empty_set_is_refused(forget, retain, missing):
    with pytest.raises(UnlearnSettingsError, match=f"{missing}_texts is empty"):
        unlearn(
            "ga", tiny_model(), forget, retain, UnlearnSettings(),
            n_positions=N_POSITIONS, tokenizer=TOKENIZER,
        )  # fmt: skip


def test_settings_must_be_parsed():
    with pytest.raises(UnlearnSettingsError, match="parse_settings"):
        unlearn(
            "ga", tiny_model(), FORGET, RETAIN, {"lr": 1e-4},  # type: ignore[arg-type]
            n_positions=N_POSITIONS, tokenizer=TOKENIZER,
        )  # fmt: skip
