"""`train.ema_decay`: validation, the best checkpoint and the saved model use torch's exponential moving average of
the weights, and a resumed run continues the average exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file

import modelyard
from modelyard.errors import RunError
from modelyard.training.checkpoint import read_pointer
from tests.conftest import tiny_config
from tests.training.test_resume import Crash

CFG = tiny_config(model={"name": "mlp", "hidden_sizes": [32], "dropout": 0.2},
                  train={"epochs": 2, "batch_size": 64, "lr": 0.01, "checkpoint_every_steps": 3, "ema_decay": 0.9})


@pytest.fixture(autouse=True)
def no_report(monkeypatch):
    monkeypatch.setattr("modelyard.report.html.write_report", lambda *args, **kwargs: None)  # not what is tested


def test_the_saved_model_is_the_average_not_the_last_weights(tmp_path):
    run = modelyard.train(tiny_config(train={**CFG["train"], "checkpoint_every_steps": None}), output=tmp_path,
                          quiet=True)
    checkpoints = run.path / "checkpoints"
    last = checkpoints / read_pointer(checkpoints)["last"]
    raw, ema = load_file(str(last / "model.safetensors")), load_file(str(last / "ema.safetensors"))
    saved = load_file(str(run.path / "model" / "model.safetensors"))
    assert int(ema["n_averaged"]) == json.loads((last / "state.json").read_text())["step"]  # one update a step
    if run.metrics["best_epoch"] == 2:  # the kept weights are the average at the last step, not the raw weights
        assert all(torch.equal(saved[k], ema[f"module.{k}"]) for k in saved)
    assert not all(torch.equal(saved[k], raw[k]) for k in saved)


def test_resume_continues_the_average_exactly(tmp_path):
    full = modelyard.train(CFG, output=tmp_path / "a", quiet=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        modelyard.train(CFG, output=tmp_path / "b", callbacks=[Crash(25)], quiet=True)
    (crashed,) = (tmp_path / "b").iterdir()
    resumed = modelyard.train(resume=crashed, quiet=True)
    assert resumed.metrics["test"] == full.metrics["test"] and resumed.metrics["val"] == full.metrics["val"]
    a = load_file(str(full.path / "model" / "model.safetensors"))
    b = load_file(str(resumed.path / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_an_average_the_run_never_kept_is_refused(tmp_path):
    plain = tiny_config(train={**CFG["train"], "ema_decay": None})
    with pytest.raises(RuntimeError, match="simulated crash"):
        modelyard.train(plain, output=tmp_path, callbacks=[Crash(25)], quiet=True)
    (crashed,) = tmp_path.iterdir()
    with pytest.raises(RunError, match="without train.ema_decay"):
        modelyard.train(resume=crashed, overrides=["train.ema_decay=0.9"], quiet=True)
