"""Economics on scenarios small enough to work out by hand, and properties that must hold for any numbers."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.value import economics as ec

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


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 10), st.floats(0, 5), st.floats(0, 1e5), st.integers(1, 60))
def test_break_even_volume_makes_net_value_zero(value, cost, one_off, horizon):
    e = ec.economics(value_per_prediction=value, cost_per_prediction=cost, one_off=one_off, volume_per_month=1000,
                     horizon_months=horizon)
    if e.break_even_volume is not None and e.break_even_volume > 0:
        at = ec.economics(value_per_prediction=value, cost_per_prediction=cost, one_off=one_off,
                          volume_per_month=e.break_even_volume, horizon_months=horizon)
        assert math.isclose(at.horizon_total, 0.0, abs_tol=1e-6 * max(1.0, one_off))
