"""The business scenario of `modelyard value`: volume, what outcomes are worth, and prices. YAML, validated
like the experiment config (unknown keys are errors naming the line and the closest valid key)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelyard.errors import ConfigError
from modelyard.value.economics import MAX_MONTHS

# The valid ranges: every figure `modelyard value` derives from numbers inside them is finite (the economics caps
# what lies beyond, and says so). Volume stays under economics.MAX_VOLUME even when the sensitivity analysis
# raises it by half.
MAX_VOLUME = 1e14  # predictions per month
MAX_OUTCOME = 1e9  # value of one prediction, either sign
MAX_PRICE = 1e9  # per hour or per kWh
MAX_ONE_OFF = 1e12  # engineering, per candidate

Outcome = Annotated[float, Field(ge=-MAX_OUTCOME, le=MAX_OUTCOME, allow_inf_nan=False)]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Outcomes(Section):
    """What one prediction is worth. Give `correct`/`wrong`, or `value_matrix`, or `tp`/`fp`/`tn`/`fn`."""

    correct: Outcome | None = Field(None, description="Value of a correct prediction.")
    wrong: Outcome | None = Field(None, description="Value of a wrong prediction (usually negative).")
    value_matrix: dict[str, dict[str, Outcome]] | None = Field(
        None, description="{true label: {predicted label: value}}; every label the models know, both ways."
    )
    tp: Outcome | None = None
    fp: Outcome | None = None
    tn: Outcome | None = None
    fn: Outcome | None = None
    positive: str | None = Field(None, description="tp/fp/tn/fn: the positive label (default: the second label).")
    abstain: Outcome | None = Field(None, description="Value of sending an uncertain case to a person (a cost: "
                                    "negative). Without it no rule abstains.")

    @model_validator(mode="after")
    def _exactly_one_form(self):
        forms = {"correct/wrong": self.correct is not None or self.wrong is not None,
                 "value_matrix": self.value_matrix is not None,
                 "tp/fp/tn/fn": any(v is not None for v in (self.tp, self.fp, self.tn, self.fn))}
        given = [name for name, on in forms.items() if on]
        if len(given) != 1:
            raise ValueError("give exactly one of correct + wrong, value_matrix, or tp + fp + tn + fn"
                             + (f" (got {' and '.join(given)})" if given else ""))
        if given == ["correct/wrong"] and (self.correct is None or self.wrong is None):
            raise ValueError("give both correct and wrong")
        if given == ["tp/fp/tn/fn"] and any(v is None for v in (self.tp, self.fp, self.tn, self.fn)):
            raise ValueError("give all four of tp, fp, tn and fn")
        return self

    def matrix(self, labels: list[str]) -> np.ndarray:
        """The (true x predicted) value matrix in `labels` order. Raises ConfigError if it does not fit them."""
        C = len(labels)
        if self.correct is not None:
            return np.where(np.eye(C, dtype=bool), self.correct, self.wrong).astype(float)
        if self.value_matrix is not None:
            m = self.value_matrix
            missing = [f"{t}->{p}" for t in labels for p in labels if p not in m.get(t, {})]
            unknown = sorted(set(m) - set(labels)) + sorted({p for row in m.values() for p in row} - set(labels))
            if missing or unknown:
                raise ConfigError(f"outcomes.value_matrix does not fit the labels {labels}: "
                                  + (f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}"
                                     if missing else "")
                                  + (f"; unknown label(s) {sorted(set(unknown))}" if unknown else ""))
            return np.array([[m[t][p] for p in labels] for t in labels], dtype=float)
        if C != 2:
            raise ConfigError(f"outcomes tp/fp/tn/fn are for two classes; these runs have {C}: {labels}. "
                              "Use correct/wrong or value_matrix")
        pos = self.positive if self.positive is not None else labels[1]
        if pos not in labels:
            raise ConfigError(f"outcomes.positive {pos!r} is not one of the labels {labels}")
        p = labels.index(pos)
        n = 1 - p
        out = np.zeros((2, 2))
        out[p, p], out[n, p], out[n, n], out[p, n] = self.tp, self.fp, self.tn, self.fn
        return out


class HourlyPrice(Section):
    usd_per_hour: Price = Field(..., description="Price of the hardware per hour, in the scenario's currency.")


class EnergyPrice(Section):
    usd_per_kwh: Price = 0.0
    kg_co2_per_kwh: Price | None = Field(None, description="Grid carbon intensity, to report emissions.")


class Scenario(Section):
    volume_per_month: float = Field(..., gt=0, le=MAX_VOLUME, allow_inf_nan=False,
                                    description="Predictions per month.")
    horizon_months: int = Field(12, ge=1, le=MAX_MONTHS)
    currency: str = "USD"
    outcomes: Outcomes
    latency_slo_ms: float | None = Field(None, gt=0, allow_inf_nan=False,
                                        description="p95 latency at batch 1 a candidate must meet.")
    serve: HourlyPrice
    train: HourlyPrice = Field(default_factory=lambda: HourlyPrice(usd_per_hour=0.0))
    energy: EnergyPrice = Field(default_factory=EnergyPrice)
    engineering: float | dict[str, float] = Field(
        0.0, description="One-off cost to build and deploy: one amount for every candidate, or {run name: amount}."
    )

    @field_validator("engineering")
    @classmethod
    def _engineering_in_range(cls, v):
        for name, amount in (v.items() if isinstance(v, dict) else [(None, v)]):
            if not (math.isfinite(amount) and 0 <= amount <= MAX_ONE_OFF):
                raise ValueError(f"an engineering cost{f' (for {name})' if name else ''} must be a number from 0 to "
                                 f"{MAX_ONE_OFF:,.0f}")
        return v

    def engineering_for(self, name: str) -> float:
        if isinstance(self.engineering, dict):
            return float(self.engineering.get(name, 0.0))
        return float(self.engineering)


def load_scenario(source: str | Path | dict) -> Scenario:
    """Read and validate a scenario YAML (or mapping). Raises ConfigError naming the key and line."""
    from modelyard.config import format_validation_error, read_yaml

    if isinstance(source, dict):
        raw, where, nodes = source, "<dict>", None
    else:
        raw, nodes = read_yaml(Path(source), "a scenario", "volume_per_month, outcomes, serve, ...")
        where = str(source)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, raw, where, nodes, root=Scenario)) from None
