"""Measure one finished run on this machine: quality (from its stored test predictions), size, compute, speed,
memory and energy. Every figure is stored with the machine it was measured on.

Speed is measured from raw inputs (texts, image files or arrays, table rows of the run's own test split) to
probabilities, preprocessing included, because that is what a server does per request.
Run as `python -m modelyard.value.measure RUN` to measure in a fresh process (peak memory is per process).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from modelyard.data.base import label_indices
from modelyard.errors import RunError

BATCH_SIZES = (1, 8, 32, 128)


def read_predictions(path: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true class indices, probabilities (N, C)) from a run's predictions/<split>.csv."""
    if not path.is_file():
        raise RunError(f"{path} is missing: the run did not finish, or was made by an older modelyard; retrain it")
    frame = pd.read_csv(path, dtype={"true": str})
    y = label_indices(frame["true"], labels, where=str(path))
    prob = frame[[f"prob_{lab}" for lab in labels]].to_numpy(dtype=np.float64)
    return y, prob


def repeat_until_stable(fn, *, budget_s: float = 20.0, iterations: int | None = None, min_runs: int = 10,
                        max_runs: int = 10_000, tolerance: float = 0.02, clock=time.perf_counter) -> list[float]:
    """Seconds per call of `fn`, repeated until the median stops moving (the median of all calls within
    `tolerance` of the median of the first half) or `budget_s` is spent, and at least `min_runs` times.

    Args:
        iterations: call `fn` exactly this many times instead (the same work on every machine, e.g. in tests).
        clock: seconds as a float; a test passes a fake one to check the stopping rule without wall-clock time.
    """
    if iterations is not None:
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        min_runs = max_runs = iterations
    times: list[float] = []
    deadline = clock() + budget_s
    while len(times) < max_runs:
        t0 = clock()
        fn()
        times.append(clock() - t0)
        n = len(times)
        if n >= min_runs:
            if clock() > deadline:
                break
            if n >= 2 * min_runs:
                whole, half = statistics.median(times), statistics.median(times[: n // 2])
                if abs(whole - half) <= tolerance * whole:
                    break
    return times


def _percentiles_ms(times: list[float]) -> dict:
    ms = np.asarray(times) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "min": float(ms.min()), "max": float(ms.max()), "n": len(ms)}


def flops_per_example(predictor, inputs, n: int = 8) -> float | None:
    """Forward-pass FLOPs per example, counted by torch.utils.flop_counter on up to `n` real examples one by one.
    None for models that are not torch modules (scikit-learn baselines): not measured."""
    module = predictor.adapter.module
    if module is None:
        return None
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from modelyard.data.base import take

    total, count = 0, min(n, len(inputs))
    with torch.no_grad():
        for i in range(count):
            x = predictor.transform(take(inputs, np.array([i]))).to(predictor.device)
            counter = FlopCounterMode(display=False)
            with counter:
                predictor.adapter.logits(x)
            total += counter.get_total_flops()
    return total / count


def measure(run: str | Path, *, budget_s: float = 20.0, iterations: int | None = None, batch_sizes=BATCH_SIZES,
            device: str = "cpu") -> dict:
    """Every figure `modelyard value` needs about one run. `budget_s` bounds the speed measurements; with
    `iterations`, each speed and energy measurement makes exactly that many timed calls instead."""
    import yaml

    from modelyard.artifact import load, resolve_model_dir
    from modelyard.config import load_config
    from modelyard.data import read_run_splits
    from modelyard.data.base import take
    from modelyard.energy import EnergyMeter
    from modelyard.machine import machine_info
    from modelyard.metrics import classification_report
    from modelyard.runs import RunDir

    rd = RunDir.open(run)
    predictor = load(rd.path, device=device)
    if predictor.task == "lm":
        raise RunError(f"{rd.path} holds a language model; `modelyard value` compares classifiers")
    metrics = json.loads(rd.metrics_path.read_text())
    cfg = load_config(yaml.safe_load(rd.config_path.read_text()))
    labels = predictor.labels
    val, test = (read_predictions(rd.predictions_dir / f"{s}.csv", labels) for s in ("val", "test"))
    report = classification_report(*test, labels)
    model_dir = resolve_model_dir(rd.path)

    raw, parts, _ = read_run_splits(rd)
    pool = take(raw.x, parts["test"])
    n_pool = len(pool)

    def batch(size: int, start: int = 0):
        return take(pool, (np.arange(start, start + size) % n_pool))

    for i in range(3):  # warm-up: first calls pay for lazy initialisation
        predictor.predict_proba(batch(1, i))
    share = budget_s / (1 + len(batch_sizes))
    counter = iter(range(10**9))
    latency = repeat_until_stable(lambda: predictor.predict_proba(batch(1, next(counter))), budget_s=share,
                                  iterations=iterations, min_runs=30)
    throughput = {}
    for size in batch_sizes:
        x = batch(size)
        predictor.predict_proba(x)
        times = repeat_until_stable(lambda: predictor.predict_proba(x), budget_s=share, iterations=iterations,
                                    min_runs=3)
        per_s = [size / t for t in times]
        throughput[str(size)] = {"per_second": float(np.median(per_s)), "min": float(min(per_s)),
                                 "max": float(max(per_s)), "n": len(times)}
    best = max(throughput, key=lambda k: throughput[k]["per_second"])
    x = batch(int(best))
    meter, runs = EnergyMeter(), 0
    deadline = time.perf_counter() + max(1.0, share / 2)
    while runs < iterations if iterations is not None else (time.perf_counter() < deadline or runs < 3):
        predictor.predict_proba(x)
        runs += 1
    joules = meter.read() / (runs * int(best))

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    gpu_peak = None
    if device.startswith("cuda"):
        import torch

        gpu_peak = torch.cuda.max_memory_allocated() / 2**20
    params = metrics.get("parameters")
    return {
        "run": str(rd.path),
        # A derived run shares its parent's config (and cfg.name); its model folder's experiment name does not.
        "name": predictor.meta.get("experiment") or cfg.name,
        "lineage": _lineage(rd),
        "experiment": root_experiment(rd, cfg.name),  # the trained ancestor's: what the scenario prices
        "model": cfg.model.name,
        "labels": labels,
        "task": predictor.meta.get("task", "classification"),
        "machine": machine_info(),
        "device": device,
        "quality": {k: report[k] for k in ("n", "accuracy", "f1_macro", "ece", "confusion_matrix")},
        "predictions": {"val": [val[0].tolist(), val[1].tolist()], "test": [test[0].tolist(), test[1].tolist()]},
        "size": {"parameters": params, "trainable_parameters": metrics.get("trainable_parameters"),
                 "bytes_on_disk": sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())},
        "flops_per_example": flops_per_example(predictor, pool),
        "latency_ms_batch1": _percentiles_ms(latency),
        "throughput": throughput,
        "best_batch_size": int(best),
        "predictions_per_second": throughput[best]["per_second"],
        "peak_memory_mb": {"process_rss": peak_mb, "gpu_allocated": gpu_peak},
        "energy_per_prediction_j": joules,
        "energy_source": meter.source,
        "training": making_of(rd, metrics),
    }


