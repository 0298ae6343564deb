"""The CLI end to end on tiny data: what a user types, what they see, what is written."""

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import modelyard

from tests.conftest import run_cli


def write_cfg(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_train_image_folder_then_predict_a_folder(tmp_path, shapes_dir):
    cfg = write_cfg(tmp_path, f"name: shapes\ndata:\n  source: imagefolder:{shapes_dir}\n"
                              "model:\n  name: cifar-cnn\n  channels: [8, 16]\n  hidden_sizes: [16]\n"
                              "train:\n  epochs: 2\n  batch_size: 8\nevaluate:\n  bootstrap: 10\n")
    out = run_cli("train", cfg, "--output", tmp_path / "runs", check=True)
    lines = out.stdout.strip().splitlines()
    run_dir = lines[-1]
    assert lines[-2] == f"report: {run_dir}/report.html" and lines[-3].startswith("test accuracy: ")
    preds = tmp_path / "new-folder" / "preds.csv"
    run_cli("predict", run_dir, shapes_dir / "circle", "--output", preds, check=True)
    frame = pd.read_csv(preds)
    assert len(frame) == 12 and set(frame.columns) >= {"id", "predicted", "confidence", "prob_circle", "prob_square"}
    one = run_cli("predict", run_dir, shapes_dir / "square" / "000.png", check=True).stdout
    assert one.splitlines()[0].startswith("id,predicted") and "000.png" in one


def test_train_table_then_evaluate_and_predict_a_csv(tmp_path, wine_csv):
    cfg = write_cfg(tmp_path, f"name: wine\ndata:\n  source: csv:{wine_csv}\n  target: cultivar\n"
                              "model:\n  name: mlp\n  hidden_sizes: [16]\ntrain:\n  epochs: 5\n  batch_size: 16\n")
    run_dir = run_cli("train", cfg, "--output", tmp_path / "runs", check=True).stdout.strip().splitlines()[-1]
    evaluated = run_cli("evaluate", run_dir, check=True)
    table = evaluated.stdout.splitlines()
    assert table[1].split() == ["metric", "value", "interval"] and table[2].split()[0] == "accuracy"
    report = json.loads(run_cli("evaluate", run_dir, "--json", check=True).stdout)
    saved = json.loads(open(f"{run_dir}/metrics.json").read())
    assert report["accuracy"] == saved["test"]["accuracy"] and report["split"] == "test"
    assert {f.name.split("-")[0] for f in (Path(run_dir) / "evaluations").iterdir()} == {"test"}
    assert float(table[2].split()[1]) == pytest.approx(saved["test"]["accuracy"], abs=5e-5)
    whole = json.loads(run_cli("evaluate", run_dir, "--data", f"csv:{wine_csv}", "--output", tmp_path / "m.json",
                               "--json", check=True).stdout)
    assert whole["n"] == 178 and json.loads((tmp_path / "m.json").read_text())["n"] == 178
    rows = pd.read_csv(wine_csv).drop(columns=["cultivar"]).head(5)
    rows.to_csv(tmp_path / "new.csv", index=False)
    out = pd.read_csv(io.StringIO(run_cli("predict", run_dir, tmp_path / "new.csv", check=True).stdout))
    expected = modelyard.load(run_dir).predict_proba(rows)
    prob = out[[c for c in out.columns if c.startswith("prob_")]].to_numpy()
    assert len(out) == 5 and np.allclose(prob, expected, atol=5e-5)  # printed to 4 digits
    assert list(out["predicted"].astype(str)) == list(modelyard.load(run_dir).predict(rows).astype(str))
    full = json.loads(run_cli("predict", run_dir, tmp_path / "new.csv", "--json", check=True).stdout)
    assert np.allclose([[r[c] for c in out.columns if c.startswith("prob_")] for r in full], expected, atol=1e-6)


def test_text_classification_end_to_end(tmp_path):
    import numpy as np

    import modelyard
    from modelyard.data.synthetic import write_text_csv

    data = write_text_csv(tmp_path / "texts.csv", per_class=20)
    cfg = write_cfg(tmp_path, f"name: topics\ndata:\n  source: csv:{data}\n  text: description\n  target: topic\n"
                              "  tokenizer: {kind: bpe, vocab_size: 120, max_length: 16}\n"
                              "model:\n  name: text-transformer\n  d_model: 32\n  n_heads: 2\n  n_layers: 1\n"
                              "train:\n  epochs: 12\n  batch_size: 8\n  lr: 0.003\nevaluate:\n  bootstrap: 10\n")
    run_dir = run_cli("train", cfg, "--output", tmp_path / "runs", check=True).stdout.strip().splitlines()[-1]
    saved = json.loads(open(f"{run_dir}/metrics.json").read())
    assert saved["test"]["accuracy"] > 0.6  # three topics: chance is a third
    (tmp_path / "new.txt").write_text("garlic and onion in the oven\n\nrouter firewall and dns\n")
    out = run_cli("predict", run_dir, tmp_path / "new.txt", check=True).stdout.splitlines()
    assert out[0].startswith("id,predicted") and [row.split(",")[0] for row in out[1:]] == ["1", "3"]
    csv_out = run_cli("predict", run_dir, data, check=True).stdout.strip().splitlines()
    assert len(csv_out) == 61
    assert json.loads(run_cli("evaluate", run_dir, "--json", check=True).stdout)["accuracy"] == saved["test"]["accuracy"]
    report = open(f"{run_dir}/report.html").read()
    assert ("Most confused classes" in report) == (saved["test"]["accuracy"] < 1.0)
    # reloaded, the model gives the probabilities it saved for the test split
    frame = pd.read_csv(f"{run_dir}/predictions/test.csv")
    texts = pd.read_csv(data)["description"].to_numpy()[frame["id"].to_numpy() - 2]  # id = CSV line number
    prob = modelyard.load(run_dir).predict_proba(list(texts))
    assert np.allclose(prob, frame[["prob_garden", "prob_kitchen", "prob_network"]].to_numpy(), atol=1e-6)


def test_user_errors_exit_2_without_traceback(tmp_path, wine_csv, digits_run, capsys):
    # In-process through the entry point (tests/test_bad_inputs.py holds the full table and the subprocess cases).
    from modelyard.cli import main

    cases = [
        (["train", tmp_path / "missing.yaml"], "not found"),
        (["train", write_cfg(tmp_path, "name: x\ndata:\n  source: csv:nope.csv\n  target: y\nmodel:\n  name: mlp\n",
                              "nocsv.yaml")],
         "not found"),
        (["train", write_cfg(tmp_path, "name: x\ndata:\n  source: builtin:digits\nmodel:\n  name: mlp\n"),
          "--set", "train.epochz=3"], "did you mean 'train.epochs'"),
        (["evaluate", digits_run.path, "--data", f"csv:{wine_csv}"], "holds tabular or text data but the model reads image"),
        (["predict", digits_run.path, tmp_path / "nothing-here"], "not found"),
        (["evaluate", tmp_path], "not a run directory"),
        (["train", write_cfg(tmp_path, "name: x\ndata:\n  source: builtin:digits\nmodel:\n  name: mlp\n", "ok.yaml"),
          "--output", "/proc/modelyard-runs"], "pass a writable --output folder"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in args])
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)


