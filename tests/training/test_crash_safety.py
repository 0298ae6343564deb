"""Whatever stops a run (a kill in the middle of a checkpoint save, Ctrl-C, SIGTERM, an exception, a diverging
loss), run.json says so, the checkpoint in force is whole, and a resume ends exactly where an uninterrupted run ends.

Every run here skips the HTML report (write_report is replaced by a no-op): the report is not what is tested, and
rendering it would cost most of each run's time.
"""

import json
import math
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import modelyard
from modelyard.config import TrainConfig
from modelyard.errors import ConfigError
from modelyard.training import Callback
from modelyard.training import checkpoint
from modelyard.training.checkpoint import SAVE_POINTS, latest_step, read_pointer
from tests.conftest import tiny_config

# 1257 training images, batch 128: 10 steps an epoch. Saves at steps 5, 10 (epoch 1's end), 15 and 20 (the end).
CFG = tiny_config(
    model={"name": "mlp", "hidden_sizes": [32], "dropout": 0.2},  # dropout: the RNG state must survive too
    train={"epochs": 2, "batch_size": 128, "lr": 0.01, "checkpoint_every_steps": 5},
    evaluate={"bootstrap": 20},
)


class Killed(Exception):
    """Stands for a kill: raised inside a save, it stops the run with whatever the save had done so far."""


@pytest.fixture(scope="module")
def reference(no_report, tmp_path_factory):
    """The uninterrupted run every interrupted one must end equal to."""
    run = modelyard.train(CFG, output=tmp_path_factory.mktemp("reference"), quiet=True)
    assert run.metrics["steps"] == 20 and run.metrics["best_epoch"] == 2  # so the last save writes a new best
    return run


def the_run(output):
    (run,) = output.iterdir()
    return run


def status_of(run) -> dict:
    return json.loads((run / "run.json").read_text())


def assert_same_result(resumed, reference):
    for key in ("test", "val", "epochs", "steps", "best_epoch", "best_value"):
        assert resumed.metrics[key] == reference.metrics[key], key
    a, b = (load_file(str(r.path / "model" / "model.safetensors")) for r in (resumed, reference))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert status_of(resumed.path)["status"] == "completed" and "error" not in status_of(resumed.path)


def assert_whole(checkpoints):
    """LATEST names complete folders, and nothing else is left."""
    names = read_pointer(checkpoints)
    last = checkpoints / names["last"]
    assert {p.name for p in last.iterdir()} == {"model.safetensors", "training_state.pt", "state.json"}
    assert {p.name for p in checkpoints.iterdir()} == {"LATEST", names["last"], names["best"]} - {None}


@pytest.mark.parametrize("point", SAVE_POINTS)
def test_a_kill_at_any_point_of_a_save_resumes_to_the_same_result(tmp_path, monkeypatch, reference, point):
    saves_done = []

    def kill_in_the_last_save(reached):
        if len(saves_done) == 3 and reached == point:  # the fourth save: the end, with a new best
            raise Killed(point)
        if reached == SAVE_POINTS[-1]:
            saves_done.append(reached)

    monkeypatch.setattr(checkpoint, "_reached", kill_in_the_last_save)
    with pytest.raises(Killed):
        modelyard.train(CFG, output=tmp_path, quiet=True)
    monkeypatch.setattr(checkpoint, "_reached", lambda reached: None)
    run = the_run(tmp_path)
    assert status_of(run)["status"] == "failed"
    committed = SAVE_POINTS.index(point) >= SAVE_POINTS.index("pointer-replaced")
    assert latest_step(run / "checkpoints") == (20 if committed else 15)
    resumed = modelyard.train(resume=run, quiet=True)
    assert_same_result(resumed, reference)
    assert_whole(run / "checkpoints")  # the unfinished save's folders were cleaned up


def test_a_run_saves_once_at_the_end_by_default(tmp_path, no_report, monkeypatch):
    assert TrainConfig().checkpoint_every_seconds == 60 and TrainConfig().checkpoint_every_steps is None
    commits = []
    monkeypatch.setattr(checkpoint, "_reached", lambda reached: commits.append(reached == "pointer-replaced"))
    # An hour between saves: this short run must write one checkpoint, at the end, however slow the machine.
    cfg = tiny_config(train={"epochs": 30, "batch_size": 256, "lr": 0.05, "checkpoint_every_seconds": 3600,
                             "early_stopping": {"patience": 1}})
    run = modelyard.train(cfg, output=tmp_path, quiet=True)
    assert sum(commits) == 1 and run.metrics["stopped_early"]
    names = read_pointer(run.path / "checkpoints")
    state = json.loads((run.path / "checkpoints" / names["last"] / "state.json").read_text())
    assert state["stopped_early"] and state["epoch"] == run.metrics["epochs"]
    assert names["best"] == f"best-{state['best_step']:08d}" and state["best_epoch"] == run.metrics["best_epoch"]
    assert_whole(run.path / "checkpoints")


def test_a_short_interval_saves_at_every_step(tmp_path, no_report, monkeypatch):
    commits = []
    monkeypatch.setattr(checkpoint, "_reached", lambda reached: commits.append(reached == "pointer-replaced"))
    cfg = tiny_config(train={"epochs": 2, "batch_size": 128, "checkpoint_every_seconds": 1e-9})
    modelyard.train(cfg, output=tmp_path, quiet=True)
    assert sum(commits) == 20  # every step; the save at the end finds that state already saved


