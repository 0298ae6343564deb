"""Economics on scenarios small enough to work out by hand, and properties that must hold for any numbers."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modelyard.value import economics as ec
from modelyard.value.compare import compare
from modelyard.value.scenario import MAX_ONE_OFF, MAX_OUTCOME, MAX_PRICE, load_scenario
from modelyard.value.scenario import MAX_VOLUME as MAX_SCENARIO_VOLUME
from tests.value.fake import fake_measurement

V2 = np.array([[1.0, -2.0], [-4.0, 3.0]])  # true x predicted


def test_expected_value_is_joint_frequency_times_value():
    y = np.array([0, 0, 1, 1])
    d = np.array([0, 1, 1, 0])
    # (0,0): 1, (0,1): -2, (1,1): 3, (1,0): -4 -> mean (1 - 2 + 3 - 4) / 4 = -0.5
    assert ec.expected_value(y, d, V2) == pytest.approx(-0.5)
    assert ec.expected_value(y, np.array([0, ec.ABSTAIN, 1, ec.ABSTAIN]), V2, abstain=-1.0) == pytest.approx(
        (1 - 1 + 3 - 1) / 4)


def test_value_optimal_rule_is_not_argmax():
    # p = (0.6, 0.4): predicting 0 is worth 0.6*1 + 0.4*-4 = -1.0; predicting 1 is 0.6*-2 + 0.4*3 = 0.0
    prob = np.array([[0.6, 0.4]])
    assert ec.value_optimal_decisions(prob, V2).tolist() == [1]
    assert prob.argmax(axis=1).tolist() == [0]


def test_abstain_threshold_pays_where_a_person_is_cheaper():
    prob = np.array([[0.95, 0.05], [0.55, 0.45], [0.9, 0.1], [0.52, 0.48]])
    y = np.array([0, 1, 0, 0])
    V = np.array([[1.0, -10.0], [-10.0, 1.0]])
    # Deciding: 1, -10, 1, 1 (the two uncertain ones split). Abstaining (-0.5) on the two least confident
    # gives 1 - 0.5 + 1 - 0.5 = 1.0 against 1 - 10 + 1 + 1 = -7 or, abstaining on one only, 1 - 10 + 1 - 0.5.
    t = ec.fit_abstain_threshold(prob, y, V, abstain=-0.5)
    assert 0.55 < t < 0.9
    d = ec.with_abstain(prob, ec.value_optimal_decisions(prob, V), t)
    assert d.tolist() == [0, ec.ABSTAIN, 0, ec.ABSTAIN]


def test_decision_rules_are_chosen_on_val_and_reported_on_test():
    prob = np.array([[0.6, 0.4], [0.8, 0.2], [0.2, 0.8]])
    y = np.array([1, 0, 1])
    out = ec.decision_rules((y, prob), (y, prob), V2, abstain=None)
    assert set(out["rules"]) == {"argmax", "value_optimal"}
    # argmax: 0, 0, 1 -> -4 + 1 + 3 = 0. Value-optimal: 1 (see above); (0.8, 0.2): 0.8 - 0.8 = 0 vs -1.6 + 0.6 = -1,
    # so 0; (0.2, 0.8): 0.2 - 3.2 = -3 vs -0.4 + 2.4 = 2, so 1 -> 3 + 1 + 3
    assert out["rules"]["argmax"]["test"] == pytest.approx(0.0)
    assert out["rules"]["value_optimal"]["test"] == pytest.approx((3 + 1 + 3) / 3)
    assert out["chosen"] == "value_optimal"
    assert out["rules"]["value_optimal"]["gain_over_argmax_test"] == pytest.approx(7 / 3)


def test_costs_per_thousand_by_hand():
    # 0.36 USD/hour at 100 predictions/s: 360,000 predictions an hour -> 0.001 USD per 1,000
    assert ec.serving_cost_per_1000(0.36, 100.0) == pytest.approx(0.001)
    # 3.6 J per prediction = 1e-3 kWh per 1,000 predictions, at 0.2 USD/kWh -> 0.0002 USD
    assert ec.energy_cost_per_1000(3.6, 0.2) == pytest.approx(0.0002)


def test_economics_by_hand():
    e = ec.economics(value_per_prediction=0.05, cost_per_prediction=0.01, one_off=1200.0, volume_per_month=10_000,
                     horizon_months=12)
    assert e.monthly_net == pytest.approx(400.0)          # (0.05 - 0.01) x 10,000
    assert e.horizon_total == pytest.approx(3600.0)       # 400 x 12 - 1200
    assert e.roi == pytest.approx(3.0)
    assert e.payback_month == 3                           # 1200 / 400
    assert e.break_even_volume == pytest.approx(2500.0)   # 1200 / (0.04 x 12)
    loser = ec.economics(value_per_prediction=0.01, cost_per_prediction=0.02, one_off=10.0, volume_per_month=1000,
                         horizon_months=6)
    assert loser.horizon_total < 0 and loser.payback_month is None and loser.break_even_volume is None


def test_break_even_accuracy_by_hand():
    # correct +1, wrong -1, cost 0.1/prediction, one-off 1200 over 12 x 1000 predictions -> need 0.2 per prediction:
    # a - (1 - a) = 0.2 -> a = 0.6
    a = ec.break_even_accuracy(value_correct=1, value_wrong=-1, cost_per_prediction=0.1, one_off=1200,
                               volume_per_month=1000, horizon_months=12)
    assert a == pytest.approx(0.6)
    assert ec.break_even_accuracy(value_correct=1, value_wrong=-1, cost_per_prediction=5, one_off=0,
                                  volume_per_month=1000, horizon_months=12) is None


def test_crossover_and_dominance():
    # a: 2/month/prediction-unit, 100 fixed; b: 1, 0 fixed -> equal at 100
    assert ec.crossover_volume(2.0, 100.0, 1.0, 0.0) == pytest.approx(100.0)
    assert ec.dominated([(10, 1), (5, 2), (10, 1), (12, 3)]) == [False, True, False, False]


def test_a_loss_making_candidate_is_not_recommended():
    assert ec.recommend([-5.0, -1.0], [1.0, 2.0], [True, True]) is None
    assert ec.recommend([5.0, 9.0], [1.0, 2.0], [True, False]) == 0  # the better one breaks the SLO


money = st.floats(min_value=-100, max_value=100, allow_nan=False)
positive = st.floats(min_value=0.01, max_value=1e6, allow_nan=False)


@st.composite
def predictions(draw, classes=3, n=12):
    probs = draw(st.lists(st.lists(st.floats(0.01, 1.0), min_size=classes, max_size=classes), min_size=n, max_size=n))
    prob = np.array(probs)
    prob /= prob.sum(axis=1, keepdims=True)
    y = np.array(draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)))
    return y, prob


@settings(max_examples=60, deadline=None)
@given(predictions(), money, money, st.floats(0.01, 50))
def test_raising_the_value_of_a_correct_answer_never_lowers_expected_value(data, correct, wrong, raise_by):
    y, prob = data
    V = np.where(np.eye(3, dtype=bool), correct, wrong)
    higher = np.where(np.eye(3, dtype=bool), correct + raise_by, wrong)
    for decide in (lambda p, V: p.argmax(axis=1), ec.value_optimal_decisions):
        assert ec.expected_value(y, decide(prob, higher), higher) >= ec.expected_value(y, decide(prob, V), V) - 1e-9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(money, st.floats(0, 10)), min_size=1, max_size=6), st.data())
def test_a_dominated_candidate_is_never_recommended(points, data):
    totals, costs = [p[0] for p in points], [p[1] for p in points]
    eligible = data.draw(st.lists(st.booleans(), min_size=len(points), max_size=len(points)))
    best = ec.recommend(totals, costs, eligible)
    if best is not None:
        pool = [(t, c) for t, c, ok in zip(totals, costs, eligible) if ok]
        assert not ec.dominated(pool)[[i for i, ok in enumerate(eligible) if ok].index(best)]


@settings(max_examples=60, deadline=None)
@given(positive, positive)
def test_with_a_zero_price_the_cost_is_zero(throughput, joules):
    assert ec.serving_cost_per_1000(0.0, throughput) == 0.0
    assert ec.energy_cost_per_1000(joules, 0.0) == 0.0


# ---------------------------------------------------------------- edge cases


def test_zero_throughput_is_a_clear_error_unless_the_machine_is_free():
    with pytest.raises(ValueError, match="positive throughput, got 0.0 predictions/s"):
        ec.serving_cost_per_1000(0.2, 0.0)
    assert ec.serving_cost_per_1000(0.0, 0.0) == 0.0
    # A throughput so low that the cost per 1,000 would overflow is reported at the cap, not as infinity.
    assert ec.serving_cost_per_1000(0.2, 5e-324) == ec.MAX_AMOUNT


def test_zero_volume_earns_nothing_and_never_pays_back():
    e = ec.economics(value_per_prediction=0.05, cost_per_prediction=0.01, one_off=100.0, volume_per_month=0,
                     horizon_months=12)
    assert (e.monthly_value, e.monthly_cost, e.monthly_net) == (0.0, 0.0, 0.0)
    assert e.horizon_total == -100.0 and e.roi == -1.0
    assert e.payback_month is None and e.notes["payback_month"].startswith("never")
    assert e.break_even_volume == pytest.approx(100 / (0.04 * 12))  # the break-even does not depend on the volume
    free = ec.economics(value_per_prediction=0.05, cost_per_prediction=0.01, one_off=0.0, volume_per_month=0,
                        horizon_months=12)
    assert free.horizon_total == 0.0 and free.payback_month == 0 and free.roi is None
    # A volume too small to matter counts as none.
    tiny = ec.economics(value_per_prediction=0.05, cost_per_prediction=0.01, one_off=100.0, volume_per_month=1e-300,
                        horizon_months=12)
    assert tiny.monthly_net == 0.0 and tiny.payback_month is None


def test_zero_horizon_leaves_only_the_one_off():
    e = ec.economics(value_per_prediction=0.05, cost_per_prediction=0.01, one_off=100.0, volume_per_month=1000,
                     horizon_months=0)
    assert e.horizon_total == -100.0 and e.monthly_net == pytest.approx(40.0)
    assert e.payback_month == 3  # 100 / 40: the payback month does not depend on the horizon
    assert e.break_even_volume is None and "0 months" in e.notes["break_even_volume"]
    assert ec.break_even_accuracy(value_correct=1, value_wrong=-1, cost_per_prediction=0.1, one_off=100,
                                  volume_per_month=1000, horizon_months=0) is None
    # Without a one-off only the cost per prediction must be earned: a - (1 - a) = 0.1 -> a = 0.55
    assert ec.break_even_accuracy(value_correct=1, value_wrong=-1, cost_per_prediction=0.1, one_off=0,
                                  volume_per_month=0, horizon_months=0) == pytest.approx(0.55)


def test_parallel_value_and_cost_lines_never_break_even_and_say_so():
    e = ec.economics(value_per_prediction=0.5, cost_per_prediction=0.5, one_off=10.0, volume_per_month=1000,
                     horizon_months=12)
    assert e.monthly_net == 0.0 and e.horizon_total == -10.0
    assert e.break_even_volume is None and "parallel" in e.notes["break_even_volume"]
    assert e.payback_month is None and e.capped == []
    # Two candidates with the same slope never cross, also when the slopes differ by a subnormal amount
    # (the division used to give an infinite crossover volume).
    assert ec.crossover_volume(0.3, 100.0, 0.3, 50.0) is None
    assert ec.crossover_volume(2.2e-309, 100.0, 0.0, 0.0) is None
    assert ec.crossover_volume(1.0 + 1e-12, 100.0, 1.0, 0.0) is None  # equal to 1e-9, relative
    # Lines that cross only beyond MAX_VOLUME have no crossover either.
    assert ec.crossover_volume(1e-10, 1e15, 0.0, 0.0) is None


def test_a_payback_or_break_even_beyond_the_cap_is_reported_as_over_it():
    e = ec.economics(value_per_prediction=1e-6, cost_per_prediction=0.0, one_off=1e6, volume_per_month=1.0,
                     horizon_months=12)
    # monthly net 1e-6: the payback would be 1e12 months
    assert e.payback_month == ec.MAX_MONTHS and e.notes["payback_month"] == "over 1,200 months"
    # break-even 1e6 / (1e-6 x 12) = 8.3e10 predictions/month: under the cap
    assert e.break_even_volume == pytest.approx(1e6 / 12e-6) and e.capped == ["payback_month"]
    far = ec.economics(value_per_prediction=1e-20, cost_per_prediction=0.0, one_off=1e6, volume_per_month=1.0,
                       horizon_months=12)
    assert far.break_even_volume == ec.MAX_VOLUME and "break_even_volume" in far.capped
    assert far.notes["break_even_volume"] == "over 1,000,000,000,000,000 predictions/month"
    long = ec.economics(value_per_prediction=1.0, cost_per_prediction=0.0, one_off=0.0, volume_per_month=1.0,
                        horizon_months=10**400)
    assert long.horizon_total == ec.MAX_MONTHS and long.capped == ["horizon_months"]


def test_amounts_too_small_to_matter_are_zero():
    e = ec.economics(value_per_prediction=2.2e-309, cost_per_prediction=0.0, one_off=1.0, volume_per_month=1000,
                     horizon_months=1)
    assert e.value_per_prediction == 0.0 and e.monthly_value == 0.0 and e.monthly_cost == 0.0
    assert e.horizon_total == -1.0 and e.break_even_volume is None and e.payback_month is None


def test_abstaining_without_an_abstain_value_is_a_clear_error():
    y, d = np.array([0, 1]), np.array([0, ec.ABSTAIN])
    with pytest.raises(ValueError, match="1 decision\\(s\\) abstained but no abstain value.*outcomes.abstain"):
        ec.expected_value(y, d, V2)
    with pytest.raises(ValueError, match="needs an abstain value"):
        ec.fit_abstain_threshold(np.array([[0.6, 0.4], [0.3, 0.7]]), y, V2, abstain=None)
    # Without an abstain value no rule abstains: the abstain rule is not even tried.
    prob = np.array([[0.51, 0.49], [0.5, 0.5], [0.2, 0.8]])
    out = ec.decision_rules((np.array([0, 1, 1]), prob), (np.array([0, 1, 1]), prob), V2, abstain=None)
    assert "value_optimal_abstain" not in out["rules"]
    assert all(r["abstain_rate_test"] == 0.0 for r in out["rules"].values())


def test_non_finite_or_negative_inputs_are_errors_that_name_the_argument():
    ok = dict(value_per_prediction=0.05, cost_per_prediction=0.01, one_off=1.0, volume_per_month=10.0,
              horizon_months=12)
    with pytest.raises(ValueError, match="cost_per_prediction must be a finite number, got nan"):
        ec.economics(**ok | {"cost_per_prediction": math.nan})
    with pytest.raises(ValueError, match="volume_per_month must not be negative"):
        ec.economics(**ok | {"volume_per_month": -1.0})
    with pytest.raises(ValueError, match="predictions_per_second must be a finite number, got inf"):
        ec.serving_cost_per_1000(0.2, math.inf)
    with pytest.raises(ValueError, match="no examples"):
        ec.bootstrap_mean(np.array([]))


# ---------------------------------------------------------------- total over every finite number

ECON_NUMBERS = ("value_per_prediction", "cost_per_prediction", "monthly_value", "monthly_cost", "monthly_net",
                "one_off", "horizon_total", "roi", "break_even_volume")
CAPPABLE = {"value_per_prediction", "cost_per_prediction", "one_off", "volume_per_month", "horizon_months",
            "net_per_prediction", "payback_month", "break_even_volume"}


def assert_finite_economics(e: ec.Economics) -> None:
    for name in ECON_NUMBERS:
        x = getattr(e, name)
        assert x is None or math.isfinite(x), (name, x)
    assert e.payback_month is None or (isinstance(e.payback_month, int) and 0 <= e.payback_month <= ec.MAX_MONTHS)
    assert e.break_even_volume is None or 0 <= e.break_even_volume <= ec.MAX_VOLUME
    assert set(e.capped) <= CAPPABLE
    for name in ("payback_month", "break_even_volume"):
        if getattr(e, name) is None or name in e.capped:
            assert e.notes[name]  # a figure that is "never" or "over N" says so in words


def econ(value, cost, one_off, volume, horizon):
    return ec.economics(value_per_prediction=value, cost_per_prediction=cost, one_off=one_off,
                        volume_per_month=volume, horizon_months=horizon)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 10), st.floats(0, 5), st.floats(0, 1e5), st.integers(1, 60))
# The draw that once failed `make test` (a subnormal value per prediction: infinite monthly value, NaN monthly cost,
# infinite break-even volume, then OverflowError in math.ceil) is tried on every run, whatever else is drawn.
@example(value=2.2e-309, cost=0.0, one_off=1.0, horizon=1)
@example(value=2.2e-309, cost=0.0, one_off=1e5, horizon=60)
@example(value=1e-20, cost=0.0, one_off=1e5, horizon=1)  # break-even beyond MAX_VOLUME: capped
@example(value=0.5, cost=0.5, one_off=10.0, horizon=12)  # parallel value and cost lines: never
def test_break_even_volume_makes_net_value_zero(value, cost, one_off, horizon):
    e = econ(value, cost, one_off, 1000, horizon)
    assert_finite_economics(e)
    tol = 1e-6 * max(1.0, one_off)
    at_cap = econ(value, cost, one_off, ec.MAX_VOLUME, horizon)
    if e.break_even_volume is None or "break_even_volume" in e.capped:
        assert at_cap.horizon_total <= tol  # no volume up to the cap pays back
        return
    at = econ(value, cost, one_off, e.break_even_volume, horizon)
    assert math.isclose(at.horizon_total, 0.0, abs_tol=tol)
    if e.break_even_volume > 0:  # and it is the least such volume
        assert econ(value, cost, one_off, e.break_even_volume / 2, horizon).horizon_total < 0


finite = st.floats(allow_nan=False, allow_infinity=False)
not_negative = st.floats(min_value=0, allow_infinity=False)
months = st.integers(0, 10**400)


@settings(max_examples=300, deadline=None)
@given(finite, finite, finite, not_negative, months)
@example(2.2e-309, 0.0, 1e5, 1000.0, 60)
@example(1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 1.7976931348623157e308, 10**400)
@example(5e-324, 0.0, 1.7976931348623157e308, 5e-324, 1)
def test_economics_is_total_over_finite_numbers(value, cost, one_off, volume, horizon):
    assert_finite_economics(econ(value, cost, one_off, volume, horizon))


@settings(max_examples=300, deadline=None)
@given(finite, finite, finite, finite, not_negative, months)
@example(5e-324, 0.0, 0.0, 1.0, 5e-324, 1)
@example(1.7976931348623157e308, -1.7976931348623157e308, 1.7976931348623157e308, 1e308, 1e308, 10**400)
def test_break_even_accuracy_is_total(correct, wrong, cost, one_off, volume, horizon):
    a = ec.break_even_accuracy(value_correct=correct, value_wrong=wrong, cost_per_prediction=cost, one_off=one_off,
                               volume_per_month=volume, horizon_months=horizon)
    assert a is None or 0.0 <= a <= 1.0


@settings(max_examples=300, deadline=None)
@given(finite, finite, finite, finite)
@example(2.2e-309, 1.0, 0.0, 0.0)
@example(1.7976931348623157e308, 1.7976931348623157e308, -1.7976931348623157e308, -1.7976931348623157e308)
def test_crossover_volume_is_total(slope_a, fixed_a, slope_b, fixed_b):
    v = ec.crossover_volume(slope_a, fixed_a, slope_b, fixed_b)
    assert v is None or 0 < v <= ec.MAX_VOLUME


@settings(max_examples=200, deadline=None)
@given(not_negative, not_negative, not_negative, not_negative)
@example(1e9, 5e-324, 1.7976931348623157e308, 1.7976931348623157e308)
def test_costs_per_1000_are_total(price, throughput, joules, kwh_price):
    if price > 0 and throughput == 0:
        return  # a clear error (test_zero_throughput_is_a_clear_error_unless_the_machine_is_free)
    assert 0 <= ec.serving_cost_per_1000(price, throughput) <= ec.MAX_AMOUNT
    assert 0 <= ec.energy_cost_per_1000(joules, kwh_price) <= ec.MAX_AMOUNT


# ---------------------------------------------------------------- total over the scenario's valid ranges

OUTCOME = st.floats(-1.5 * MAX_OUTCOME, 1.5 * MAX_OUTCOME)  # the sensitivity analysis scales values by 1.5


@st.composite
def model_probabilities(draw, classes=3, n=8):
    """Rows of a model's probabilities: zeros, subnormals and exact ties included."""
    rows = draw(st.lists(st.lists(st.floats(0, 1), min_size=classes, max_size=classes), min_size=n, max_size=n))
    prob = np.array(rows)
    sums = prob.sum(axis=1, keepdims=True)
    prob = np.where(sums > 0, prob / np.where(sums > 0, sums, 1), 1 / classes)
    y = np.array(draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)))
    return y, prob