@pytest.mark.parametrize("every_steps, says", [
    (2, "continue with `modelyard train --resume {run}`"),  # a checkpoint at step 2, Ctrl-C at step 3
    ("null", "{run} has no checkpoint yet: train the experiment anew"),  # Ctrl-C before the first (time-based) save
])
def test_ctrl_c_in_train_says_how_to_go_on(tmp_path, capsys, monkeypatch, every_steps, says):
    # click turns a KeyboardInterrupt into Abort; the user must still read what train said, not just "aborted"
    from modelyard.cli import main
    from modelyard.training import callbacks

    class CtrlC(callbacks.EnergyCallback):
        def on_step_end(self, loop):
            super().on_step_end(loop)
            if loop.state.step == 3:
                raise KeyboardInterrupt  # a second Ctrl-C: stops at once, whatever was saved is kept

    monkeypatch.setattr(callbacks, "EnergyCallback", CtrlC)
    cfg = write_cfg(tmp_path, "name: x\ndata:\n  source: builtin:digits\nmodel:\n  name: mlp\n  hidden_sizes: [8]\n"
                              "train:\n  epochs: 1\n  batch_size: 128\n")
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(cfg), "--output", str(tmp_path / "runs"), "--set", f"train.checkpoint_every_steps={every_steps}"])
    (run,) = (tmp_path / "runs").iterdir()
    err = capsys.readouterr().err
    assert exit_.value.code == 130, err
    assert says.format(run=run) in err and "aborted" not in err and "Traceback" not in err, err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_predict_json_keeps_every_digit_and_refuses_output(tmp_path, digits_run, capsys):
    from modelyard.cli import main

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L").save(tmp_path / f"{i}.png")
    main(["predict", str(digits_run.path), str(tmp_path), "--json"])
    printed = pd.DataFrame(json.loads(capsys.readouterr().out))
    expected = modelyard.load(digits_run.path).predict_frame(str(tmp_path))
    prob = [c for c in expected.columns if c.startswith("prob_")]
    assert printed[prob].to_numpy().tolist() == expected[prob].to_numpy().tolist()  # exact, not to 10 decimals
    with pytest.raises(SystemExit) as exit_:  # --output was silently ignored with --json
        main(["predict", str(digits_run.path), str(tmp_path), "--json", "--output", str(tmp_path / "p.csv")])
    assert exit_.value.code == 2 and "pass one of them" in capsys.readouterr().err


