"""What a model is worth against what it costs: pure functions (arrays and numbers in, numbers out; no I/O).

Conventions: `V` is the (true x predicted) value matrix of one prediction; `prob` are a model's (N, C)
probabilities; a decision is a class index, or ABSTAIN (-1) for "send the case to a person".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ABSTAIN = -1


# ---------------------------------------------------------------- value of decisions


def decision_values(y: np.ndarray, decisions: np.ndarray, V: np.ndarray, abstain: float | None = None) -> np.ndarray:
    """The value of each decision given the true class: V[y, d], or `abstain` where d is ABSTAIN."""
    y, d = np.asarray(y), np.asarray(decisions)
    out = V[y, np.where(d == ABSTAIN, 0, d)].astype(float)
    if (d == ABSTAIN).any():
        if abstain is None:
            raise ValueError("a decision abstained but the scenario has no abstain value")
        out[d == ABSTAIN] = abstain
    return out


def expected_value(y: np.ndarray, decisions: np.ndarray, V: np.ndarray, abstain: float | None = None) -> float:
    """Expected value per prediction: the joint frequency of (true, decided) times its value, summed."""
    return float(decision_values(y, decisions, V, abstain).mean())


def bootstrap_mean(values: np.ndarray, *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean with a percentile-bootstrap interval over the examples."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if resamples <= 0 or len(values) < 2:
        return {"value": mean, "low": None, "high": None, "resamples": 0}
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    a = (1 - level) / 2
    return {"value": mean, "low": float(np.quantile(means, a)), "high": float(np.quantile(means, 1 - a)),
            "resamples": resamples}


def value_optimal_decisions(prob: np.ndarray, V: np.ndarray) -> np.ndarray:
    """For each example, the class whose prediction has the highest expected value under `prob`."""
    return (prob @ V).argmax(axis=1)  # (N, C_true) @ (C_true, C_pred): expected value of predicting each class


def with_abstain(prob: np.ndarray, decisions: np.ndarray, threshold: float) -> np.ndarray:
    """Abstain wherever the model's confidence (its highest probability) is below `threshold`."""
    return np.where(prob.max(axis=1) < threshold, ABSTAIN, decisions)


def fit_abstain_threshold(prob: np.ndarray, y: np.ndarray, V: np.ndarray, abstain: float) -> float:
    """The confidence threshold that maximises the mean value on (`prob`, `y`), deciding value-optimally above it.

    Abstaining on the k least confident examples is tried for every k; ties go to the lower threshold.
    """
    decisions = value_optimal_decisions(prob, V)
    conf = prob.max(axis=1)
    order = np.argsort(conf, kind="stable")
    gain = abstain - decision_values(y, decisions, V)[order]  # what abstaining on each example adds
    totals = np.concatenate([[0.0], np.cumsum(gain)])  # abstain on the k least confident, k = 0..N
    k = int(np.argmax(totals))
    if k == 0:
        return 0.0
    return float(conf[order[k - 1]]) + 1e-12 if k == len(conf) else float((conf[order[k - 1]] + conf[order[k]]) / 2)


def decision_rules(val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], V: np.ndarray,
                   abstain: float | None) -> dict:
    """Plain argmax, the value-optimal rule and (with an abstain value) a confidence threshold fitted on the
    validation split. Each is scored on val and on test; `chosen` is the best on val (never picked on test)."""
    (vy, vp), (ty, tp) = val, test
    rules = {"argmax": (lambda p: p.argmax(axis=1), None), "value_optimal": (lambda p: value_optimal_decisions(p, V), None)}
    if abstain is not None:
        t = fit_abstain_threshold(vp, vy, V, abstain)
        rules["value_optimal_abstain"] = (lambda p: with_abstain(p, value_optimal_decisions(p, V), t), t)
    out = {}
    for name, (rule, threshold) in rules.items():
        dv, dt = rule(vp), rule(tp)
        out[name] = {"val": expected_value(vy, dv, V, abstain), "test": expected_value(ty, dt, V, abstain),
                     "threshold": threshold, "abstain_rate_test": float((dt == ABSTAIN).mean())}
    base = out["argmax"]["test"]
    for r in out.values():
        r["gain_over_argmax_test"] = r["test"] - base
    chosen = max(out, key=lambda k: (out[k]["val"], -list(out).index(k)))
    return {"rules": out, "chosen": chosen}


