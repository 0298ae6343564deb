import json

import numpy as np
import pytest

import modelyard
from modelyard.errors import ConfigError
from modelyard.value.compare import compare
from modelyard.value.measure import measure, repeat_until_stable
from modelyard.value.scenario import load_scenario
from tests.conftest import ROOT, run_cli, tiny_config
from tests.value.fake import fake_measurement, key_paths

ITERATIONS = 20  # timed calls per speed measurement: the same work on every machine, whatever its load

SCENARIO = {"volume_per_month": 100000, "horizon_months": 12, "outcomes": {"correct": 0.01, "wrong": -0.1},
            "serve": {"usd_per_hour": 0.2}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cnn = modelyard.train(tiny_config(name="cnn", model={"name": "lenet5"}, train={"epochs": 1}), output=out,
                          quiet=True)
    logreg = modelyard.train(tiny_config(name="lr") | {"model": {"name": "logreg"}}, output=out, quiet=True)
    return cnn, logreg


@pytest.fixture(scope="module")
def measured(runs):
    return [measure(r.path, iterations=ITERATIONS) for r in runs]


def test_measurements_are_positive_and_ordered(measured):
    for m in measured:
        lat = m["latency_ms_batch1"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert m["predictions_per_second"] > 0 and m["flops_per_example"] > 0
        assert m["size"]["bytes_on_disk"] > 0 and m["size"]["parameters"] > 0
        assert m["peak_memory_mb"]["process_rss"] > 0 and m["energy_per_prediction_j"] > 0
        assert m["machine"]["cores"] >= 1 and m["training"]["energy"]["joules"] >= 0
        assert m["latency_ms_batch1"]["n"] == ITERATIONS
        assert all(t["n"] == ITERATIONS for t in m["throughput"].values())
    cnn = measured[0]["throughput"]
    assert cnn["32"]["per_second"] >= cnn["1"]["per_second"]


def test_flops_of_a_linear_model_by_hand(measured):
    # logreg on 8x8 digits: one 64 -> 10 matrix multiply = 2 x 64 x 10 FLOPs (the counter skips the bias add)
    assert measured[1]["flops_per_example"] == 2 * 64 * 10


class FakeClock:
    """Seconds that move only when a timed call says so: the stopping rule, checked without wall-clock time."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, iter(durations), 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += next(self.durations)
        self.calls += 1


def test_repeat_until_stable_stops_when_the_median_stops_moving():
    clock = FakeClock([0.001] * 10_000)
    times = repeat_until_stable(clock.work, budget_s=100, min_runs=10, clock=clock)
    # Every call takes 1 ms: the median of all equals that of the first half as soon as it is looked at, after
    # 2 x min_runs calls.
    assert len(times) == clock.calls == 20 and times == pytest.approx([0.001] * 20)


def test_repeat_until_stable_stops_at_the_budget_when_the_median_keeps_moving():
    clock = FakeClock([0.01 * k for k in range(1, 10_000)])
    times = repeat_until_stable(clock.work, budget_s=1.0, min_runs=10, clock=clock)
    # Call k takes 0.01 k s: after k calls 0.005 k (k + 1) s have passed, over the 1 s budget first at k = 14
    # (1.05 s), before the 2 x min_runs = 20 calls the stability check needs.
    assert len(times) == 14 and sum(times) == pytest.approx(1.05)


def test_repeat_until_stable_with_fixed_iterations_ignores_the_budget():
    clock = FakeClock([0.001] * 100)
    assert len(repeat_until_stable(clock.work, budget_s=0.0, iterations=7, clock=clock)) == 7 == clock.calls
    with pytest.raises(ValueError, match="at least 1"):
        repeat_until_stable(clock.work, iterations=0)


def test_compare_recommends_and_explains(measured):
    result = compare(measured, load_scenario(SCENARIO), resamples=200)
    # Each candidate's figures worked out from its own measured numbers and SCENARIO's (correct +0.01, wrong -0.1,
    # serving 0.2 USD/hour, no training price, no engineering): the value-optimal rule is argmax here, because
    # predicting class j is worth 0.11 p_j - 0.1, so a prediction is worth 0.01 if right and -0.1 if wrong.
    hand = {}
    for m in measured:
        y, prob = np.asarray(m["predictions"]["test"][0]), np.asarray(m["predictions"]["test"][1])
        right = float((prob.argmax(axis=1) == y).mean())
        value = 0.01 * right - 0.1 * (1 - right)
        cost = 0.2 / (m["predictions_per_second"] * 3600)  # per prediction; energy is free in SCENARIO
        hand[m["name"]] = {"value": value, "monthly_net": (value - cost) * 100_000,
                           "horizon_total": (value - cost) * 100_000 * 12}
    rows = {r["name"]: r for r in result["candidates"]}
    for name, h in hand.items():
        r = rows[name]
        assert r["value_per_prediction"]["value"] == pytest.approx(h["value"])
        assert r["cost_per_1000"] == pytest.approx(0.2 / (r["predictions_per_second"] * 3600) * 1000)
        assert r["monthly_net"] == pytest.approx(h["monthly_net"])
        assert r["horizon_total"] == pytest.approx(h["horizon_total"])
        assert r["one_off"]["total"] == 0.0 and r["roi"] is None
        assert r["payback_month"] == (0 if h["monthly_net"] >= 0 else None)
    best = max(hand, key=lambda n: hand[n]["horizon_total"])
    assert result["recommended"] == (best if hand[best]["horizon_total"] > 0 else None)
    assert result["recommendation"].startswith(result["recommended"] or "Do nothing")
    assert result["do_nothing"]["horizon_total"] == 0
    assert set(result["sensitivity"]["factors"]) == {"volume", "outcome_values", "hardware_price"}
    for r in result["candidates"]:
        ev = r["value_per_prediction"]
        assert ev["low"] <= ev["value"] <= ev["high"]


# A scenario worked out on paper. Two candidates on the same 20 test examples (classes a, b):
#   big:   19 right -> value (19 x 0.10 - 1 x 0.20) / 20 = 0.085 per prediction
#          1 prediction/s at 0.36 USD/hour -> 0.10 USD per 1,000; 36 J each = 0.01 kWh per 1,000 at 0.5 -> 0.005
#          cost 0.105 / 1,000 = 0.000105 per prediction; net 0.084895; monthly net at 10,000: 848.95
#          one-off: 10 h training x 3.6 = 36, 2 kWh x 0.5 = 1, engineering 2,000 -> 2,037
#          horizon: 848.95 x 12 - 2,037 = 8,150.40; ROI 8,150.4 / 2,037; payback ceil(2,037 / 848.95) = 3
#          break-even volume 2,037 / (0.084895 x 12) = 1,999.53/month
#          break-even accuracy: need 2,037 / 120,000 + 0.000105 = 0.01708 per prediction;
#          0.1 a - 0.2 (1 - a) = 0.01708 -> a = 0.21708 / 0.3 = 0.7236
#   small: 18 right -> (1.8 - 0.4) / 20 = 0.07 per prediction
#          100 predictions/s -> 0.001 per 1,000; 0.36 J -> 0.0001 kWh x 0.5 = 0.00005; cost 0.00000105 each
#          monthly net (0.07 - 0.00000105) x 10,000 = 699.9895; one-off 0.36 + 0.01 + 2,000 = 2,000.37
#          horizon: 699.9895 x 12 - 2,000.37 = 6,399.504
#   big earns 848.95 - 699.9895 = 148.96/month more, 8,150.4 - 6,399.504 = 1,750.896 more over 12 months.
#   Their horizon totals are equal at (2,037 - 2,000.37) / ((0.084895 - 0.06999895) x 12) = 204.92/month.
HAND = {"volume_per_month": 10_000, "horizon_months": 12, "outcomes": {"correct": 0.10, "wrong": -0.20},
        "serve": {"usd_per_hour": 0.36}, "train": {"usd_per_hour": 3.6}, "energy": {"usd_per_kwh": 0.5},
        "engineering": 2000}
HAND_Y = [0] * 10 + [1] * 10


def hand_candidates() -> list[dict]:
    def answers(wrong: int) -> list[list[float]]:
        right = [[0.9, 0.1] if t == 0 else [0.2, 0.8] for t in HAND_Y]
        return [p[::-1] if i < wrong else p for i, p in enumerate(right)]  # the first `wrong` answers flipped

    return [fake_measurement("big", HAND_Y, answers(1), labels=["a", "b"], predictions_per_second=1.0,
                             joules_per_prediction=36.0, train_s=36_000, train_kwh=2.0),
            fake_measurement("small", HAND_Y, answers(2), labels=["a", "b"], predictions_per_second=100.0,
                             joules_per_prediction=0.36, train_s=360, train_kwh=0.02)]


def test_a_scenario_worked_out_by_hand():
    result = compare(hand_candidates(), load_scenario(HAND), resamples=0)
    big, small = result["candidates"]
    assert big["value_per_prediction"]["value"] == pytest.approx(0.085)
    assert big["serve_cost_per_1000"] == pytest.approx(0.10) and big["energy_cost_per_1000"] == pytest.approx(0.005)
    assert big["one_off"] == pytest.approx({"training_hardware": 36.0, "training_energy": 1.0, "engineering": 2000.0,
                                           "total": 2037.0})
    assert big["monthly_net"] == pytest.approx(848.95)
    assert big["horizon_total"] == pytest.approx(8150.40)
    assert big["roi"] == pytest.approx(8150.4 / 2037)
    assert big["payback_month"] == 3
    assert big["break_even_volume"] == pytest.approx(2037 / (0.084895 * 12))
    assert big["break_even_accuracy"] == pytest.approx(0.21708 / 0.3)
    assert small["value_per_prediction"]["value"] == pytest.approx(0.07)
    assert small["cost_per_1000"] == pytest.approx(0.00105)
    assert small["one_off"]["total"] == pytest.approx(2000.37)
    assert small["monthly_net"] == pytest.approx(699.9895)
    assert small["horizon_total"] == pytest.approx(6399.504)
    assert result["recommended"] == "big"
    text = result["recommendation"]
    assert text.startswith("big earns 149 USD/month more than small")  # 148.96, rounded to whole USD
    assert "1,751 USD more over 12 months" in text and "below 205 predictions/month small is better" in text
    assert result["do_nothing"]["horizon_total"] == 0
    assert not big["dominated_value_cost"] and not small["dominated_value_cost"]  # big earns more, small costs less


def test_below_the_crossover_the_cheaper_candidate_is_recommended():
    # Without engineering the one-offs are 37 and 0.37; at 150 predictions/month (below the 204.92 crossover):
    #   big   0.084895 x 150 x 12 - 37 = 115.811; small 0.06999895 x 150 x 12 - 0.37 = 125.628
    result = compare(hand_candidates(), load_scenario(HAND | {"engineering": 0, "volume_per_month": 150}),
                     resamples=0)
    big, small = result["candidates"]
    assert big["horizon_total"] == pytest.approx(115.811) and small["horizon_total"] == pytest.approx(125.62811)
    assert result["recommended"] == "small"
    assert "above 205 predictions/month big is better" in result["recommendation"]


def test_the_hand_made_measurement_has_the_shape_of_a_real_one(measured):
    # compare() reads only keys that measure() writes, so the hand-worked scenario checks the real code path.
    fake = key_paths(hand_candidates()[0])
    assert fake <= key_paths(measured[1]), fake - key_paths(measured[1])


def test_a_model_that_loses_money_leads_to_do_nothing(measured):
    losing = SCENARIO | {"outcomes": {"correct": 0.0, "wrong": -1.0}}
    result = compare(measured, load_scenario(losing), resamples=0)
    assert result["recommended"] is None and result["recommendation"].startswith("Do nothing")
    assert all(r["dominated_value_cost"] for r in result["candidates"])  # doing nothing beats them


def test_latency_slo_excludes_a_candidate(measured):
    result = compare(measured, load_scenario(SCENARIO | {"latency_slo_ms": 1e-6}), resamples=0)
    assert not any(r["meets_slo"] for r in result["candidates"]) and result["recommended"] is None


def test_runs_of_different_label_sets_cannot_be_compared(measured):
    other = dict(measured[1], labels=["a", "b"], name="other")
    with pytest.raises(ConfigError, match="different label sets"):
        compare([measured[0], other], load_scenario(SCENARIO))


@pytest.mark.parametrize("change, message", [
    ({"outcomes": {"correct": 1.0}}, "give both correct and wrong"),
    ({"outcomes": {"correct": 1.0, "wrong": -1.0, "tp": 1.0}}, "exactly one of"),
    ({"volume_per_month": -5}, "volume_per_month.*greater than 0"),
    ({"serve": {"usd_per_hr": 1}}, "serve.usd_per_hr.*unknown key; did you mean 'serve.usd_per_hour'"),
    # The valid ranges, inside which every figure of the comparison is finite (tests/value/test_economics.py)
    ({"volume_per_month": float("inf")}, "volume_per_month: Input should be a finite number"),
    ({"volume_per_month": 1e15}, "volume_per_month: Input should be less than or equal to 100000000000000"),
    ({"horizon_months": 1201}, "horizon_months: Input should be less than or equal to 1200"),
    ({"outcomes": {"correct": 1.0, "wrong": -1.0, "abstain": float("nan")}}, "outcomes.abstain: .*finite number"),
    ({"outcomes": {"value_matrix": {"a": {"a": 1e10}}}}, "outcomes.value_matrix.a.a: .*less than or equal to 1000000000 "),
    ({"serve": {"usd_per_hour": -0.1}}, "serve.usd_per_hour: Input should be greater than or equal to 0"),
    ({"engineering": {"lenet": -1}}, "engineering: .*cost \\(for lenet\\) must be a number from 0 to"),
])
def test_bad_scenarios_say_what_and_where(change, message):
    with pytest.raises(ConfigError, match=message):
        load_scenario(SCENARIO | change)


def test_value_matrix_and_two_class_outcomes_fit_the_labels():
    s = load_scenario(SCENARIO | {"outcomes": {"value_matrix": {"a": {"a": 1, "b": -1}, "b": {"a": -2}}}})
    with pytest.raises(ConfigError, match="missing b->b"):
        s.outcomes.matrix(["a", "b"])
    s = load_scenario(SCENARIO | {"outcomes": {"tp": 5, "fp": -1, "tn": 0, "fn": -3, "positive": "fraud"}})
    assert s.outcomes.matrix(["fraud", "ok"]).tolist() == [[5, -3], [-1, 0]]
    with pytest.raises(ConfigError, match="for two classes"):
        s.outcomes.matrix(["a", "b", "c"])


def test_example_scenarios_are_valid():
    for path in sorted((ROOT / "examples").glob("value-*.yaml")):
        assert load_scenario(path).volume_per_month > 0


def test_cli_value_end_to_end(runs, tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(json.dumps(SCENARIO))
    proc = run_cli("value", *(r.path for r in runs), "--scenario", scenario, "--output", tmp_path / "v",
                   "--iterations", "5")
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout
    data = json.loads((tmp_path / "v" / "value.json").read_text())
    assert len(data["candidates"]) == 2 and len(data["measurements"]) == 2
    assert all(m["latency_ms_batch1"]["n"] == 5 for m in data["measurements"])
    page = (tmp_path / "v" / "value.html").read_text()
    assert data["recommendation"].split(" ")[0] in page and page.count("<img") == 3

    bad = run_cli("value", runs[0].path, "--scenario", tmp_path / "missing.yaml")
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr
    unfinished = tmp_path / "half"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("name: x\n")
    bad = run_cli("value", unfinished, "--scenario", scenario)
    assert bad.returncode == 2 and "did not finish" in bad.stderr


# The paired bootstrap of the recommendation, by hand. In hand_candidates() both models get example 0 wrong and
# small gets example 1 wrong too: per example, big minus small is 0.1 - (-0.2) = 0.3 on example 1 and 0 elsewhere,
# a mean of 0.015. A resample of the 20 examples draws example 1 k ~ Binomial(20, 1/20) times, so its mean is
# 0.015 k: P(k = 0) = 0.358 puts the 2.5% quantile at 0, and P(k <= 2) = 0.925 < 0.975 < P(k <= 3) = 0.984 puts
# the 97.5% quantile at 0.045. Over 10,000 predictions x 12 months that is [0 - 0.015, 0.045 - 0.015] x 120,000
# = [-1,800, 3,600] about the point difference 1,750.896: [-49.104, 5,350.896], which holds zero.
def test_the_recommendation_says_when_the_test_set_does_not_separate_the_best_from_the_next():
    result = compare(hand_candidates(), load_scenario(HAND), resamples=1000)
    sep = result["separation"]
    assert sep["against"] == "small" and sep["n"] == 20 and sep["separated"] is False
    assert sep["difference"] == pytest.approx(1750.896)
    assert sep["value_per_prediction_difference"]["value"] == pytest.approx(0.015)
    assert (sep["low"], sep["high"]) == (pytest.approx(-49.104), pytest.approx(5350.896))
    assert result["recommendation"].startswith("big earns 149 USD/month more than small")
    assert ("big and small are not separated: the difference in net value over 12 months, 1,751 USD, is within its "
            "95% interval [-49.10 USD, 5,351 USD] (paired bootstrap over the same 20 test examples)"
            in result["recommendation"])


def test_a_clearly_better_candidate_is_separated_from_the_next():
    # 40 examples; "sure" is right on all, "unsure" wrong on the last 10: big minus small is 0.3 on those 10.
    # A resample's mean is 0.3 x (share of them drawn), about 0.075 +- 1.96 x 0.3 x sqrt(0.25 x 0.75 / 40)
    # = [0.034, 0.116]: above zero, so the difference over the horizon is too.
    y = [0] * 20 + [1] * 20
    right = [[0.9, 0.1] if t == 0 else [0.2, 0.8] for t in y]
    unsure = right[:30] + [p[::-1] for p in right[30:]]
    cands = [fake_measurement("sure", y, right, labels=["a", "b"], predictions_per_second=100.0,
                              joules_per_prediction=0.0, train_s=0, train_kwh=0.0),
             fake_measurement("unsure", y, unsure, labels=["a", "b"], predictions_per_second=100.0,
                              joules_per_prediction=0.0, train_s=0, train_kwh=0.0)]
    result = compare(cands, load_scenario(HAND | {"engineering": 0}), resamples=1000)
    sep = result["separation"]
    assert result["recommended"] == "sure" and sep["separated"] is True and 0 < sep["low"] < sep["difference"]
    diff = sep["value_per_prediction_difference"]
    assert diff["value"] == pytest.approx(0.075) and 0.02 < diff["low"] < 0.05 and 0.10 < diff["high"] < 0.13
    assert "The test set separates sure from unsure" in result["recommendation"]


def test_the_same_decisions_everywhere_leave_only_the_cost_to_tell_apart():
    fast, slow = hand_candidates()[0], dict(hand_candidates()[0], name="slow", predictions_per_second=0.5)
    result = compare([slow, fast], load_scenario(HAND), resamples=200)
    assert result["recommended"] == "big" and result["separation"]["separated"] is None
    assert "are worth the same on each of the 20 test examples, so only their measured costs" in \
        result["recommendation"]


def test_the_ranking_puts_losers_below_doing_nothing_and_slo_breakers_last():
    big, small = hand_candidates()
    loser = dict(small, name="loser", predictions=big["predictions"] | {
        "test": [HAND_Y, [[0.1, 0.9] if t == 0 else [0.8, 0.2] for t in HAND_Y]]})  # wrong on every test example
    slow = dict(big, name="slow", latency_ms_batch1={"p50": 50.0, "p95": 100.0, "p99": 100.0})
    result = compare([loser, slow, small, big], load_scenario(HAND | {"latency_slo_ms": 10}), resamples=100)
    assert result["ranking"] == ["big", "small", "do nothing", "loser", "slow"]
    assert [r["rank"] for r in result["candidates"]] == [4, 5, 2, 1]
    for r in result["candidates"]:
        ev, ci = r["value_per_prediction"], r["monthly_net_interval"]
        assert ci["low"] == pytest.approx(r["monthly_net"] + (ev["low"] - ev["value"]) * 10_000)
        assert ci["low"] <= r["monthly_net"] <= ci["high"]


def test_two_runs_of_one_experiment_are_named_by_their_run_folders():
    a, b = hand_candidates()
    a = dict(a, name="tiny", run="runs/tiny-20260101T000000Z")
    b = dict(b, name="tiny", run="runs/tiny-20260102T000000Z")
    result = compare([a, b], load_scenario(HAND), resamples=0)
    assert [r["name"] for r in result["candidates"]] == ["tiny-20260101T000000Z", "tiny-20260102T000000Z"]
    assert [r["name"] for r in compare([a, a], load_scenario(HAND), resamples=0)["candidates"]] == [
        "tiny-20260101T000000Z", "tiny-20260101T000000Z #2"]


def _run(folder, name: str, metrics: dict, lineage: dict | None = None):
    """A run directory holding just what `making_of` reads: run.json (its lineage) and metrics.json."""
    from modelyard.runs import RunDir

    path = folder / name
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"format_version": 2, **({"lineage": lineage} if lineage else {})}))
    (path / "metrics.json").write_text(json.dumps(metrics))
    return RunDir(path)


def test_a_derived_runs_making_counts_every_step_back_to_the_training(tmp_path):
    from modelyard.value.measure import making_of

    trained = _run(tmp_path, "big-1", {"train_time_s": 100.0, "processes": 2, "energy": {"kwh": 0.5}})
    pruned = _run(tmp_path, "big-prune-1", {"train_time_s": 30.0, "processes": 1, "energy": {"kwh": 0.1},
                                            "epochs": 1},
                  {"parent": "/moved/away/big-1", "parent_name": "big-1", "method": "prune"})  # found beside it
    onnx_metrics = {"compress_time_s": 4.0, "train_time_s": 30.0}  # write_derived copies the parent's train time
    onnx = _run(tmp_path, "big-prune-onnx-1", onnx_metrics,
                {"parent": str(pruned.path), "parent_name": "big-prune-1", "method": "onnx"})
    made = making_of(onnx, onnx_metrics)
    # 100 s x 2 processes of training, 30 s of recovery fine-tune, 4 s of export; energy 0.5 + 0.1 kWh
    assert made["time_s"] == pytest.approx(234.0) and made["processes"] == 1
    assert made["energy"]["kwh"] == pytest.approx(0.6)
    assert made["basis"] == ("training big-1 (train_time_s, 200.0 s) + prune (its own train_time_s, 30.0 s) + "
                             "onnx (compress_time_s, 4.0 s)")
    orphan = _run(tmp_path, "lost-bf16-1", {"compress_time_s": 1.0},
                  {"parent": "/nowhere/lost-1", "parent_name": "lost-1", "method": "bf16"})
    made = making_of(orphan, {"compress_time_s": 1.0})
    assert made["time_s"] == 1.0 and "run not found here, not counted" in made["basis"]


def test_a_derived_candidate_pays_its_experiments_engineering_unless_the_scenario_names_it():
    from modelyard.value.compare import candidate_row

    scenario = load_scenario({**HAND, "engineering": {"big": 2000, "big-int8": 500}})
    big, _ = hand_candidates()
    derived = {**big, "name": "big-onnx", "experiment": "big", "lineage": {"method": "onnx"}}
    V = scenario.outcomes.matrix(["a", "b"])
    assert candidate_row(derived, scenario, V, resamples=0)["one_off"]["engineering"] == 2000.0
    named = {**derived, "name": "big-int8"}
    assert candidate_row(named, scenario, V, resamples=0)["one_off"]["engineering"] == 500.0
    trained = {**big, "name": "other", "experiment": "big"}  # not derived: only its own name counts
    assert candidate_row(trained, scenario, V, resamples=0)["one_off"]["engineering"] == 0.0