def test_predict_rejects_a_broken_image(tmp_path, digits_run):
    Image.new("L", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    proc = run_cli("predict", digits_run.path, tmp_path)
    assert proc.returncode == 2 and "bad.png" in proc.stderr


def test_failed_run_keeps_its_directory_and_says_failed(tmp_path):
    # lenet5 on 1-D sequences fails when the model is built, after the run directory exists
    cfg = write_cfg(tmp_path, "name: wrong\ndata:\n  source: builtin:mnist1d\nmodel:\n  name: lenet5\n")
    proc = run_cli("train", cfg, "--output", tmp_path / "runs")
    from modelyard.models import MODELS

    readers = ", ".join(sorted(e.name for e in MODELS if "sequence" in e.meta["reads"]))
    assert proc.returncode == 2 and f"cannot read sequence data; models that can: {readers}" in proc.stderr
    assert "mnist1d-cnn" in readers
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_version_and_help():
    assert run_cli("--version", check=True).stdout.strip().endswith("0.1.0")
    assert "evaluate" in run_cli("--help", check=True).stdout


def test_two_evaluations_in_one_second_keep_both_files(digits_run, capsys, monkeypatch):
    from modelyard.cli import main

    monkeypatch.setattr("modelyard.runs.utc_stamp", lambda: "20260101T000000Z")
    before = set((digits_run.path / "evaluations").glob("*.json")) if (digits_run.path / "evaluations").is_dir() \
        else set()
    for _ in range(2):
        main(["evaluate", str(digits_run.path)])
    made = set((digits_run.path / "evaluations").glob("test-20260101T000000Z*.json")) - before
    assert len(made) == 2
    for f in made:
        f.unlink()


def test_evaluate_refuses_a_dataframe_with_what_to_pass(digits_run):
    with pytest.raises(TypeError, match="data.source string"):
        modelyard.evaluate(digits_run.path, data=pd.DataFrame({"a": [1]}))
