"""From measurements and a scenario to the comparison `modelyard value` reports: economics per candidate,
a do-nothing row, Pareto fronts, sensitivity, and one recommendation with its reason.

`compare` is pure: measurements (as `measure.measure` returns them) in, a JSON-ready dict out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelyard.errors import ConfigError
from modelyard.metrics.directions import oriented
from modelyard.value import economics as ec
from modelyard.value.scenario import Scenario

FACTORS = {"volume": "predictions per month", "outcome_values": "what outcomes are worth",
           "hardware_price": "hardware price per hour"}


def check_comparable(measurements: list[dict]) -> list[str]:
    """The shared label list. Runs of different tasks, label sets or test sets cannot be compared."""
    first = measurements[0]
    same_labels({m["name"]: m["labels"] for m in measurements})
    for m in measurements[1:]:
        if m["predictions"]["test"][0] != first["predictions"]["test"][0]:
            raise ConfigError(f"cannot compare {first['name']} and {m['name']}: they were tested on different "
                              "examples; train them on the same data source and split")
    return first["labels"]


def same_labels(labels_by_candidate: dict[str, list[str]]) -> list[str]:
    """The label list every candidate shares; runs with different label sets cannot be compared."""
    (first_name, first), *rest = labels_by_candidate.items()
    for name, labels in rest:
        if labels != first:
            raise ConfigError(f"cannot compare {first_name} and {name}: different label sets ({first} vs {labels}); "
                              "compare runs of the same task")
    return first


def _one_off(m: dict, s: Scenario) -> dict:
    t = m["training"]
    hours = (t.get("time_s") or 0.0) / 3600 * (t.get("processes") or 1)
    kwh = (t.get("energy") or {}).get("kwh", 0.0)
    parts = {"training_hardware": hours * s.train.usd_per_hour, "training_energy": kwh * s.energy.usd_per_kwh,
             "engineering": _engineering(m, s)}
    parts["total"] = sum(parts.values())
    return parts


def _engineering(m: dict, s: Scenario) -> float:
    """The scenario's engineering cost for a candidate. A derived run the scenario does not name pays its
    experiment's (the trained model it comes from): building, reviewing and deploying it is the same work, and
    without this a compressed copy would look free of it and outrank its parent on one-off cost alone."""
    named = isinstance(s.engineering, dict) and m["name"] in s.engineering
    if m.get("lineage") and not named:
        return s.engineering_for(m.get("experiment") or m["name"])
    return s.engineering_for(m["name"])


def _correct_wrong_values(y: np.ndarray, pred: np.ndarray, V: np.ndarray) -> tuple[float, float]:
    """Average value of a correct and of a wrong prediction, weighted as this model's test answers fall."""
    vals = V[y, pred]
    right = y == pred
    vc = float(vals[right].mean()) if right.any() else float(np.diag(V).mean())
    off = V[~np.eye(len(V), dtype=bool)]
    vw = float(vals[~right].mean()) if (~right).any() else float(off.mean()) if off.size else vc
    return vc, vw


def unique_names(measurements: list[dict]) -> list[dict]:
    """The measurements, renamed where two share a name (two runs of one experiment): those are named by their
    run folder instead, which is unique on disk."""
    counts: dict[str, int] = {}
    for m in measurements:
        counts[m["name"]] = counts.get(m["name"], 0) + 1
    out = [dict(m, name=Path(m["run"]).name) if counts[m["name"]] > 1 else m for m in measurements]
    seen: dict[str, int] = {}
    for m in out:  # the same run given twice
        seen[m["name"]] = seen.get(m["name"], 0) + 1
        if seen[m["name"]] > 1:
            m["name"] = f"{m['name']} #{seen[m['name']]}"
    return out


def _decision_values(m: dict, V: np.ndarray, abstain: float | None) -> tuple[dict, np.ndarray]:
    """(the decision rules tried and the one chosen on val, the value of each test decision under that rule)."""
    val = (np.asarray(m["predictions"]["val"][0]), np.asarray(m["predictions"]["val"][1]))
    test = (np.asarray(m["predictions"]["test"][0]), np.asarray(m["predictions"]["test"][1]))
    rules = ec.decision_rules(val, test, V, abstain)
    chosen = rules["rules"][rules["chosen"]]
    if rules["chosen"] == "argmax":
        decisions = test[1].argmax(axis=1)
    else:
        decisions = ec.value_optimal_decisions(test[1], V)
        if chosen["threshold"] is not None:
            decisions = ec.with_abstain(test[1], decisions, chosen["threshold"])
    return rules, ec.decision_values(test[0], decisions, V, abstain)