def _lineage(rd) -> dict | None:
    lineage = rd.lineage()
    return None if not lineage else {k: lineage.get(k) for k in ("parent", "parent_name", "method", "params")}


def making_of(rd, metrics: dict, *, _seen: frozenset = frozenset()) -> dict:
    """What it took to make this model, for its one-off cost: {time_s, processes, energy, basis, parts}.

    A trained run: its training. A derived run: its parent's making (recursively, so a model compressed twice
    pays for both steps and the training) plus its own step: `compress_time_s` when metrics.json has it (a
    one-pass method: quantise, export, prune), else its own `train_time_s` and energy (a method that trained
    through the trainer: distill, a recovery fine-tune). A derived run's `time_s` is in process-seconds, with
    `processes` 1; `basis` says in words what was counted.
    """
    lineage = rd.lineage()
    if not lineage:
        return {"time_s": metrics.get("train_time_s"), "energy": metrics.get("energy"),
                "processes": metrics.get("processes", 1), "basis": "its training (train_time_s)"}
    if "compress_time_s" in metrics:
        own = {"step": lineage["method"], "source": "compress_time_s", "time_s": metrics["compress_time_s"],
               "kwh": 0.0}
    else:
        own = {"step": lineage["method"], "source": "its own train_time_s",
               "time_s": (metrics.get("train_time_s") or 0.0) * (metrics.get("processes") or 1),
               "kwh": (metrics.get("energy") or {}).get("kwh") or 0.0}
    parent = _parent_dir(rd, lineage)
    if parent is None or parent.path.resolve() in _seen:
        before = [{"step": f"making {lineage.get('parent_name')}", "source": "run not found here, not counted",
                   "time_s": 0.0, "kwh": 0.0}]
    else:
        made = making_of(parent, parent.read_json(parent.metrics_path), _seen=_seen | {rd.path.resolve()})
        before = made.get("parts") or [{
            "step": f"training {parent.path.name}", "source": "train_time_s",
            "time_s": (made.get("time_s") or 0.0) * (made.get("processes") or 1),
            "kwh": (made.get("energy") or {}).get("kwh") or 0.0}]
    parts = [*before, own]
    kwh = sum(p["kwh"] for p in parts)
    return {"time_s": sum(p["time_s"] for p in parts), "processes": 1,
            "energy": {"kwh": kwh, "joules": kwh * 3.6e6},
            "basis": " + ".join(f"{p['step']} ({p['source']}, {p['time_s']:.1f} s)" for p in parts), "parts": parts}