@settings(max_examples=100, deadline=None)
@given(model_probabilities(), model_probabilities(), st.lists(OUTCOME, min_size=9, max_size=9),
       st.none() | OUTCOME)
def test_decision_rules_stay_finite_in_the_scenarios_ranges(val, test, values, abstain):
    V = np.array(values).reshape(3, 3)
    out = ec.decision_rules(val, test, V, abstain)
    assert out["chosen"] in out["rules"]
    for r in out["rules"].values():
        assert all(math.isfinite(r[k]) for k in ("val", "test", "gain_over_argmax_test"))
        assert r["threshold"] is None or 0 <= r["threshold"] <= 1 + 1e-9
        assert 0 <= r["abstain_rate_test"] <= 1
    decisions = ec.value_optimal_decisions(test[1], V)
    ev = ec.bootstrap_mean(ec.decision_values(test[0], decisions, V), resamples=20)
    assert all(math.isfinite(ev[k]) for k in ("value", "low", "high"))


@st.composite
def valid_scenarios(draw):
    """Any scenario `load_scenario` accepts, from the edges of its ranges inwards."""
    price = st.floats(0, MAX_PRICE)
    outcome = st.floats(-MAX_OUTCOME, MAX_OUTCOME)
    if draw(st.booleans()):
        outcomes = {"correct": draw(outcome), "wrong": draw(outcome)}
    else:
        outcomes = {"value_matrix": {t: {p: draw(outcome) for p in "abc"} for t in "abc"}}
    return load_scenario({
        "volume_per_month": draw(st.floats(0, MAX_SCENARIO_VOLUME, exclude_min=True)),
        "horizon_months": draw(st.integers(1, ec.MAX_MONTHS)),
        "outcomes": outcomes | {"abstain": draw(st.none() | outcome)},
        "serve": {"usd_per_hour": draw(price)}, "train": {"usd_per_hour": draw(price)},
        "energy": {"usd_per_kwh": draw(price), "kg_co2_per_kwh": draw(price)},
        "engineering": draw(st.floats(0, MAX_ONE_OFF)),
        "latency_slo_ms": draw(st.none() | st.floats(1e-3, 1e6)),
    })


def all_numbers(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from all_numbers(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from all_numbers(v)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield x


@settings(max_examples=40, deadline=None)
@given(valid_scenarios(), model_probabilities(), model_probabilities(), st.data())
def test_compare_is_finite_for_every_valid_scenario(scenario, a, b, data):
    # Measured figures, within what a machine can measure: throughput up to 1e12/s (down to subnormal), energy
    # and training up to a billion joules, seconds and kWh.
    measured = st.floats(0, 1e9)
    y = a[0]
    cands = [fake_measurement(name, y.tolist(), prob.tolist(), labels=["a", "b", "c"],
                              predictions_per_second=data.draw(st.floats(0, 1e12, exclude_min=True)),
                              joules_per_prediction=data.draw(measured), train_s=data.draw(measured),
                              train_kwh=data.draw(measured), p95_ms=data.draw(st.floats(0.01, 1e4)))
             for name, prob in (("first", a[1]), ("second", b[1]))]
    result = compare(cands, scenario, resamples=20)
    bad = [x for x in all_numbers(result) if not math.isfinite(x)]
    assert not bad
    assert "nan" not in result["recommendation"] and "inf" not in result["recommendation"]
