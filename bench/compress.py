"""Compression targets on the fine-tuned MiniLM (debian-sections): every candidate timed side by side in one run.

1. Prints the CPU and the instructions int8 speed depends on (VNNI, AMX): the int8 target is 2.5x with them,
   1.5x on an AVX2-only CPU.
2. Finds (or trains) the teacher and the TF-IDF baseline under --keep, then makes each compressed candidate with
   `modelyard.compress` (reusing a finished derived run of the same method and options found there).
3. Loads every candidate in this one process and times them round-robin (so machine noise falls on all alike):
   ms per text at batch 1 over the same texts, texts per second at batch 32 through the whole path a server
   takes (raw text -> tokens -> probabilities). Test accuracy comes from each run's scoring on the parent's
   exact test split.
4. Prints the table and each target of the issue with "met" / "NOT met".

Usage: python bench/compress.py [--keep DIR] [--rounds N] [--only a,b,...]
  --keep DIR: where the teacher, baseline and derived runs live (default runs/bench-text; the teacher is what
              `python bench/text_baseline.py --no-lora --keep DIR` trains, about an hour on 2 CPU cores).
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import modelyard
from modelyard.compress import compress
from modelyard.compress.derived import folder_bytes
from modelyard.machine import int8_class, machine_info
from modelyard.runs import RunDir

from _common import machine

ROOT = Path(__file__).resolve().parents[1]
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--keep", default="runs/bench-text")
parser.add_argument("--rounds", type=int, default=5, help="round-robin timing rounds (medians are quoted)")
parser.add_argument("--texts", type=int, default=64, help="texts per timing round and candidate")
parser.add_argument("--only", default="", help="comma-separated candidate names to make and time")
parser.add_argument("--student-epochs", type=int, default=3, help="the distilled student's epochs (the teacher's: 3)")
parser.add_argument("--recover-epochs", type=int, default=1, help="structured pruning's recovery epochs")
args = parser.parse_args()
keep = Path(args.keep)

# name, method, options, parent name (None: the teacher)
CANDIDATES = [
    ("torch int8-dynamic", "int8-dynamic", {}, None),
    ("onnx fp32", "onnx", {}, None),
    ("onnx int8", "onnx-int8", {}, None),
    ("bf16", "bf16", {}, None),
    ("prune ffn 30%", "prune", {"amount": 0.3, "structured": True, "recover_epochs": args.recover_epochs}, None),
    ("prune ffn 50%", "prune", {"amount": 0.5, "structured": True, "recover_epochs": args.recover_epochs}, None),
    ("student 3 layers", "distill", {"layers": 3, "epochs": args.student_epochs}, None),
    ("student 3 layers onnx int8", "onnx-int8", {}, "student 3 layers"),
]
if args.only:
    wanted = set(args.only.split(","))
    wanted |= {parent for name, _, _, parent in CANDIDATES if name in wanted and parent}
    CANDIDATES = [c for c in CANDIDATES if c[0] in wanted]


def trained(name: str) -> Path:
    done = sorted(p for p in keep.glob(f"{name}-2*") if RunDir(p).current_status() == "completed"
                  and not RunDir(p).lineage())
    if done:
        return done[-1]
    print(f"training {name} into {keep} (MiniLM: about an hour on 2 CPU cores)", flush=True)
    proc = subprocess.run([sys.executable, "-m", "modelyard", "train", str(ROOT / f"examples/{name}.yaml"),
                           "--output", str(keep)], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"training {name} failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def derived(parent: Path, method: str, options: dict) -> Path:
    for p in sorted(keep.iterdir(), reverse=True):
        lin = RunDir(p).lineage() if (p / "run.json").is_file() else None
        if lin and lin["parent_name"] == parent.name and lin["method"] == method \
                and all(lin["params"].get(k) == v for k, v in options.items()) \
                and RunDir(p).current_status() == "completed":
            return p
    t0 = time.perf_counter()
    run = compress(parent, method, output=keep, speed_budget_s=2.0, quiet=False, **options)
    print(f"  made in {time.perf_counter() - t0:.0f} s: {run.path}", flush=True)
    return run.path


info = machine_info()
print(f"machine: {machine()}")
print(f"int8/bf16 instructions: {', '.join(info['int8_isa']) or 'none'} -> int8 class {int8_class(info)!r}")
keep.mkdir(parents=True, exist_ok=True)
teacher = trained("debian-minilm")
runs = {"minilm fp32 (teacher)": teacher, "tfidf": trained("debian-tfidf")}
for name, method, options, parent in CANDIDATES:
    print(f"{name}: {method} {options}", flush=True)
    runs[name] = derived(runs[parent] if parent else teacher, method, options)

# ---------------------------------------------------------------- timing, round-robin in one process
import pandas as pd  # noqa: E402

texts = pd.read_csv(ROOT / "src/modelyard/data/builtin/debian-sections/test.csv.gz")["text"].astype(str).tolist()
models = {name: modelyard.load(path) for name, path in runs.items()}
for m in models.values():  # warm-up
    m.predict_proba(texts[:32])
batch1 = {name: [] for name in models}
batch32 = {name: [] for name in models}
for r in range(args.rounds):
    pool = texts[r * args.texts:(r + 1) * args.texts]
    for name, m in models.items():
        t0 = time.perf_counter()
        for t in pool:
            m.predict_proba([t])
        batch1[name].append((time.perf_counter() - t0) / len(pool) * 1000)
        t0 = time.perf_counter()
        for i in range(0, len(pool), 32):
            m.predict_proba(pool[i:i + 32])
        batch32[name].append(len(pool) / (time.perf_counter() - t0))

rows = {}
for name, path in runs.items():
    metrics = RunDir(path).read_json(RunDir(path).metrics_path)
    rows[name] = {"accuracy": metrics["test"]["accuracy"], "bytes": folder_bytes(Path(path) / "model"),
                  "ms1": statistics.median(batch1[name]), "tput32": statistics.median(batch32[name])}
base = rows["minilm fp32 (teacher)"]
print(f"\n{len(texts)} test texts available; timing: {args.rounds} rounds x {args.texts} texts, medians; "
      f"torch threads {info['torch_threads']}")
print(f"{'candidate':28s} {'test acc':>8s} {'vs fp32':>8s} {'size MiB':>9s} {'smaller':>8s} {'ms/text b1':>10s} "
      f"{'texts/s b32':>11s} {'x fp32':>7s}")
for name, r in rows.items():
    print(f"{name:28s} {r['accuracy']:8.4f} {100 * (r['accuracy'] - base['accuracy']):+7.2f}p "
          f"{r['bytes'] / 2**20:9.1f} {base['bytes'] / r['bytes']:7.2f}x {r['ms1']:10.2f} {r['tput32']:11.1f} "
          f"{r['tput32'] / base['tput32']:6.2f}x")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def ratio(name: str) -> float:
    return rows[name]["tput32"] / base["tput32"]


def kept(name: str) -> float:
    return rows[name]["accuracy"] / base["accuracy"]


need = 2.5 if int8_class(info) == "vnni" else 1.5
int8 = [n for n in ("torch int8-dynamic", "onnx int8") if n in rows]
if int8:
    best = max(int8, key=ratio)
    lost = 100 * (base["accuracy"] - rows[best]["accuracy"])
    print(f"\nint8 ({best}, the faster): {ratio(best):.2f}x the fp32 throughput at batch 32 (target >= {need}x on "
          f"this {int8_class(info)} CPU: {verdict(ratio(best) >= need)}), {lost:.2f} points of accuracy lost "
          f"(target <= 0.5: {verdict(lost <= 0.5)})")
if "student 3 layers" in rows:
    s = "student 3 layers"
    print(f"distillation (3 of 6 layers): keeps {kept(s):.1%} of the teacher's accuracy (target >= 97%: "
          f"{verdict(kept(s) >= 0.97)}), {ratio(s):.2f}x faster at batch 32 (target >= 2x: {verdict(ratio(s) >= 2)})")
heads = [n for n in ("student 3 layers", "torch int8-dynamic", "onnx int8", "student 3 layers onnx int8") if n in rows]
eligible = [n for n in heads if kept(n) >= 0.97]
if heads:
    best = max(eligible or heads, key=ratio)
    smaller = base["bytes"] / rows[best]["bytes"]
    print(f"headline ({best}): {ratio(best):.2f}x the teacher's throughput at batch 32 (target >= 3x: "
          f"{verdict(ratio(best) >= 3)}), {kept(best):.1%} of its accuracy (target >= 97%: "
          f"{verdict(kept(best) >= 0.97)}), {smaller:.2f}x smaller on disk (target >= 4x: {verdict(smaller >= 4)})")
for n in ("prune ffn 30%", "prune ffn 50%"):
    if n in rows:
        print(f"structured pruning, {n}: accuracy {rows[n]['accuracy']:.4f} ({100 * (rows[n]['accuracy'] - base['accuracy']):+.2f} "
              f"points), {ratio(n):.2f}x the throughput at batch 32, {rows[n]['ms1'] / base['ms1']:.2f}x the batch-1 latency")
print("value: modelyard value " + " ".join(str(runs[n]) for n in runs) + " --scenario examples/value-debian.yaml")