@pytest.fixture
def terminal_signals():
    """The dispositions a command typed in a terminal starts with. A job started in the background by a
    non-interactive shell (as CI may run the suite) inherits SIGINT ignored, and the loop rightly leaves an ignored
    signal alone, so the tests that send one set the terminal's dispositions first."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_marks_the_run_interrupted(tmp_path, reference, sig, terminal_signals):
    class SendSignal(Callback):
        def on_step_end(self, loop):
            if loop.state.step == 7:
                os.kill(os.getpid(), sig)

    with pytest.raises(KeyboardInterrupt):
        modelyard.train(CFG, output=tmp_path, callbacks=[SendSignal()], quiet=True)
    run = the_run(tmp_path)
    status = status_of(run)
    assert status["status"] == "interrupted" and sig.name in status["error"] and status["finished"]
    assert status["checkpoint_step"] == latest_step(run / "checkpoints") == 7  # saved at the step under way
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers were put back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert_same_result(modelyard.train(resume=run, quiet=True), reference)


def test_an_immediate_interrupt_keeps_the_last_checkpoint(tmp_path, no_report):
    class CtrlCTwice(Callback):
        def on_step_end(self, loop):
            if loop.state.step == 7:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        modelyard.train(CFG, output=tmp_path, callbacks=[CtrlCTwice()], quiet=True)
    run = the_run(tmp_path)
    status = status_of(run)
    assert status["status"] == "interrupted" and status["error"] == "KeyboardInterrupt"
    assert latest_step(run / "checkpoints") == status["checkpoint_step"] == 5
    assert_whole(run / "checkpoints")


def test_a_seed_that_fails_at_seeding_marks_the_run_failed(tmp_path, monkeypatch):
    def refuse(seed, *args, **kwargs):  # what NumPy did with --seed -1 before the config checked seeds
        raise ValueError("Seed must be between 0 and 2**32 - 1")

    monkeypatch.setattr("accelerate.utils.set_seed", refuse)
    with pytest.raises(ValueError):
        modelyard.train(tiny_config(), output=tmp_path, quiet=True)
    status = status_of(the_run(tmp_path))
    assert status["status"] == "failed" and "Seed must be between" in status["error"]
    assert status["checkpoint_step"] is None


def test_a_diverging_loss_stops_with_a_clear_error(tmp_path, no_report):
    with pytest.raises(ConfigError, match=r"diverged: the training loss became nan in epoch 1 \(optimizer steps "
                                          r"1-20\).*Lower train.lr \(it is 1e\+06; the default is 0.001\)"):
        modelyard.train(tiny_config(train={"optimizer": "sgd", "lr": 1e6}), output=tmp_path, quiet=True)
    run = the_run(tmp_path)
    assert status_of(run)["status"] == "failed" and "diverged" in status_of(run)["error"]
    assert latest_step(run / "checkpoints") is None  # nothing was ever good enough to save


def test_a_diverging_loss_keeps_the_last_good_checkpoint(tmp_path, no_report):
    class BreakWeights(Callback):  # what a too-high learning rate does, at a step of our choosing
        def on_step_end(self, loop):
            if loop.state.step == 12:
                with torch.no_grad():
                    next(loop.module.parameters()).fill_(math.inf)

    with pytest.raises(ConfigError, match=r"epoch 2 \(optimizer steps 11-15\); the last good checkpoint \(step 10\)"):
        modelyard.train(CFG, output=tmp_path, callbacks=[BreakWeights()], quiet=True)
    run = the_run(tmp_path)
    assert status_of(run)["status"] == "failed" and status_of(run)["checkpoint_step"] == 10
    names = read_pointer(run / "checkpoints")
    for name in names.values():
        weights = load_file(str(run / "checkpoints" / name / "model.safetensors"))
        assert all(torch.isfinite(t).all() for t in weights.values()), name
    assert_whole(run / "checkpoints")


def test_a_format_1_run_resumes_to_the_same_result(tmp_path, reference):
    """Runs written before LATEST (checkpoints/last/ and best/, no format_version) still resume, in the new layout."""
    class Crash(Callback):
        def on_step_end(self, loop):
            if loop.state.step == 13:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        modelyard.train(CFG, output=tmp_path, callbacks=[Crash()], quiet=True)
    run = the_run(tmp_path)
    checkpoints = run / "checkpoints"
    names = read_pointer(checkpoints)
    (checkpoints / names["last"]).rename(checkpoints / "last")
    (checkpoints / names["best"]).rename(checkpoints / "best")
    (checkpoints / "LATEST").unlink()
    status = {k: v for k, v in status_of(run).items() if k not in ("format_version", "written_by")}
    (run / "run.json").write_text(json.dumps(status))
    assert read_pointer(checkpoints) == {"last": "last", "best": "best"} and latest_step(checkpoints) == 10
    assert_same_result(modelyard.train(resume=run, quiet=True), reference)
    assert_whole(checkpoints)  # last/ and best/ gave way to the versioned folders
    assert status_of(run)["format_version"] == 2


def test_the_best_weights_copy_round_trips_tied_weights(tmp_path):
    """The in-memory best copy is written with save_file; tied weights (a GPT's head and embedding) must load back."""
    def tied() -> torch.nn.Module:
        model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
        model[1].weight = model[0].weight
        return model

    torch.manual_seed(0)
    model = tied()
    before = model[0].weight.detach().clone()
    copy = checkpoint.cpu_weights(model)
    assert list(copy) == ["0.weight"]  # one name per shared tensor, as save_model writes
    with torch.no_grad():
        model[0].weight.add_(1.0)  # training goes on; the copy must not follow
    checkpoint.save_checkpoint(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.1),
                               torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=0.1),
                                                                 lambda step: 1.0),
                               checkpoint.TrainState(step=3, best_step=2), best_weights=copy)
    fresh = tied()
    assert checkpoint.load_best_weights(tmp_path, fresh)
    assert torch.equal(fresh[0].weight, before) and fresh[1].weight is fresh[0].weight
    assert read_pointer(tmp_path) == {"last": "last-00000003", "best": "best-00000002"}
