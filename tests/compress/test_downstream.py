"""Everything downstream of `modelyard compress` takes a derived run as it takes a trained one: load, evaluate,
predict, the report (with its lineage), `runs list`, `modelyard report` and `modelyard value`."""

import html
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import modelyard
from modelyard.report.render import layout_problems
from tests.conftest import cli_in_process as cli
from tests.conftest import tiny_config

SCENARIO = {"volume_per_month": 100000, "horizon_months": 12, "outcomes": {"correct": 0.01, "wrong": -0.1},
            "serve": {"usd_per_hour": 0.2}, "train": {"usd_per_hour": 3.6}}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A tiny digits run and its bf16 derived run, side by side in one runs folder."""
    from modelyard.compress import compress

    folder = tmp_path_factory.mktemp("runs")
    parent = modelyard.train(tiny_config(), output=folder, quiet=True)
    derived = compress(parent.path, "bf16", speed_iterations=2)
    return parent, derived


def test_load_evaluate_and_predict_take_a_derived_run(pair, tmp_path, capsys):
    _, derived = pair
    metrics = json.loads((derived.path / "metrics.json").read_text())
    assert modelyard.evaluate(derived.path)["accuracy"] == metrics["test"]["accuracy"]
    code, out, _ = cli(capsys, "evaluate", derived.path, "--output", tmp_path / "e.json")
    assert code == 0 and re.search(rf"accuracy\s+{metrics['test']['accuracy']:.4f}", out), out
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == metrics["test"]["accuracy"]

    from sklearn.datasets import load_digits

    model = modelyard.load(derived.path)
    frame = pd.read_csv(derived.path / "predictions" / "test.csv")
    prob = model.predict_proba(load_digits().images[frame["id"].to_numpy()])
    assert np.allclose(prob, frame[[f"prob_{i}" for i in range(10)]].to_numpy(), atol=1e-6)

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(load_digits().images[i].astype(np.uint8) * 16, mode="L").save(images / f"{i}.png")
    code, out, _ = cli(capsys, "predict", derived.path, images, "--json")
    printed = pd.DataFrame(json.loads(out))
    assert code == 0 and len(printed) == 3
    expected = model.predict_frame(str(images))
    assert printed["predicted"].astype(str).tolist() == expected["predicted"].astype(str).tolist()


def test_the_report_shows_the_lineage_and_claims_no_training(pair):
    parent, derived = pair
    page = (derived.path / "report.html").read_text()
    metrics = json.loads((derived.path / "metrics.json").read_text())
    assert layout_problems(page) == []
    link = re.search(r'Made from <a href="([^"]+)">([^<]+)</a> by <b>bf16</b>', page)
    assert link and link.group(2) == parent.path.name
    assert (derived.path / link.group(1)).resolve() == (parent.path / "report.html").resolve()  # relative, and right
    assert "parameters: defaults" in page and html.escape(metrics["notes"][0]) in page
    assert "Not trained: made from its parent by bf16" in page
    assert "scikit-learn" not in page and "Learning curves" not in page and "optimiser steps" not in page
    ratio = metrics["speed"]["ratio"]["throughput_batch32"]
    row = re.search(r"<tr><td>throughput, batch 32 \(examples/s\)</td><td>([\d,]+)</td><td>([\d,]+)</td>"
                    r"<td>([^<]+)</td></tr>", page)
    assert row and row.group(1) == f"{metrics['speed']['parent']['throughput_batch32']:,.0f}"
    words = "the same" if abs(ratio - 1) < 0.005 else "faster" if ratio > 1 else "slower"
    assert words in row.group(3)
    assert f"<td>test accuracy</td><td>{metrics['parent_figures']['test']['accuracy']:.4f}</td>" in page
    assert "points</td>" in page and "size on disk" in page and "cores, torch" in page  # the machine


def test_modelyard_report_writes_the_page_anew_for_a_derived_and_a_trained_run(pair, capsys, tmp_path):
    for run in pair:
        copy = tmp_path / run.path.name
        shutil.copytree(run.path, copy)
        before = (copy / "report.html").read_text()
        (copy / "report.html").unlink()
        shutil.rmtree(copy / "plots")
        code, out, err = cli(capsys, "report", copy)
        assert code == 0, err
        assert out.strip() == str(copy / "report.html")
        after = (copy / "report.html").read_text()
        assert layout_problems(after) == [] and after.count("<img") == before.count("<img") > 0
        assert ("Where does this model come from?" in after) == ("Where does this model come from?" in before)
        assert ("Learning curves" in after) == (run is pair[0])  # only the trained run has a history
    code, _, err = cli(capsys, "report", tmp_path / "nope")
    assert code == 2 and "not found" in err


def test_runs_list_names_the_parent_and_the_method(pair, capsys):
    parent, derived = pair
    code, out, _ = cli(capsys, "runs", "list", parent.path.parent, "--json")
    rows = {r["run"]: r for r in json.loads(out)}
    assert code == 0
    assert (rows[derived.path.name]["parent"], rows[derived.path.name]["method"]) == (parent.path.name, "bf16")
    assert rows[parent.path.name]["parent"] is None and rows[parent.path.name]["method"] is None
    code, out, _ = cli(capsys, "runs", "list", parent.path.parent)
    assert code == 0 and "made from" in out and f"<- {parent.path.name} (bf16)" in out


def test_value_ranks_a_run_and_its_derived_run_apart(pair, tmp_path, capsys, monkeypatch):
    from modelyard.value import measure as measuring

    monkeypatch.setattr(measuring, "measure_isolated", measuring.measure)  # seconds saved: no Python per run
    parent, derived = pair
    scenario = tmp_path / "s.yaml"
    scenario.write_text(json.dumps(SCENARIO))
    code, out, err = cli(capsys, "value", parent.path, derived.path, "--scenario", scenario, "--output",
                         tmp_path / "v", "--iterations", "3")
    assert code == 0, err
    data = json.loads((tmp_path / "v" / "value.json").read_text())
    rows = {r["name"]: r for r in data["candidates"]}
    assert set(rows) == {"tiny", "tiny-bf16"}  # not both "tiny": the derived run has its own name
    assert sorted(data["ranking"]) == ["do nothing", "tiny", "tiny-bf16"]
    assert rows["tiny-bf16"]["lineage"]["method"] == "bf16" and rows["tiny"]["lineage"] is None

    # one-off: the parent's training plus the compression, priced at the scenario's 3.6 USD/hour
    parent_m = json.loads((parent.path / "metrics.json").read_text())
    derived_m = json.loads((derived.path / "metrics.json").read_text())
    seconds = parent_m["train_time_s"] * parent_m["processes"] + derived_m["compress_time_s"]
    assert rows["tiny-bf16"]["one_off"]["training_hardware"] == pytest.approx(seconds / 3600 * 3.6)
    assert rows["tiny"]["one_off"]["training_hardware"] == pytest.approx(parent_m["train_time_s"] / 3600 * 3.6)
    basis = rows["tiny-bf16"]["one_off_basis"]
    assert basis.startswith(f"training {parent.path.name} (train_time_s") and "+ bf16 (compress_time_s" in basis

    # the interval of each net per month holds its point, and the recommendation is weighed against the next one
    for r in rows.values():
        ci = r["monthly_net_interval"]
        assert ci["low"] <= r["monthly_net"] <= ci["high"]
    sep = data["separation"]
    first = data["ranking"][0]
    assert data["recommended"] == first and sep["against"] == data["ranking"][1]
    assert sep["low"] <= sep["difference"] <= sep["high"] and sep["n"] == parent_m["test"]["n"]

    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    assert "net/month" in lines[header] and "95% CI" in lines[header] and "cost/1,000" in lines[header]
    ranked = [line.split()[1] for line in lines[header + 1:header + 4]]
    assert ranked == [n.split()[0] for n in data["ranking"]]
    assert f"bf16 of {parent.path.name}" in out and data["recommendation"] in out
    page = (tmp_path / "v" / "value.html").read_text()
    assert "How do the candidates rank?" in page and f"bf16 of {parent.path.name}" in page
    assert layout_problems(page) == []


def test_a_derived_run_that_trained_shows_its_lineage_and_its_own_training(pair, tmp_path):
    """prune's recovery fine-tune goes through the normal trainer, which writes the report before the run has a
    lineage: the page is written again once it has one. Its one-off counts its own training, not a compression."""
    from modelyard.compress import compress
    from modelyard.runs import RunDir
    from modelyard.value.measure import making_of

    parent, _ = pair
    run = compress(parent.path, "prune", output=tmp_path, recover_epochs=1, speed_iterations=2)
    page = (run.path / "report.html").read_text()
    assert "Where does this model come from?" in page and "by <b>prune</b>" in page
    assert "Trained 1 epochs" in page and "Learning curves" in page and "Not trained" not in page
    metrics = json.loads((run.path / "metrics.json").read_text())
    made = making_of(RunDir(run.path), metrics)
    parent_m = json.loads((parent.path / "metrics.json").read_text())
    assert made["time_s"] == pytest.approx(parent_m["train_time_s"] + metrics["train_time_s"])
    assert "prune (its own train_time_s" in made["basis"]


def test_a_derived_run_of_a_derived_run_is_priced_as_its_trained_ancestors_experiment(tmp_path):
    from modelyard.compress import compress
    from modelyard.runs import RunDir
    from modelyard.value.measure import root_experiment

    parent = modelyard.train(tiny_config(name="root"), output=tmp_path, quiet=True).path
    child = compress(parent, "bf16", output=tmp_path, speed_iterations=1).path
    RunDir(child).config_path.write_text(RunDir(child).config_path.read_text().replace("name: root", "name: child"))
    grandchild = compress(child, "bf16", output=tmp_path, speed_iterations=1).path
    assert RunDir(grandchild).config().name == "child"  # its config is its parent's, as for a trained method
    assert root_experiment(RunDir(grandchild), "child") == "root"
    assert root_experiment(RunDir(parent), "root") == "root"
