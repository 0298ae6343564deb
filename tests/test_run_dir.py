"""The run directory is the contract every later capability reads; pin it down."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import modelyard
from modelyard.errors import RunError
from modelyard.runs import RUN_FORMAT, RunDir


def test_layout(digits_run):
    p = digits_run.path
    assert p.name.startswith("tiny-") and p.name.endswith("Z")
    pointer = json.loads((p / "checkpoints" / "LATEST").read_text())
    assert pointer == {"last": "last-00000040", "best": "best-00000040"}  # 20 steps an epoch, the 2nd epoch best
    for rel in ("config.yaml", "run.json", "metrics.json", "history.jsonl",
                "checkpoints/last-00000040/model.safetensors", "checkpoints/last-00000040/training_state.pt",
                "checkpoints/last-00000040/state.json", "checkpoints/best-00000040/model.safetensors",
                "model/model.safetensors", "model/modelyard.json", "predictions/test.csv", "predictions/val.csv",
                "report.html", "plots/confusion_matrix.png", "plots/learning_curves.png", "plots/roc_curves.png",
                "plots/pr_curves.png", "plots/reliability.png", "plots/per_class_f1.png"):
        assert (p / rel).is_file(), rel


def test_run_json_says_what_happened_and_which_format(digits_run):
    status = json.loads((digits_run.path / "run.json").read_text())
    assert status["format_version"] == RUN_FORMAT == 2 and status["written_by"] == f"modelyard {modelyard.__version__}"
    assert status["status"] == "completed" and status["created"] <= status["started"] <= status["finished"]
    assert "error" not in status


def test_a_run_from_another_format_loads_or_says_what_to_do(tmp_path):
    (tmp_path / "config.yaml").write_text("name: x\n")
    assert RunDir.open(tmp_path).check_format() == 1  # written before run.json had a format_version
    (tmp_path / "run.json").write_text(json.dumps({"status": "completed"}))
    assert RunDir.open(tmp_path).check_format() == 1
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 3, "written_by": "modelyard 9.0.0"}))
    with pytest.raises(RunError, match=r"written by modelyard 9.0.0 \(run format 3\); this modelyard .* reads run "
                                       r"formats 1 to 2. Upgrade modelyard"):
        RunDir.open(tmp_path)
    (tmp_path / "run.json").write_text('{"status": ')
    with pytest.raises(RunError, match="run.json is not valid JSON"):
        RunDir.open(tmp_path)


def test_metrics_json(digits_run):
    m = json.loads((digits_run.path / "metrics.json").read_text())
    assert set(m) >= {"val", "test", "train_time_s", "epochs"}
    assert m["epochs"] == 2 and m["train_time_s"] > 0
    for key in ("accuracy", "f1_macro", "roc_auc_ovr_macro", "ece", "log_loss", "confusion_matrix", "per_class"):
        assert key in m["test"]
    h = m["test"]["headline"]
    assert h["metric"] == "accuracy" and h["low"] < h["value"] <= h["high"]
    assert h["interval"] == "clopper-pearson" and h["n"] == m["test"]["n"]  # accuracy: exact binomial, no resampling


def test_config_is_saved_resolved(digits_run):
    saved = yaml.safe_load((digits_run.path / "config.yaml").read_text())
    assert saved["train"]["optimizer"] == "adamw"  # a default, written out
    assert modelyard.load_config(saved).model.hidden_sizes == [32]


def test_history_has_one_line_per_epoch(digits_run):
    rows = [json.loads(x) for x in (digits_run.path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) >= {"train_loss", "val_loss", "val_accuracy", "lr", "step"}


def test_test_predictions(digits_run):
    frame = pd.read_csv(digits_run.path / "predictions" / "test.csv")
    m = json.loads((digits_run.path / "metrics.json").read_text())
    assert len(frame) == m["test"]["n"] == 270
    probs = frame[[f"prob_{i}" for i in range(10)]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (frame["true"] == frame["predicted"]).mean() == pytest.approx(m["test"]["accuracy"])


def test_saved_model_reproduces_the_test_predictions(digits_run):
    from sklearn.datasets import load_digits

    model = modelyard.load(digits_run.path)
    frame = pd.read_csv(digits_run.path / "predictions" / "test.csv")
    images = load_digits().images[frame["id"].to_numpy()]
    prob = model.predict_proba(images)
    assert np.allclose(prob, frame[[f"prob_{i}" for i in range(10)]].to_numpy(), atol=1e-6)
    assert list(model.predict(images)) == [str(v) for v in frame["predicted"]]
    assert modelyard.load(digits_run.path / "model").labels == [str(i) for i in range(10)]


def test_report_is_self_contained(digits_run):
    html = (digits_run.path / "report.html").read_text()
    metrics, explained = html.split("What the model looks at")
    assert metrics.count("data:image/png;base64,") == 6  # learning curves, ROC, PR, confusion, per-class F1, reliability
    assert explained.count("data:image/png;base64,") >= 2  # at least one test image predicted right, one wrong
    assert "Test accuracy" in html and "95% CI" in html and "src=\"http" not in html


def test_load_errors(tmp_path):
    with pytest.raises(RunError, match="no modelyard.json"):
        modelyard.load(tmp_path)
    (tmp_path / "config.yaml").write_text("name: x\n")
    with pytest.raises(RunError, match="did not finish.*--resume"):
        modelyard.load(tmp_path)


def test_confused_pairs_rank_mistakes_and_show_examples():
    from modelyard.report.html import confused_pairs

    y = np.array([0, 0, 0, 1, 1, 2])
    prob = np.eye(3)[[1, 1, 0, 2, 1, 0]]  # 0->1 twice, 1->2 once, 2->0 once
    pairs = confused_pairs(y, prob, ["a", "b", "c"], ["t0", "t1", "t2", "t3", "t4", "t5"], top=2)
    assert pairs[0] == {"true": "a", "predicted": "b", "count": 2, "examples": ["t0", "t1"]}
    assert pairs[1]["count"] == 1 and len(pairs) == 2


def test_model_and_checkpoint_files_are_readable_as_the_umask_allows(digits_run):
    """safetensors creates its files 0600; another user (a serving account) must be able to read a model."""
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    folders = (digits_run.path / "model", digits_run.path / "checkpoints")
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o666 & ~mask for p in files}