def candidate_row(m: dict, s: Scenario, V: np.ndarray, *, resamples: int = 1000, seed: int = 0,
                  volume: float | None = None, value_scale: float = 1.0, price_scale: float = 1.0) -> dict:
    """Economics of one measured candidate; the scale arguments move the scenario for the sensitivity analysis."""
    volume = s.volume_per_month if volume is None else volume
    V = V * value_scale
    abstain = None if s.outcomes.abstain is None else s.outcomes.abstain * value_scale
    rules, values = _decision_values(m, V, abstain)
    test = (np.asarray(m["predictions"]["test"][0]), np.asarray(m["predictions"]["test"][1]))
    ev = ec.bootstrap_mean(values, resamples=resamples, seed=seed)
    serve = ec.serving_cost_per_1000(s.serve.usd_per_hour * price_scale, m["predictions_per_second"])
    energy = ec.energy_cost_per_1000(m["energy_per_prediction_j"], s.energy.usd_per_kwh)
    one_off = _one_off(m, s)
    one_off_total = one_off["total"] - one_off["training_hardware"] * (1 - price_scale)
    econ = ec.economics(value_per_prediction=ev["value"], cost_per_prediction=(serve + energy) / 1000,
                        one_off=one_off_total, volume_per_month=volume, horizon_months=s.horizon_months)
    vc, vw = _correct_wrong_values(test[0], test[1].argmax(axis=1), V)
    p95 = m["latency_ms_batch1"]["p95"]
    co2 = None
    if s.energy.kg_co2_per_kwh is not None:
        kwh_month = m["energy_per_prediction_j"] * volume / 3.6e6
        train_kwh = ((m["training"].get("energy") or {}).get("kwh") or 0.0)
        co2 = {"training_kg": train_kwh * s.energy.kg_co2_per_kwh, "serving_kg_per_month": kwh_month * s.energy.kg_co2_per_kwh}
    row = {
        **econ.as_dict(),  # its value_per_prediction (a number) is replaced by the one with an interval below
        "name": m["name"], "run": m["run"], "model": m["model"], "kind": "model", "lineage": m.get("lineage"),
        "accuracy": m["quality"]["accuracy"], "f1_macro": m["quality"]["f1_macro"], "ece": m["quality"]["ece"],
        "p95_ms": p95, "p50_ms": m["latency_ms_batch1"]["p50"], "p99_ms": m["latency_ms_batch1"]["p99"],
        "predictions_per_second": m["predictions_per_second"], "parameters": m["size"]["parameters"],
        "bytes_on_disk": m["size"]["bytes_on_disk"], "flops_per_example": m["flops_per_example"],
        "value_per_prediction": ev, "decision_rules": rules,
        "serve_cost_per_1000": serve, "energy_cost_per_1000": energy, "cost_per_1000": serve + energy,
        "one_off": one_off,
        "break_even_accuracy": ec.break_even_accuracy(
            value_correct=vc, value_wrong=vw, cost_per_prediction=(serve + energy) / 1000, one_off=one_off_total,
            volume_per_month=volume, horizon_months=s.horizon_months),
        "meets_slo": s.latency_slo_ms is None or p95 <= s.latency_slo_ms,
        "co2": co2,
        "one_off_basis": m["training"].get("basis"),
    }
    # Net per month moves one for one with the value per prediction (costs are measured, not sampled), so its
    # interval is the value's interval times the volume.
    row["monthly_net_interval"] = None if ev["low"] is None else {
        "low": row["monthly_net"] + (ev["low"] - ev["value"]) * volume,
        "high": row["monthly_net"] + (ev["high"] - ev["value"]) * volume}
    return row


def do_nothing_row(s: Scenario) -> dict:
    econ = ec.economics(value_per_prediction=0.0, cost_per_prediction=0.0, one_off=0.0,
                        volume_per_month=s.volume_per_month, horizon_months=s.horizon_months)
    return {**econ.as_dict(), "name": "do nothing", "kind": "baseline",
            "value_per_prediction": {"value": 0.0, "low": 0.0, "high": 0.0}, "cost_per_1000": 0.0, "meets_slo": True,
            "monthly_net_interval": {"low": 0.0, "high": 0.0}, "one_off": {"total": 0.0}}


