import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import modelyard
from modelyard.config import load_config
from modelyard.training.optim import lr_factor
from modelyard.training.sampler import EpochBatchSampler
from tests.conftest import tiny_config


@pytest.fixture(autouse=True)
def no_report(monkeypatch):
    """These tests read metrics and weights; rendering each run's HTML report would cost most of their time."""
    monkeypatch.setattr("modelyard.report.html.write_report", lambda *args, **kwargs: None)


def test_sampler_is_seeded_per_epoch_and_covers_everything():
    s = EpochBatchSampler(100, 32, seed=0)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(0)
    assert list(s) == a
    s.set_epoch(1)
    assert list(s) != a
    assert sorted(i for b in a for i in b) == list(range(100)) and len(a) == len(s) == 4


def test_shards_of_two_processes_make_the_global_batch():
    one = EpochBatchSampler(100, 32, seed=0)
    two = [EpochBatchSampler(100, 32, seed=0, rank=r, world=2) for r in range(2)]
    for s in (one, *two):
        s.set_epoch(3)
    for g, r0, r1 in zip(one, *two, strict=True):
        assert g == r0 + r1 and abs(len(r0) - len(r1)) <= 1


def test_resumed_sampler_skips_the_batches_already_done():
    s = EpochBatchSampler(100, 10, seed=0)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_batch=4)
    assert list(s) == full[4:] and len(s) == 6


@pytest.mark.parametrize(
    "schedule, checks",
    [
        ("constant", {0: 0.1, 5: 0.6, 50: 1.0}),  # warm-up of 10 steps, then flat
        ("step", {9: 1.0, 10: 1.0, 29: 1.0, 30: 0.1, 50: 0.01}),  # decays every 20 steps after warm-up
        ("cosine", {10: 1.0, 99: 0.0}),
        ("onecycle", {9: 1.0, 99: 0.0}),
    ],
)
def test_schedules(schedule, checks):
    cfg = load_config(tiny_config(train={"schedule": schedule, "epochs": 10, "warmup_epochs": 1, "step_size": 2,
                                         "gamma": 0.1})).train
    for step, expected in checks.items():
        assert lr_factor(cfg, step, steps_per_epoch=10) == pytest.approx(expected, abs=0.01), step


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    big = modelyard.train(tiny_config(train={"batch_size": 64, "optimizer": "sgd", "lr": 0.1}), output=tmp_path, quiet=True)
    acc = modelyard.train(tiny_config(train={"batch_size": 32, "grad_accum_steps": 2, "optimizer": "sgd", "lr": 0.1}),
                          output=tmp_path, quiet=True)
    a, b = load_file(str(big.path / "model/model.safetensors")), load_file(str(acc.path / "model/model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert big.metrics["steps"] == acc.metrics["steps"]


def test_early_stopping_and_best_checkpoint(tmp_path):
    run = modelyard.train(tiny_config(train={"epochs": 30, "lr": 0.05, "monitor": "val_accuracy",
                                             "early_stopping": {"patience": 2}}), output=tmp_path, quiet=True)
    m = run.metrics
    assert m["stopped_early"] and m["epochs"] < 30
    assert m["epochs"] == m["best_epoch"] + 2
    hist = [json.loads(line)["val_accuracy"] for line in (run.path / "history.jsonl").read_text().splitlines()]
    assert m["best_value"] == max(hist)
    assert m["val"]["accuracy"] == pytest.approx(m["best_value"])  # the saved model is the best epoch's


@pytest.mark.parametrize("options", [
    {"optimizer": "adam", "schedule": "onecycle", "grad_clip": 0.5, "l1": 1e-5},
    {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "schedule": "step", "step_size": 1},
    {"precision": "bf16"},
])
def test_training_options_run_and_learn(tmp_path, options):
    run = modelyard.train(tiny_config(train={"epochs": 3, **options}), output=tmp_path, quiet=True)
    assert run.metrics["test"]["accuracy"] > 0.5  # ten classes: chance is 0.1
    assert np.isfinite(run.metrics["test"]["log_loss"])
