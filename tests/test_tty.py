"""What a user types, in a real terminal: progress bars draw differently with a TTY attached, and the
first `make demo` typed in one crashed at epoch 0 while every captured-output test passed."""

import re
import sys

import pexpect
import pytest
import yaml

from tests.conftest import tiny_config


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(*args, cwd=None, timeout=240) -> tuple[int, str]:
    """Run `python -m modelyard ARGS` under a pseudo-terminal; return its exit status and what it drew."""
    child = pexpect.spawn(sys.executable, ["-m", "modelyard", *map(str, args)], cwd=cwd, timeout=timeout,
                          encoding="utf-8", codec_errors="replace", dimensions=(40, 160),
                          env={"TERM": "xterm-256color", "PATH": "/usr/bin:/bin", "COLUMNS": "160",
                               "MPLBACKEND": "Agg", "PYTHONPATH": ":".join(sys.path)})
    output = child.read()  # to EOF
    child.close()
    return child.exitstatus, output


def write_config(tmp_path, cfg: dict):
    path = tmp_path / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory):
    """A tiny digits run trained in a terminal, and what the terminal showed."""
    tmp = tmp_path_factory.mktemp("tty")
    # Small batches: enough steps per epoch that the bar is drawn between the per-epoch lines.
    cfg = tiny_config(name="tty", train={"epochs": 2, "batch_size": 8, "lr": 0.01})
    status, out = run_in_terminal("train", write_config(tmp, cfg), "--output", tmp / "runs", cwd=tmp)
    return status, out, tmp


def test_train_in_a_terminal_exits_cleanly_and_draws_a_progress_bar(terminal_run):
    status, out, _ = terminal_run
    assert status == 0, out
    plain = ANSI.sub("", out)
    assert "Traceback" not in plain
    assert re.search(r"epoch 1/2", plain), f"no progress bar was drawn:\n{plain}"  # the bar's own column
    assert re.search(r"epoch +2/2 +train_loss", plain)  # the per-epoch line printed under it
    assert re.search(r"test accuracy: [01]\.\d{4} \(95% CI [01]\.\d{4}-[01]\.\d{4}, clopper-pearson\)", plain), plain
    assert "report:" in plain
    # the summary block before the first step, and which epoch was kept after the last
    assert re.search(r"data +builtin:digits: train 1,257, val 270, test 270 examples; 10 classes", plain)
    assert re.search(r"model +mlp: 2,410 parameters", plain) and re.search(r"kept epoch [12] of 2", plain)


def test_evaluate_and_predict_in_a_terminal(terminal_run):
    status, out, tmp = terminal_run
    run = ANSI.sub("", out).strip().splitlines()[-1].strip()
    status, out = run_in_terminal("evaluate", run, cwd=tmp)
    assert status == 0, out
    assert "accuracy" in out and "Traceback" not in out


def test_a_config_error_in_a_terminal_is_one_message_and_exit_2(tmp_path):
    cfg = tiny_config(name="bad", train={"lrate": 0.1})
    status, out = run_in_terminal("train", write_config(tmp_path, cfg), cwd=tmp_path, timeout=60)
    assert status == 2
    assert "train.lrate" in out and "did you mean" in out and "Traceback" not in out


def test_value_in_a_terminal(terminal_run):
    _, out, tmp = terminal_run
    run = ANSI.sub("", out).strip().splitlines()[-1].strip()
    scenario = tmp / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({
        "volume_per_month": 1000, "horizon_months": 1, "currency": "USD",
        "outcomes": {"correct": 0.1, "wrong": -0.2}, "serve": {"usd_per_hour": 0.2},
        "train": {"usd_per_hour": 0.2}}))
    status, out = run_in_terminal("value", run, "--scenario", scenario, "--iterations", "5", "--output", tmp / "v",
                                  cwd=tmp)
    assert status == 0, out
    assert "report:" in out and "Traceback" not in out


def test_generate_in_a_terminal(tmp_path, corpus_txt):
    cfg = tiny_config(name="lm", data={"source": f"text:{corpus_txt}", "block_size": 16,
                                       "tokenizer": {"vocab_size": 120}}, train={"epochs": 1, "batch_size": 16})
    cfg["model"] = {"name": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2}
    status, out = run_in_terminal("train", write_config(tmp_path, cfg), "--output", tmp_path / "runs", cwd=tmp_path)
    assert status == 0, out
    run = ANSI.sub("", out).strip().splitlines()[-1].strip()
    status, out = run_in_terminal("generate", run, "--prompt", "the garden", "--max-new-tokens", "8", "--seed", "1",
                                  cwd=tmp_path)
    assert status == 0, out
    assert out.startswith("the garden") and "Traceback" not in out
