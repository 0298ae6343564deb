"""What a model is worth against what it costs: pure functions (arrays and numbers in, numbers out; no I/O).

Conventions: `V` is the (true x predicted) value matrix of one prediction; `prob` are a model's (N, C)
probabilities; a decision is a class index, or ABSTAIN (-1) for "send the case to a person".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

ABSTAIN = -1

# Every function here is total over finite numbers: no NaN, no infinity, no overflow. Amounts too small to matter
# count as zero; figures beyond a cap are reported at the cap and named (see `Economics.capped`).
MAX_VOLUME = 1e15  # predictions per month (about 400 million a second)
MAX_MONTHS = 1200  # a hundred years: the longest horizon and payback
MAX_AMOUNT = 1e15  # the largest amount of money per prediction or one-off
NEGLIGIBLE_PER_PREDICTION = 1e-21  # per prediction: under 0.002 over MAX_MONTHS at MAX_VOLUME
NEGLIGIBLE_AMOUNT = 1e-9  # a one-off amount
NEGLIGIBLE_VOLUME = 1e-9  # predictions per month


# ---------------------------------------------------------------- value of decisions


def decision_values(y: np.ndarray, decisions: np.ndarray, V: np.ndarray, abstain: float | None = None) -> np.ndarray:
    """The value of each decision given the true class: V[y, d], or `abstain` where d is ABSTAIN.

    Raises:
        ValueError: a decision is ABSTAIN but `abstain` is None (there is no default: what a person's answer is
            worth belongs to the scenario).
    """
    y, d = np.asarray(y), np.asarray(decisions)
    out = V[y, np.where(d == ABSTAIN, 0, d)].astype(float)
    if (d == ABSTAIN).any():
        if abstain is None:
            raise ValueError(f"{int((d == ABSTAIN).sum())} decision(s) abstained but no abstain value was given: "
                             "set outcomes.abstain in the scenario (what sending a case to a person is worth)")
        out[d == ABSTAIN] = abstain
    return out


def expected_value(y: np.ndarray, decisions: np.ndarray, V: np.ndarray, abstain: float | None = None) -> float:
    """Expected value per prediction: the joint frequency of (true, decided) times its value, summed."""
    values = decision_values(y, decisions, V, abstain)
    if values.size == 0:
        raise ValueError("no examples to average: the expected value of zero predictions is undefined")
    return float(values.mean())


def bootstrap_mean(values: np.ndarray, *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean with a percentile-bootstrap interval over the examples."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no examples to average: the mean of zero values is undefined")
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
    if abstain is None:
        raise ValueError("fitting an abstain threshold needs an abstain value: set outcomes.abstain in the scenario")
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
    """Hardware cost of 1,000 predictions at the measured throughput, at most MAX_AMOUNT.

    Raises:
        ValueError: a NaN or infinite argument, or a positive price with a throughput that is not positive.
    """
    _finite(usd_per_hour=usd_per_hour, predictions_per_second=predictions_per_second)
    if usd_per_hour == 0:
        return 0.0
    if predictions_per_second <= 0:
        raise ValueError(f"serving cost needs a positive throughput, got {predictions_per_second} predictions/s: "
                         "a model that serves nothing has no cost per prediction; measure the run again")
    return _clip(usd_per_hour / (predictions_per_second * 3600.0) * 1000.0, MAX_AMOUNT)


def energy_cost_per_1000(joules_per_prediction: float, usd_per_kwh: float) -> float:
    """Energy cost of 1,000 predictions, at most MAX_AMOUNT."""
    _finite(joules_per_prediction=joules_per_prediction, usd_per_kwh=usd_per_kwh)
    kwh = _clip(joules_per_prediction * 1000.0 / 3.6e6, MAX_AMOUNT)
    return _clip(kwh * usd_per_kwh, MAX_AMOUNT)


# ---------------------------------------------------------------- over the horizon


@dataclass
class Economics:
    """One candidate's money over the horizon. A figure named in `capped` is at its cap and means "over" it
    (a payback over MAX_MONTHS months, a break-even volume over MAX_VOLUME predictions/month); `notes` says in
    words why a figure is None or capped."""

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
    capped: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def economics(*, value_per_prediction: float, cost_per_prediction: float, one_off: float, volume_per_month: float,
              horizon_months: int) -> Economics:
    """Monthly and horizon figures of one candidate: (value - cost) per prediction x volume, less the one-off.

    Total over finite numbers: amounts too small to matter count as zero (see NEGLIGIBLE_*), and inputs or
    results beyond MAX_AMOUNT, MAX_VOLUME or MAX_MONTHS are reported at that cap and named in `capped`.

    Example:
        >>> e = economics(value_per_prediction=0.05, cost_per_prediction=0.01, one_off=1200.0,
        ...               volume_per_month=10_000, horizon_months=12)
        >>> e.horizon_total, e.payback_month, e.break_even_volume
        (3600.0, 3, 2500.0)

    Raises:
        ValueError: a NaN or infinite argument, or a negative volume or horizon.
    """
    _finite(value_per_prediction=value_per_prediction, cost_per_prediction=cost_per_prediction, one_off=one_off,
            volume_per_month=volume_per_month, horizon_months=horizon_months)
    _not_negative(volume_per_month=volume_per_month, horizon_months=horizon_months)
    capped: list[str] = []
    value = _amount(value_per_prediction, "value_per_prediction", capped)
    cost = _amount(cost_per_prediction, "cost_per_prediction", capped)
    one_off = _amount(one_off, "one_off", capped, negligible=NEGLIGIBLE_AMOUNT)
    volume = _amount(volume_per_month, "volume_per_month", capped, negligible=NEGLIGIBLE_VOLUME, cap=MAX_VOLUME)
    months = _months(horizon_months, capped)
    net_pp = _amount(value - cost, "net_per_prediction", capped)
    monthly_net = net_pp * volume  # (1e15 x 1e15 at most: finite, and so is everything below)
    total = monthly_net * months - one_off
    notes: dict[str, str] = {}
    if one_off <= 0:
        notes["roi"] = "no one-off cost to return"
    return Economics(
        value_per_prediction=value, cost_per_prediction=cost, monthly_value=value * volume,
        monthly_cost=cost * volume, monthly_net=monthly_net, one_off=one_off, horizon_total=total,
        roi=total / one_off if one_off > 0 else None,
        payback_month=_payback_month(one_off, monthly_net, capped, notes),
        break_even_volume=_break_even_volume(one_off, net_pp, months, capped, notes),
        capped=capped, notes=notes,
    )


def _payback_month(one_off: float, monthly_net: float, capped: list[str], notes: dict[str, str]) -> int | None:
    if one_off <= 0:
        if monthly_net >= 0:
            return 0
        notes["payback_month"] = "never: every month loses money"
        return None
    if monthly_net <= 0:
        notes["payback_month"] = "never: the monthly net is not positive, so the one-off cost is never paid back"
        return None
    if one_off > monthly_net * MAX_MONTHS:  # compared, not divided: a tiny monthly net would overflow
        capped.append("payback_month")
        notes["payback_month"] = f"over {MAX_MONTHS:,} months"
        return MAX_MONTHS
    return max(1, math.ceil(one_off / monthly_net - 1e-12))


def _break_even_volume(one_off: float, net_pp: float, months: int, capped: list[str],
                       notes: dict[str, str]) -> float | None:
    if net_pp < 0:
        notes["break_even_volume"] = "never: each prediction costs more than it earns"
        return None
    if one_off <= 0:
        return 0.0
    if net_pp == 0:
        notes["break_even_volume"] = ("never: each prediction earns what it costs (the value and cost lines are "
                                      "parallel), so no volume pays back the one-off cost")
        return None
    if months == 0:
        notes["break_even_volume"] = "never: a horizon of 0 months leaves no time to pay back the one-off cost"
        return None
    per_unit_volume = net_pp * months
    if one_off > per_unit_volume * MAX_VOLUME:
        capped.append("break_even_volume")
        notes["break_even_volume"] = f"over {MAX_VOLUME:,.0f} predictions/month"
        return MAX_VOLUME
    return one_off / per_unit_volume


def break_even_accuracy(*, value_correct: float, value_wrong: float, cost_per_prediction: float, one_off: float,
                        volume_per_month: float, horizon_months: int) -> float | None:
    """The accuracy at which the horizon total is zero, if a correct answer is worth `value_correct` and a wrong
    one `value_wrong`. 0 if any accuracy pays; None if even a perfect model does not (including a positive
    one-off with no volume or no months to pay it back)."""
    _finite(value_correct=value_correct, value_wrong=value_wrong, cost_per_prediction=cost_per_prediction,
            one_off=one_off, volume_per_month=volume_per_month, horizon_months=horizon_months)
    _not_negative(volume_per_month=volume_per_month, horizon_months=horizon_months)
    ignored: list[str] = []
    vc, vw = _amount(value_correct, "", ignored), _amount(value_wrong, "", ignored)
    cost = _amount(cost_per_prediction, "", ignored)
    one_off = _amount(one_off, "", ignored, negligible=NEGLIGIBLE_AMOUNT)
    predictions = (_amount(volume_per_month, "", ignored, negligible=NEGLIGIBLE_VOLUME, cap=MAX_VOLUME)
                   * _months(horizon_months, ignored))
    if vc <= vw:
        return None
    if one_off <= 0:
        need = cost
    elif predictions == 0:
        return None
    else:
        need = one_off / predictions + cost  # value per prediction to break even (at most 1e15 / 1e-9 + 1e15)
    a = (need - vw) / (vc - vw)
    if a > 1:
        return None
    return max(0.0, float(a))


def crossover_volume(slope_a: float, fixed_a: float, slope_b: float, fixed_b: float) -> float | None:
    """The monthly volume at which two candidates' horizon totals (slope x volume - fixed) are equal.

    None when there is no such volume in (0, MAX_VOLUME]: parallel lines (slopes equal to 1e-9, relative), lines
    that cross at no positive volume, or only beyond MAX_VOLUME.
    """
    _finite(slope_a=slope_a, fixed_a=fixed_a, slope_b=slope_b, fixed_b=fixed_b)
    if math.isclose(slope_a, slope_b, rel_tol=1e-9, abs_tol=NEGLIGIBLE_PER_PREDICTION):
        return None
    dslope, dfixed = slope_a / 2 - slope_b / 2, fixed_a / 2 - fixed_b / 2  # halves: no overflow
    if abs(dfixed) > abs(dslope) * MAX_VOLUME:
        return None
    v = dfixed / dslope
    return v if v > 0 else None


# ---------------------------------------------------------------- keeping every figure finite


def _finite(**numbers: float) -> None:
    for name, x in numbers.items():
        if not (isinstance(x, int) or math.isfinite(x)):  # a Python int is finite, however large
            raise ValueError(f"{name} must be a finite number, got {x}")


def _not_negative(**numbers: float) -> None:
    for name, x in numbers.items():
        if x < 0:
            raise ValueError(f"{name} must not be negative, got {x}")


def _clip(x: float, cap: float) -> float:
    return max(-cap, min(cap, float(x)))


def _amount(x: float, name: str, capped: list[str], *, negligible: float = NEGLIGIBLE_PER_PREDICTION,
            cap: float = MAX_AMOUNT) -> float:
    """`x`, as zero when it is too small to matter, and at `cap` (named in `capped`) when it is beyond it."""
    if abs(x) < negligible:
        return 0.0
    if abs(x) > cap:
        capped.append(name)
        return cap if x > 0 else -cap
    return float(x)


def _months(horizon_months: float, capped: list[str]) -> int:
    if horizon_months > MAX_MONTHS:
        capped.append("horizon_months")
        return MAX_MONTHS
    return int(horizon_months)


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