def ranking(rows: list[dict], nothing: dict) -> list[str]:
    """Candidate names, best first, with "do nothing" where it falls: by net value over the horizon (ties: the
    cheaper to serve), every candidate that breaks the latency SLO after all the others, whatever it earns."""
    everyone = [*rows, nothing]
    order = sorted(range(len(everyone)), key=lambda i: (not everyone[i]["meets_slo"], -everyone[i]["horizon_total"],
                                                         everyone[i]["cost_per_1000"], i))
    return [everyone[i]["name"] for i in order]


def separation(best: dict, runner: dict, values: dict[str, np.ndarray], s: Scenario, *, resamples: int = 1000,
               seed: int = 0, level: float = 0.95) -> dict:
    """Whether the test set tells the recommended candidate from the next one: the difference of their net value
    over the horizon, with a paired bootstrap interval.

    Both models answered the same test examples, so each resample draws the same examples for both and averages
    the per-example difference in value: what the two share (hard examples, easy ones) cancels, which makes the
    interval narrower than two separate ones and honest about it. Serving cost and one-off cost are measured,
    not sampled, so they shift the interval without widening it. `runner` may be the do-nothing row (its value
    is 0 on every example).

    Returns:
        the difference and its interval; `separated` is True when the interval lies above zero, False when it
        holds zero, None when there is no interval to judge by (no resamples, or both candidates worth the same
        on every test example).
    """
    mine = values[best["name"]]
    theirs = values.get(runner["name"], np.zeros_like(mine))
    diff = ec.bootstrap_mean(mine - theirs, resamples=resamples, seed=seed, level=level)
    scale = s.volume_per_month * s.horizon_months
    point = best["horizon_total"] - runner["horizon_total"]
    out = {"against": runner["name"], "metric": "net value over the horizon", "difference": point,
           "difference_per_month": best["monthly_net"] - runner["monthly_net"],
           "value_per_prediction_difference": diff, "level": level, "n": int(mine.size),
           "same_value_everywhere": bool(np.array_equal(mine, theirs)),
           "method": f"paired bootstrap, {diff['resamples']} resamples of the same test examples"}
    if diff["low"] is None:
        return {**out, "low": None, "high": None, "separated": None}
    low, high = point + (diff["low"] - diff["value"]) * scale, point + (diff["high"] - diff["value"]) * scale
    # The same value on every example: the interval has no width, and only the measured costs differ.
    separated = None if out["same_value_everywhere"] else bool(low > 0)
    return {**out, "low": low, "high": high, "separated": separated}


def separation_sentence(sep: dict | None, best: str, s: Scenario) -> str:
    """The recommendation's last sentence: whether the test set tells the best candidate from the next."""
    if sep is None or sep["low"] is None:
        return ""
    cur, months = s.currency, s.horizon_months
    what = "doing nothing" if sep["against"] == "do nothing" else sep["against"]
    interval = f"[{_money(sep['low'], cur)}, {_money(sep['high'], cur)}]"
    how = f"paired bootstrap over the same {sep['n']:,} test examples"
    if sep["same_value_everywhere"]:
        return (f" {best} and {what} are worth the same on each of the {sep['n']:,} test examples, so only their "
                f"measured costs tell them apart: {_money(sep['difference'], cur)} over {months} months, a "
                "difference the test set puts no interval on (speed is timed, not sampled).")
    if sep["separated"]:
        return (f" The test set separates {best} from {what}: the difference in net value over {months} months, "
                f"{_money(sep['difference'], cur)}, has a {sep['level']:.0%} interval {interval} above zero ({how}).")
    return (f" {best} and {what} are not separated: the difference in net value over {months} months, "
            f"{_money(sep['difference'], cur)}, is within its {sep['level']:.0%} interval {interval} ({how}); "
            f"on this test set {best} is not shown to be better.")


def sensitivity(m: dict, s: Scenario, V: np.ndarray) -> dict:
    """Horizon total when each factor moves by -50% and +50%, the others held."""
    out = {}
    for factor in FACTORS:
        row = {}
        for label, k in (("low", 0.5), ("high", 1.5)):
            kw = {"volume": s.volume_per_month * k} if factor == "volume" else \
                 {"value_scale": k} if factor == "outcome_values" else {"price_scale": k}
            row[label] = candidate_row(m, s, V, resamples=0, **kw)["horizon_total"]
        out[factor] = row
    return out


def pareto_dominated(rows: list[dict], first: str, second: str) -> list[bool]:
    """Per row, whether another row is at least as good on metrics `first` and `second` and better on one;
    which way is better comes from the metric table (`modelyard.metrics.directions`)."""
    return ec.dominated([(oriented(r[first], first), -oriented(r[second], second)) for r in rows])