# ---------------------------------------------------------------- costs


def serving_cost_per_1000(usd_per_hour: float, predictions_per_second: float) -> float:
    """Hardware cost of 1,000 predictions at the measured throughput."""
    if usd_per_hour == 0:
        return 0.0
    return usd_per_hour / (predictions_per_second * 3600.0) * 1000.0


def energy_cost_per_1000(joules_per_prediction: float, usd_per_kwh: float) -> float:
    return joules_per_prediction * 1000.0 / 3.6e6 * usd_per_kwh


# ---------------------------------------------------------------- over the horizon


@dataclass
class Economics:
    value_per_prediction: float
    cost_per_prediction: float
    monthly_value: float
    monthly_cost: float
    monthly_net: float
    one_off: float
    horizon_total: float
    roi: float | None  # horizon total / one-off; None without a one-off cost
    payback_month: int | None  # first month whose cumulative net covers the one-off; None if never
    break_even_volume: float | None  # predictions/month at which the horizon total is zero; None if never

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def economics(*, value_per_prediction: float, cost_per_prediction: float, one_off: float, volume_per_month: float,
              horizon_months: int) -> Economics:
    net_pp = value_per_prediction - cost_per_prediction
    monthly_net = net_pp * volume_per_month
    total = monthly_net * horizon_months - one_off
    if one_off <= 0:
        payback = 0 if monthly_net >= 0 else None
    else:
        payback = math.ceil(one_off / monthly_net - 1e-12) if monthly_net > 0 else None
    if net_pp > 0:
        break_even = one_off / (net_pp * horizon_months)
    else:
        break_even = 0.0 if (one_off <= 0 and net_pp == 0) else None
    return Economics(
        value_per_prediction=value_per_prediction, cost_per_prediction=cost_per_prediction,
        monthly_value=value_per_prediction * volume_per_month, monthly_cost=cost_per_prediction * volume_per_month,
        monthly_net=monthly_net, one_off=one_off, horizon_total=total,
        roi=total / one_off if one_off > 0 else None, payback_month=payback, break_even_volume=break_even,
    )


def break_even_accuracy(*, value_correct: float, value_wrong: float, cost_per_prediction: float, one_off: float,
                        volume_per_month: float, horizon_months: int) -> float | None:
    """The accuracy at which the horizon total is zero, if a correct answer is worth `value_correct` and a wrong
    one `value_wrong`. 0 if any accuracy pays; None if even a perfect model does not."""
    need = one_off / (volume_per_month * horizon_months) + cost_per_prediction  # value per prediction to break even
    if value_correct <= value_wrong:
        return None
    a = (need - value_wrong) / (value_correct - value_wrong)
    if a > 1:
        return None
    return max(0.0, float(a))


def crossover_volume(slope_a: float, fixed_a: float, slope_b: float, fixed_b: float) -> float | None:
    """The monthly volume at which two candidates' horizon totals (slope x volume - fixed) are equal, if positive."""
    if math.isclose(slope_a, slope_b):
        return None
    v = (fixed_a - fixed_b) / (slope_a - slope_b)
    return v if v > 0 else None


# ---------------------------------------------------------------- comparing candidates


def dominated(points: list[tuple[float, float]]) -> list[bool]:
    """For (benefit, cost) points: True where another point is at least as good on both and better on one."""
    out = []
    for i, (bi, ci) in enumerate(points):
        out.append(any((bj >= bi and cj <= ci) and (bj > bi or cj < ci) for j, (bj, cj) in enumerate(points) if j != i))
    return out


def recommend(totals: list[float], costs: list[float], eligible: list[bool]) -> int | None:
    """Index of the eligible candidate with the highest horizon total (ties: the cheaper), or None when none
    earns more than doing nothing."""
    best = None
    for i, (t, c, ok) in enumerate(zip(totals, costs, eligible)):
        if ok and t > 0 and (best is None or (t, -c) > (totals[best], -costs[best])):
            best = i
    return best
