"""The design step under every compression method: adapters named in modelyard.json, splits.json in every run,
derived runs with their lineage, and the compress command's checks. bf16 is the method exercised here."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import modelyard
from modelyard.compress import compress
from modelyard.errors import ConfigError, DataError, RunError
from modelyard.runs import RunDir
from tests.conftest import cli_in_process, tiny_config


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return modelyard.train(tiny_config(), output=tmp_path_factory.mktemp("runs"), quiet=True).path


@pytest.fixture(scope="module")
def bf16_run(parent, tmp_path_factory):
    return compress(parent, "bf16", output=tmp_path_factory.mktemp("derived"), speed_iterations=1)


def test_a_trained_run_records_its_split_and_the_data_fingerprint(parent):
    record = RunDir(parent).splits()
    parts = {k: np.asarray(v) for k, v in record["splits"].items()}
    assert sorted(parts) == ["test", "train", "val"]
    assert sum(len(v) for v in parts.values()) == record["examples"] == 1797  # digits, every example once
    assert not set(parts["test"]) & set(parts["train"])
    assert len(record["data_sha256"]) == 64


def test_model_folder_names_its_family(parent):
    meta = json.loads((Path(parent) / "model" / "modelyard.json").read_text())
    assert meta["family"] == "torch"
    assert modelyard.load(parent).family == "torch"


def test_a_folder_without_family_is_told_apart_by_its_files(parent, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(Path(parent) / "model", copy)
    meta = json.loads((copy / "modelyard.json").read_text())
    del meta["family"]
    (copy / "modelyard.json").write_text(json.dumps(meta))
    assert modelyard.load(copy).family == "torch"
    meta["family"] = "tensorflow"
    (copy / "modelyard.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="family.*tensorflow.*Known model families"):
        modelyard.load(copy)


def test_derived_run_has_lineage_the_parents_split_and_its_own_figures(parent, bf16_run):
    rd = RunDir(bf16_run.path)
    lineage = rd.lineage()
    assert lineage["method"] == "bf16" and lineage["parent"] == str(Path(parent).resolve())
    assert rd.splits() == RunDir(parent).splits()
    assert rd.current_status() == "completed"
    m = bf16_run.metrics
    assert m["method"] == "bf16" and m["parent_figures"]["test"]["accuracy"] is not None
    assert m["bytes_on_disk"] < m["parent_figures"]["bytes_on_disk"]
    assert m["speed"]["this"]["throughput_batch32"] > 0 and m["speed"]["parent"]["latency_ms_batch1"] > 0
    assert "int8_isa" in m["speed"]["machine"]
    assert json.loads((rd.model_dir / "modelyard.json").read_text())["dtype"] == "bfloat16"
    assert (rd.predictions_dir / "test.csv").is_file() and rd.report_path.is_file()


def test_derived_run_is_scored_on_exactly_the_parents_test_examples(parent, bf16_run):
    import pandas as pd

    theirs = pd.read_csv(Path(parent) / "predictions" / "test.csv")
    mine = pd.read_csv(Path(bf16_run.path) / "predictions" / "test.csv")
    assert list(theirs["id"]) == list(mine["id"]) and list(theirs["true"]) == list(mine["true"])
    assert modelyard.evaluate(bf16_run.path)["accuracy"] == pytest.approx(bf16_run.metrics["test"]["accuracy"])
    # bf16 rounds the weights: the answers agree on nearly every example
    assert (theirs["predicted"] == mine["predicted"]).mean() > 0.95


def test_compress_leaves_the_parent_untouched(parent, tmp_path):
    before = tree_digest(Path(parent))
    compress(parent, "bf16", output=tmp_path, speed_iterations=1)
    assert tree_digest(Path(parent)) == before


def test_evaluation_refuses_data_that_changed_since_training(parent, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(parent, run)
    record = json.loads((run / "splits.json").read_text())
    record["data_sha256"] = "0" * 64
    (run / "splits.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="not the data run .* was trained on"):
        modelyard.evaluate(run)


def test_a_run_without_splits_json_re_derives_its_split(parent, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(parent, run)
    (run / "splits.json").unlink()
    assert modelyard.evaluate(run)["accuracy"] == modelyard.evaluate(parent)["accuracy"]


@pytest.mark.parametrize("args, message", [
    (["--method", "bf17"], "unknown compression method 'bf17'. Did you mean 'bf16'"),
    (["--method", "bf16", "--amount", "0.5"], "bf16 does not take --amount"),
])
def test_cli_refuses_what_it_cannot_do(capsys, parent, args, message):
    code, _, err = cli_in_process(capsys, "compress", parent, *args)
    assert code == 2 and message in err


def test_cli_refuses_a_missing_and_an_unfinished_run(capsys, parent, tmp_path):
    code, _, err = cli_in_process(capsys, "compress", tmp_path / "nope", "--method", "bf16")
    assert code == 2 and "not found" in err
    run = tmp_path / "failed"
    shutil.copytree(parent, run)
    RunDir(run).set_status(status="failed", error="RuntimeError: boom")
    code, _, err = cli_in_process(capsys, "compress", run, "--method", "bf16")
    assert code == 2 and "is failed, not completed" in err and "--resume" in err


def test_cli_prints_figures_beside_the_parents_and_the_path_last(capsys, parent, tmp_path):
    code, out, _ = cli_in_process(capsys, "compress", parent, "--method", "bf16", "--output", tmp_path,
                                  "--speed-iterations", "1")
    assert code == 0
    lines = out.strip().splitlines()
    assert any(line.startswith("test accuracy:") and "parent" in line for line in lines)
    assert any(line.startswith("batch 32 throughput:") for line in lines)
    assert RunDir(lines[-1]).lineage()["method"] == "bf16"


def test_a_method_that_does_not_apply_says_which_do(capsys, tmp_path, topics_csv):
    cfg = tiny_config(data={"source": f"csv:{topics_csv}", "text": "description", "target": "topic"})
    cfg["model"] = {"name": "tfidf-linear"}
    run = modelyard.train(cfg, output=tmp_path, quiet=True).path
    code, _, err = cli_in_process(capsys, "compress", run, "--method", "bf16")
    assert code == 2 and "bf16 does not apply" in err and "estimator model (tfidf-linear)" in err


def test_a_derived_run_without_its_model_says_to_compress_again(parent, tmp_path):
    derived = RunDir.derive(RunDir(parent), "bf16", {}, output=tmp_path)
    with pytest.raises(RunError, match=r"Make it again with `modelyard compress .* --method bf16`"):
        modelyard.load(derived.path)