def root_experiment(rd, name: str) -> str:
    """The experiment name of the trained run at the root of `rd`'s lineage (a distilled or pruned run trains
    under a config of its own name); `name` when the lineage cannot be followed to a trained run."""
    seen = set()
    while (lineage := rd.lineage()) and rd.path.resolve() not in seen:
        seen.add(rd.path.resolve())
        parent = _parent_dir(rd, lineage)
        if parent is None:
            return name
        rd = parent
    try:
        return rd.config().name
    except Exception:  # noqa: BLE001  (a damaged config.yaml of an ancestor: price the run by its own name)
        return name


def _parent_dir(rd, lineage: dict):
    """The parent run: where lineage says, else a folder of its name beside this run (runs moved together)."""
    from modelyard.runs import RunDir

    for candidate in (lineage.get("parent"), rd.path.parent / str(lineage.get("parent_name"))):
        if candidate and Path(candidate).is_dir() and (Path(candidate) / "metrics.json").is_file():
            return RunDir(candidate)
    return None


def measure_isolated(run: str | Path, *, budget_s: float = 20.0, iterations: int | None = None,
                     device: str = "cpu") -> dict:
    """`measure` in a fresh Python process, so its peak memory is this model's alone."""
    import subprocess

    fixed = [] if iterations is None else ["--iterations", str(iterations)]
    proc = subprocess.run([sys.executable, "-m", "modelyard.value.measure", str(run), "--budget", str(budget_s),
                           *fixed, "--device", device], capture_output=True, text=True)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise RunError(f"measuring {run} failed: {last.removeprefix('error: ')}")
    return json.loads(proc.stdout)


if __name__ == "__main__":
    import argparse

    from modelyard.errors import ModelyardError

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run")
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    try:
        print(json.dumps(measure(args.run, budget_s=args.budget, iterations=args.iterations, device=args.device)))
    except ModelyardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
