"""Quality bar: `make demo` (LeNet-5 on the 8x8 digits) reaches test accuracy >= 0.985, and the whole demo
command, after installation, takes under 60 s on a 2-core CPU.

Runs the demo's own command as a subprocess, timing everything a user waits for (imports, data, training,
evaluation, report). Usage: python bench/demo_digits.py [repeats]
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, median, spread

ROOT = Path(__file__).resolve().parents[1]
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
walls, accs, cis = [], [], []
for i in range(repeats):
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "modelyard", "train", str(ROOT / "examples/digits-lenet.yaml"),
                               "--output", out], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        run_dir = proc.stdout.strip().splitlines()[-1]
        test = json.loads(Path(run_dir, "metrics.json").read_text())["test"]
        accs.append(test["accuracy"])
        cis.append((test["headline"]["low"], test["headline"]["high"]))
    print(f"run {i + 1}: {walls[-1]:.1f} s, test accuracy {accs[-1]:.4f}", flush=True)
print(f"machine: {machine()}")
print(f"demo wall time: median {median(walls):.1f} s ({spread(walls)}); target < 60 s")
print(f"test accuracy: {accs[0]:.4f} (95% bootstrap CI {cis[0][0]:.4f}-{cis[0][1]:.4f}; seed 0, "
      f"deterministic: {len(set(accs)) == 1}); target >= 0.985")
