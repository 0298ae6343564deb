"""Quality bar: fine-tuned MiniLM beats the TF-IDF baseline on debian-sections' test split; LoRA trains under
2% of the parameters and gets within 3 points of full fine-tuning.

Runs each example's own `modelyard train` command in turn, in one go, on the same split, and prints test
accuracy, macro-F1, training time and whole-command time, then the ratios.
Usage: python bench/text_baseline.py [--no-lora] [--keep DIR]
  --keep DIR: write the runs under DIR and keep them (for `modelyard value`), and reuse a finished run of an
  example found there instead of training it again.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

ROOT = Path(__file__).resolve().parents[1]
configs = ["debian-tfidf", "debian-minilm"] + ([] if "--no-lora" in sys.argv else ["debian-minilm-lora"])
keep = sys.argv[sys.argv.index("--keep") + 1] if "--keep" in sys.argv else None
results = {}
with tempfile.TemporaryDirectory() as tmp:
    out = keep or tmp
    for name in configs:
        done = sorted(p for p in Path(out).glob(f"{name}-2*") if (p / "model" / "modelyard.json").is_file())
        wall = None
        if done:
            run_dir = done[-1]
            print(f"{name}: reusing {run_dir}", flush=True)
        else:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "modelyard", "train", str(ROOT / f"examples/{name}.yaml"),
                                   "--output", out], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode:
                sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
            run_dir = proc.stdout.strip().splitlines()[-1]
        m = json.loads(Path(run_dir, "metrics.json").read_text())
        results[name] = dict(acc=m["test"]["accuracy"], f1=m["test"]["f1_macro"], low=m["test"]["headline"]["low"],
                             high=m["test"]["headline"]["high"], train_s=m["train_time_s"], wall_s=wall,
                             params=m["parameters"], trainable=m["trainable_parameters"])
        r = results[name]
        print(f"{name:20s} test accuracy {r['acc']:.4f} (95% CI {r['low']:.3f}-{r['high']:.3f})  macro-F1 "
              f"{r['f1']:.4f}  training {r['train_s']:.1f} s  whole command "
              f"{'%.1f s' % r['wall_s'] if r['wall_s'] else '(reused)'}  trainable "
              f"{r['trainable']:,} of {r['params']:,} ({r['trainable'] / r['params']:.2%})", flush=True)
print(f"machine: {machine()}")
base, big = results["debian-tfidf"], results["debian-minilm"]
print(f"MiniLM full vs TF-IDF: accuracy {big['acc'] - base['acc']:+.4f}, macro-F1 {big['f1'] - base['f1']:+.4f}, "
      f"training time ratio {big['train_s'] / base['train_s']:.0f}x; target: MiniLM accuracy above TF-IDF's "
      f"({'met' if big['acc'] > base['acc'] else 'NOT met'})")
if "debian-minilm-lora" in results:
    lora = results["debian-minilm-lora"]
    frac = lora["trainable"] / lora["params"]
    gap = big["acc"] - lora["acc"]
    print(f"LoRA vs full: trains {frac:.2%} of the parameters (target < 2%), accuracy gap {gap * 100:+.1f} points "
          f"(target within 3: {'met' if gap <= 0.03 and frac < 0.02 else 'NOT met'}), training time ratio "
          f"{lora['train_s'] / big['train_s']:.2f}")
