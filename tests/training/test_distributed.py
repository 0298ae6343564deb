"""Two CPU processes (DDP over gloo) end where one process does, given the same global batch.

Dropout is switched off: each process draws dropout masks for its own shard, so with dropout the
two runs agree only statistically, never to 1e-3.
"""

import json
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli

# Augmentation is switched off for the same reason as dropout: each process draws its own random shifts.
OVERRIDES = ["--set", "train.epochs=2", "--set", "model.dropout=0", "--set", "evaluate.bootstrap=20",
             "--set", "data.image.augment.random_crop=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(out: str) -> dict:
    run_dir = out.strip().splitlines()[-1]
    return json.loads(open(f"{run_dir}/metrics.json").read())


def test_two_processes_match_one(tmp_path):
    example = ROOT / "examples" / "digits-lenet.yaml"
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "modelyard", "train", str(example), "--output", str(tmp_path / "two"),
         *OVERRIDES],
        capture_output=True, text=True, timeout=600,
    )
    assert two.returncode == 0, two.stderr
    one = run_cli("train", example, "--output", tmp_path / "one", *OVERRIDES, check=True)
    m2, m1 = metrics(two.stdout), metrics(one.stdout)
    assert m2["processes"] == 2 and m1["processes"] == 1
    assert m2["steps"] == m1["steps"]
    for split in ("val", "test"):
        for key in ("accuracy", "f1_macro", "log_loss", "ece"):
            assert m2[split][key] == pytest.approx(m1[split][key], abs=1e-3), (split, key)
