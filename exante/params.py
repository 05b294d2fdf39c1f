"""``params.yaml``, parsed once at the edge into typed, frozen models (a typo is an error)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lineage._yaml import read_yaml
from lineage.corpus import CorpusSpec
from lineage.errors import ParamsError
from lineage.layout import LAYOUT
from lineage.policy import Purpose
from training.config import TrainConfig
from verify.config import VerifyParams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorpusParams(_Strict):
    seed: int = 20261123
    people: int = Field(240, ge=1)
    holdout_people: int = Field(40, ge=0)
    canary_fraction: float = Field(0.25, ge=0.0, le=1.0)
    plays: tuple[str, ...] = CorpusSpec.plays
    play_chunk_chars: int = Field(700, ge=50)
    forum_posts: int = Field(160, ge=0)
    news_articles: int = Field(80, ge=0)
    recipes: int = Field(80, ge=0)
    support_chats: int = Field(60, ge=0)

    def spec(self) -> CorpusSpec:
        return CorpusSpec(**self.model_dump())


class GateParams(_Strict):
    purpose: Purpose = "research"
    as_of: date | None = None

    def as_of_date(self) -> date:
        return self.as_of or date.today()


class DeletionParams(_Strict):
    """When a queued erasure request's receipt is due: GDPR Art. 12(3) says one month."""

    deadline_months: int = Field(1, ge=0)
    deadline_days: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _some_time(self):
        if self.deadline_months == 0 and self.deadline_days == 0:
            raise ValueError("deadline_months and deadline_days are both 0: give a period")
        return self


class Params(_Strict):
    corpus: CorpusParams = CorpusParams()
    gate: GateParams = GateParams()
    deletion: DeletionParams = DeletionParams()
    train: TrainConfig = TrainConfig()
    verify: VerifyParams = VerifyParams()


def load_params(path: Path = LAYOUT.params) -> Params:
    try:
        raw = read_yaml(Path(path), error=ParamsError) or {}
    except FileNotFoundError:
        return Params()
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ParamsError(f"{path} is malformed:", problems=problems) from None
