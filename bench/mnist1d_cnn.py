"""Quality bar: examples/mnist1d-cnn.yaml reaches test accuracy >= 0.98 in under 3 minutes on the CPU.

Usage: python bench/mnist1d_cnn.py
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

ROOT = Path(__file__).resolve().parents[1]
with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "modelyard", "train", str(ROOT / "examples/mnist1d-cnn.yaml"),
                           "--output", out], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    m = json.loads(Path(proc.stdout.strip().splitlines()[-1], "metrics.json").read_text())
h = m["test"]["headline"]
print(f"machine: {machine()}")
print(f"mnist1d-cnn: test accuracy {m['test']['accuracy']:.4f} (95% CI {h['low']:.4f}-{h['high']:.4f}); target >= 0.98")
print(f"wall time {wall:.1f} s for the whole command, {m['train_time_s']:.1f} s training ({m['epochs']} epochs); "
      "target < 180 s")
