"""`modelyard reference-demo`, in-process through the CLI's entry point: one short run, checked end to end."""

import csv
import json
import re
from pathlib import Path

import pytest

from tests.conftest import cli_in_process as cli

EPOCHS = 8  # the NumPy MLP and the PyTorch trainer both reach 0.96-0.97 here (seeds 0-2); the default is 30


def test_numpy_and_pytorch_land_close_and_the_run_holds_what_was_printed(capsys, tmp_path):
    code, out, err = cli(capsys, "reference-demo", "--epochs", EPOCHS, "--output", tmp_path)
    assert code == 0, err
    numpy_acc = float(re.search(r"NumPy   \(modelyard.reference\): test accuracy (\d\.\d{4})", out).group(1))
    torch_acc = float(re.search(r"PyTorch \(modelyard train\)    : test accuracy (\d\.\d{4})", out).group(1))
    n_test = int(re.search(r"test set of (\d+):", out).group(1))
    assert numpy_acc > 0.93 and torch_acc > 0.93
    assert abs(numpy_acc - torch_acc) <= 0.02
    difference = float(re.search(r"difference: ([+-]\d+\.\d) points", out).group(1))
    assert difference == pytest.approx(100 * (numpy_acc - torch_acc), abs=0.06)

    run = Path(re.search(r"PyTorch run: (\S+)", out).group(1))
    assert run.parent == tmp_path and run.is_dir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(torch_acc, abs=5e-5)
    with open(run / "predictions" / "test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_test == 270
    assert sum(r["true"] == r["predicted"] for r in rows) / n_test == pytest.approx(metrics["test"]["accuracy"])
    pngs = list((run / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (run / "report.html").stat().st_size > 0


@pytest.mark.parametrize("widths, message", [("64,x", "comma-separated"), ("64,0", "positive integers")])
def test_bad_widths_are_usage_errors(capsys, widths, message):
    code, _, err = cli(capsys, "reference-demo", "--hidden-sizes", widths)
    assert code == 2 and message in err and "Traceback" not in err
