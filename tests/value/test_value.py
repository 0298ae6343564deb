import json

import pytest

import modelyard
from modelyard.errors import ConfigError
from modelyard.value.compare import compare
from modelyard.value.measure import measure, repeat_until_stable
from modelyard.value.scenario import load_scenario
from tests.conftest import ROOT, run_cli, tiny_config

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
    return [measure(r.path, budget_s=3) for r in runs]


def test_measurements_are_positive_and_ordered(measured):
    for m in measured:
        lat = m["latency_ms_batch1"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert m["predictions_per_second"] > 0 and m["flops_per_example"] > 0
        assert m["size"]["bytes_on_disk"] > 0 and m["size"]["parameters"] > 0
        assert m["peak_memory_mb"]["process_rss"] > 0 and m["energy_per_prediction_j"] > 0
        assert m["machine"]["cores"] >= 1 and m["training"]["energy"]["joules"] >= 0
    cnn = measured[0]["throughput"]
    assert cnn["32"]["per_second"] >= cnn["1"]["per_second"]


def test_flops_of_a_linear_model_by_hand(measured):
    # logreg on 8x8 digits: one 64 -> 10 matrix multiply = 2 x 64 x 10 FLOPs (the counter skips the bias add)
    assert measured[1]["flops_per_example"] == 2 * 64 * 10


def test_repeat_until_stable_stops_on_a_steady_function():
    times = repeat_until_stable(lambda: sum(range(1000)), budget_s=5, min_runs=10)
    assert 20 <= len(times) < 10_000


def test_compare_recommends_and_explains(measured):
    result = compare(measured, load_scenario(SCENARIO), resamples=200)
    names = [r["name"] for r in result["candidates"]]
    assert result["recommended"] in names
    assert result["recommended"] in result["recommendation"]
    assert result["do_nothing"]["horizon_total"] == 0
    assert set(result["sensitivity"]["factors"]) == {"volume", "outcome_values", "hardware_price"}
    for r in result["candidates"]:
        ev = r["value_per_prediction"]
        assert ev["low"] <= ev["value"] <= ev["high"]


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
                   "--budget", "2")
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout
    data = json.loads((tmp_path / "v" / "value.json").read_text())
    assert len(data["candidates"]) == 2 and len(data["measurements"]) == 2
    page = (tmp_path / "v" / "value.html").read_text()
    assert data["recommendation"].split(" ")[0] in page and page.count("<img") == 3

    bad = run_cli("value", runs[0].path, "--scenario", tmp_path / "missing.yaml")
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr
    unfinished = tmp_path / "half"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("name: x\n")
    bad = run_cli("value", unfinished, "--scenario", scenario)
    assert bad.returncode == 2 and "did not finish" in bad.stderr