def _money(x: float, cur: str) -> str:
    """Whole units when they matter, two significant digits when the amount is under one unit (0.0021 USD)."""
    if abs(x) >= 100:
        return f"{x:,.0f} {cur}"
    return f"{x:.2f} {cur}" if abs(x) >= 1 or x == 0 else f"{x:.2g} {cur}"


def recommendation(rows: list[dict], best: int | None, s: Scenario) -> str:
    cur = s.currency
    if best is None:
        why = ("no candidate meets the latency SLO and earns more than it costs" if s.latency_slo_ms
               else "no candidate earns more than it costs")
        return f"Do nothing: {why} over {s.horizon_months} months at {s.volume_per_month:,.0f} predictions/month."
    b = rows[best]
    others = [r for i, r in enumerate(rows) if i != best and r["meets_slo"] and r["horizon_total"] > 0]
    if not others:
        be = b["break_even_volume"]
        below = f"; below {be:,.0f} predictions/month it does not pay back within {s.horizon_months} months" \
            if be else ""
        return (f"{b['name']} earns {_money(b['monthly_net'], cur)}/month net at this volume "
                f"({_money(b['horizon_total'], cur)} over {s.horizon_months} months after one-off costs){below}.")
    r = max(others, key=lambda o: o["horizon_total"])
    slope = lambda o: (o["value_per_prediction"]["value"] - o["cost_per_1000"] / 1000) * s.horizon_months  # noqa: E731
    cross = ec.crossover_volume(slope(b), b["one_off"]["total"], slope(r), r["one_off"]["total"])
    tail = ""
    if cross is not None and cross >= 0.01 * s.volume_per_month:  # a crossover near zero volume says nothing
        side = "below" if slope(b) > slope(r) else "above"
        tail = f"; {side} {cross:,.0f} predictions/month {r['name']} is better"
    return (f"{b['name']} earns {_money(b['monthly_net'] - r['monthly_net'], cur)}/month more than {r['name']} at "
            f"this volume ({_money(b['horizon_total'] - r['horizon_total'], cur)} more over {s.horizon_months} "
            f"months){tail}.")


def compare(measurements: list[dict], s: Scenario, *, resamples: int = 1000, seed: int = 0) -> dict:
    measurements = unique_names(measurements)
    labels = check_comparable(measurements)
    V = s.outcomes.matrix(labels)
    rows = [candidate_row(m, s, V, resamples=resamples, seed=seed) for m in measurements]
    eligible = [r["meets_slo"] for r in rows]
    baseline = {"horizon_total": 0.0, "cost_per_1000": 0.0}  # doing nothing earns and costs nothing
    value_cost = pareto_dominated([*rows, baseline], "horizon_total", "cost_per_1000")
    acc_latency = pareto_dominated(rows, "accuracy", "p95_ms")
    for r, d1, d2 in zip(rows, value_cost, acc_latency):
        r["dominated_value_cost"], r["dominated_accuracy_latency"] = d1, d2
    best = ec.recommend([r["horizon_total"] for r in rows], [r["cost_per_1000"] for r in rows], eligible)
    focus = best if best is not None else int(np.argmax([r["horizon_total"] for r in rows]))
    nothing = do_nothing_row(s)
    order = ranking(rows, nothing)
    for r in rows:
        r["rank"] = order.index(r["name"]) + 1
    sep = None
    if best is not None:
        by_name = {r["name"]: r for r in [*rows, nothing]}
        after = order[order.index(rows[best]["name"]) + 1]  # the best always ranks above doing nothing
        values = {m["name"]: _decision_values(m, V, s.outcomes.abstain)[1] for m in measurements
                  if m["name"] in (rows[best]["name"], after)}
        sep = separation(rows[best], by_name[after], values, s, resamples=resamples, seed=seed)
    return {
        "scenario": s.model_dump(mode="json"),
        "labels": labels,
        "value_matrix": V.tolist(),
        "candidates": rows,
        "do_nothing": nothing,
        "ranking": order,
        "recommended": None if best is None else rows[best]["name"],
        "separation": sep,
        "recommendation": recommendation(rows, best, s)
                          + separation_sentence(sep, rows[best]["name"] if best is not None else "", s),
        "sensitivity": {"candidate": rows[focus]["name"], "base": rows[focus]["horizon_total"],
                        "factors": sensitivity(measurements[focus], s, V)},
        "machine": measurements[0]["machine"],
    }
