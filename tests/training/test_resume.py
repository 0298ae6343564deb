"""A killed run, resumed, ends exactly where an uninterrupted one does (CPU, fixed seed)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import modelyard
from modelyard.training import Callback
from modelyard.training.checkpoint import latest_step
from tests.conftest import run_cli, tiny_config

CFG = tiny_config(
    model={"name": "mlp", "hidden_sizes": [32], "dropout": 0.2},  # dropout: the RNG state must survive too
    train={"epochs": 3, "batch_size": 64, "lr": 0.01, "checkpoint_every_steps": 3, "schedule": "cosine"},
)


class Crash(Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_step_end(self, loop):
        if loop.state.step == self.at_step:
            raise RuntimeError("simulated crash")


def weights(run_path):
    return load_file(str(run_path / "model" / "model.safetensors"))


@pytest.mark.parametrize("crash_at", [25, 40])  # mid-epoch (after the step-24 checkpoint) and at an epoch end
def test_resume_after_crash_matches_uninterrupted(tmp_path, monkeypatch, crash_at):
    monkeypatch.setattr("modelyard.report.html.write_report", lambda *args, **kwargs: None)  # not what is tested
    full = modelyard.train(CFG, output=tmp_path / "a", quiet=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        modelyard.train(CFG, output=tmp_path / "b", callbacks=[Crash(crash_at)], quiet=True)
    (crashed,) = (tmp_path / "b").iterdir()
    status = json.loads((crashed / "run.json").read_text())
    assert status["status"] == "failed" and "simulated crash" in status["error"]
    assert latest_step(crashed / "checkpoints") == (24 if crash_at == 25 else 39)  # the failure kept its checkpoints
    assert status["checkpoint_step"] == latest_step(crashed / "checkpoints") and status["finished"]
    resumed = modelyard.train(resume=crashed, quiet=True)
    assert resumed.metrics["test"] == full.metrics["test"]
    assert resumed.metrics["val"] == full.metrics["val"]
    a, b = weights(full.path), weights(resumed.path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist_a = [json.loads(x) for x in (full.path / "history.jsonl").read_text().splitlines()]
    hist_b = [json.loads(x) for x in (resumed.path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in hist_b] == [1, 2, 3]
    assert [r["train_loss"] for r in hist_a] == [r["train_loss"] for r in hist_b]
    assert json.loads((resumed.path / "run.json").read_text())["status"] == "completed"


def test_cli_resume_after_sigkill(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "name: killme\nseed: 1\ndata: {source: 'builtin:digits'}\n"
        "model: {name: lenet5, channels: [8, 16], dropout: 0.1}\n"
        "train: {epochs: 3, batch_size: 32, checkpoint_every_steps: 5}\nevaluate: {bootstrap: 20}\n"
    )
    out = tmp_path / "runs"
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "modelyard", "train", str(cfg), "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    found = []
    for _ in range(6000):  # bounded wait (2 min) for the first mid-run checkpoint
        found = list(out.glob("killme-*/checkpoints/LATEST"))
        if found or proc.poll() is not None:
            break
        time.sleep(0.02)
    if not found:
        proc.kill()
        proc.wait()
        pytest.fail(f"no checkpoint appeared (exit status {proc.returncode}); stderr:\n{log.read_text()[-2000:]}")
    os.kill(proc.pid, signal.SIGSTOP)
    run_dir = found[0].parents[1]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # stopped mid-run, truly
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = run_cli("train", "--resume", run_dir, check=True)
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)
    fresh = run_cli("train", cfg, "--output", tmp_path / "fresh", check=True)
    fresh_dir = fresh.stdout.strip().splitlines()[-1]
    a = json.loads((run_dir / "metrics.json").read_text())
    b = json.loads(open(f"{fresh_dir}/metrics.json").read())
    assert a["test"] == b["test"] and a["epochs"] == b["epochs"] == 3


def test_resume_needs_a_run_directory(tmp_path):
    proc = run_cli("train", "--resume", tmp_path)
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    proc = run_cli("train")
    assert proc.returncode == 2 and "give a CONFIG" in proc.stderr


def test_resume_refuses_a_new_model_or_split_and_leaves_the_run_as_it_was(tmp_path, digits_run):
    # a new model section failed with an internal error after rewriting config.yaml (the run could not be resumed
    # any more); a new seed re-drew the split, so the resumed model was scored on examples it had trained on
    from modelyard.errors import ConfigError

    import shutil

    run = shutil.copytree(digits_run.path, tmp_path / "run")
    config = (run / "config.yaml").read_text()
    for override, named in (("model.hidden_sizes=[16]", "cannot change model"), ("seed=7", "cannot change seed"),
                            ("data.split.test=0.2", "cannot change data")):
        with pytest.raises(ConfigError, match=named):
            modelyard.train(resume=run, overrides=[override, "train.epochs=3"], quiet=True)
        assert (run / "config.yaml").read_text() == config
        assert json.loads((run / "run.json").read_text())["status"] == "completed"
