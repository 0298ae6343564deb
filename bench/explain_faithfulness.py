"""Faithfulness of every explanation method, per model family: deletion curves on a fixed sample of test examples.

For each input, its units (pixels, positions, tokens, words, columns) are replaced by the model's reference input
(the training mean image or sequence, the mean row, the mask token, a word outside the vocabulary), the most
attributed first, k from 0 to all in --curve-steps steps, and the model's probability of the explained class is
tracked; the same for 5 random orders. The figure is the mean area under the method's curves over random's (lower
is better; 1 is random). Targets (issue 15): the digits CNN's Integrated Gradients <= 0.3, MiniLM's <= 0.7; and
the model-randomisation sanity check (Adebayo et al., 2018): rank correlation with a re-initialised model's
attributions < 0.3.

Usage:
    python bench/explain_faithfulness.py --keep runs/bench-explain            # every model but MiniLM's n=200 cost
    python bench/explain_faithfulness.py --only minilm --n 20 --sanity-n 5     # MiniLM: 4-10 s per example
    python bench/explain_faithfulness.py --only digits,wine --n 200 --steps 50 --json out.json

Models (--only): digits (examples/digits-lenet.yaml), mnist1d (examples/mnist1d-cnn.yaml), wine (the wine table
of examples/tabular-mlp.yaml: its MLP, and a logistic regression for the exact linear method), tfidf and minilm
(finished debian-sections runs: --tfidf, --minilm). Runs it trains go into --keep and are reused from there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from _common import machine

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("digits", "mnist1d", "wine", "tfidf", "minilm")
TARGETS = {("digits-lenet", "integrated-gradients"): 0.3, ("debian-minilm", "integrated-gradients"): 0.7}
SANITY_TARGET = 0.3


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(m for m in MODELS if m != "minilm"),
                    help=f"comma-separated models out of {', '.join(MODELS)} (default: all but minilm)")
    ap.add_argument("--n", type=int, default=200, help="test examples per model (a seeded sample)")
    ap.add_argument("--keep", type=Path, default=ROOT / "runs" / "bench-explain",
                    help="folder holding the runs this script trains (reused when present)")
    ap.add_argument("--minilm", type=Path, default=Path("/work/keep/debian-minilm-20261129T093538Z"))
    ap.add_argument("--tfidf", type=Path, default=Path("/work/keep/debian-tfidf-20261129T093532Z"))
    ap.add_argument("--steps", type=int, default=50, help="Integrated Gradients' n_steps (every kind)")
    ap.add_argument("--curve-steps", type=int, default=20, help="points on each deletion curve after k = 0")
    ap.add_argument("--random-orders", type=int, default=5)
    ap.add_argument("--sanity-n", type=int, default=50, help="examples for the sanity check (0: skip it)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the sample and the random orders")
    ap.add_argument("--json", type=Path, help="also write every figure and mean curve here")
    return ap.parse_args()


# ---------------------------------------------------------------- the runs


def finished_run(keep: Path, name: str) -> Path | None:
    runs = sorted(p for p in keep.glob(f"{name}-2*") if (p / "model" / "modelyard.json").is_file())
    return runs[-1] if runs else None


def trained(keep: Path, cfg: dict) -> Path:
    """The newest finished run of `cfg` under keep, trained now when there is none."""
    import modelyard

    run = finished_run(keep, cfg["name"])
    if run is None:
        t0 = time.perf_counter()
        print(f"training {cfg['name']} into {keep} ...", file=sys.stderr, flush=True)
        run = modelyard.train(cfg, output=keep, quiet=True).path
        print(f"  {time.perf_counter() - t0:.0f} s: {run}", file=sys.stderr, flush=True)
    return run


def example(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def runs_for(model: str, args) -> list[Path]:
    if model == "digits":
        return [trained(args.keep, example("digits-lenet.yaml"))]
    if model == "mnist1d":
        return [trained(args.keep, example("mnist1d-cnn.yaml"))]
    if model == "wine":
        from modelyard.data.synthetic import write_wine_csv

        csv = args.keep / "data" / "wine.csv"
        if not csv.is_file():
            write_wine_csv(csv)
        mlp = example("tabular-mlp.yaml")
        mlp["data"]["source"] = f"csv:{csv}"
        logreg = {**mlp, "name": "wine-logreg", "model": {"name": "logreg"}}
        return [trained(args.keep, mlp), trained(args.keep, logreg)]
    run = args.tfidf if model == "tfidf" else args.minilm
    if not (run / "model" / "modelyard.json").is_file():
        print(f"skipped {model}: no finished run at {run}; pass --{model} RUN (a finished debian-sections run)",
              file=sys.stderr)
        return []
    return [run]


def test_sample(run: Path, n: int, seed: int):
    """A seeded sample of n examples of the run's own test split, as raw inputs (arrays, texts, rows)."""
    from modelyard.data import read_run_splits
    from modelyard.runs import RunDir

    raw, parts, _ = read_run_splits(RunDir.open(run))
    test = parts["test"]
    idx = np.sort(np.random.default_rng(seed).choice(test, min(n, len(test)), replace=False))
    x = raw.take(idx).x
    return x.reset_index(drop=True) if hasattr(x, "reset_index") else x


# ---------------------------------------------------------------- measuring


def method_params(method: str, args) -> dict:
    return {"n_steps": args.steps} if method == "integrated-gradients" else {}


def quality_figure(explanation, curves) -> str:
    """The method's own quality figure, median over inputs (IG: relative completeness gap), and how many of its
    maps are flat (nothing to order by)."""
    keys = sorted({k for it in explanation for k in it.quality})
    key = "relative_delta" if "relative_delta" in keys else (keys[0] if keys else None)
    parts = []
    if key:
        parts.append(f"{key} {statistics.median(it.quality[key] for it in explanation if key in it.quality):.3g}")
    if curves.flat:
        parts.append(f"{curves.flat} of {len(curves)} maps flat")
    return "; ".join(parts) or "-"


def score(predictor, experiment: str, x, method: str, args, earlier=None) -> tuple[dict, object]:
    """One method's row, and its curves (whose random curves the model's next method reuses: `earlier`)."""
    from modelyard.errors import ConfigError
    from modelyard.explain import explain
    from modelyard.explain.faithfulness import deletion_curves

    t0 = time.perf_counter()
    e = explain(predictor, x, method=method, **method_params(method, args))
    explain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    options = {"steps": args.curve_steps, "random_orders": args.random_orders, "seed": args.seed}
    d = None
    if earlier is not None:
        try:
            d = deletion_curves(predictor, e, x, random_from=earlier, **options)
        except ConfigError:  # another unit count (a cap on tokens): its random curves are its own
            pass
    if d is None:
        d = deletion_curves(predictor, e, x, **options)
    target = TARGETS.get((experiment, method))
    ratios = d.areas / np.maximum(d.random_areas, 1e-12)
    return {"model": experiment, "method": method, "n": len(d), "n_steps": e.settings.get("n_steps"),
            "area": d.area, "random_area": d.random_area, "ratio": d.ratio,
            "median_ratio": float(np.median(ratios)), "target": target,
            "pass": None if target is None else bool(d.ratio <= target), "s_per_example": explain_s / len(d),
            "scoring_s_per_example": (time.perf_counter() - t0) / len(d), "flat": d.flat,
            "quality": quality_figure(e, d),
            "fractions": d.fractions.tolist(), "mean_curve": d.mean_curve.tolist(),
            "mean_random_curve": d.mean_random_curve.tolist(), "settings": e.settings}, d


def sanity(predictor, experiment: str, x, method: str, args) -> dict:
    from modelyard.explain.faithfulness import sanity_check

    t0 = time.perf_counter()
    s = sanity_check(predictor, x[:args.sanity_n], method, seed=args.seed, **method_params(method, args))
    return {"model": experiment, "method": method, "n": len(s.spearman_per_input), "spearman": s.spearman,
            "spearman_abs": s.spearman_abs, "undefined": s.undefined, "pass": bool(s.spearman < SANITY_TARGET),
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- printing


def fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


HEAD = ("| model | method | n | n_steps | area (method) | area (random, mean of {r}) | ratio | median ratio | target "
        "| pass | s / example | quality (median) |")


def row(r: dict) -> str:
    verdict = "-" if r["pass"] is None else ("pass" if r["pass"] else "FAIL")
    target = "-" if r["target"] is None else f"<= {r['target']}"
    return (f"| {r['model']} | {r['method']} | {r['n']} | {r['n_steps'] or '-'} | {r['area']:.3f} | "
            f"{r['random_area']:.3f} | {r['ratio']:.3f} | {r['median_ratio']:.3f} | {target} | {verdict} | "
            f"{r['s_per_example']:.4f} | {r['quality']} |")


def sanity_row(r: dict) -> str:
    return (f"| {r['model']} | {r['method']} | {r['n']} | {r['spearman']:+.3f} | {r['spearman_abs']:+.3f} | "
            f"{r['undefined']} | < {SANITY_TARGET} | {'pass' if r['pass'] else 'FAIL'} | {r['seconds']:.1f} |")


def measure(model: str, args, results: list, sanity_jobs: list) -> None:
    """Every method that applies to the model's runs: a row each, printed as it comes; sanity checks queued."""
    import modelyard
    from modelyard.explain.base import EXPLAINERS, GRADIENT_FAMILIES, Subject, methods_for

    for run in runs_for(model, args):
        predictor = modelyard.load(run)
        subject = Subject(predictor)
        experiment = predictor.meta["experiment"]
        x = test_sample(run, args.n, args.seed)
        curves = None
        for method in methods_for(subject):
            r, curves = score(predictor, experiment, x, method, args, earlier=curves)
            results.append(r)
            print(row(r), flush=True)
        if subject.family in GRADIENT_FAMILIES and args.sanity_n:  # the issue asks for the digits CNN's
            sanity_jobs += [(predictor, experiment, x, m) for m in methods_for(subject)
                            if EXPLAINERS.get(m).obj.impls[subject.kind].needs in ("gradients", "conv")]


def main() -> None:
    args = parse_args()
    from modelyard.machine import machine_info

    chosen = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise SystemExit(f"--only {','.join(unknown)}: not a model here; choose from {', '.join(MODELS)}")
    print(f"machine: {machine()}")
    print(f"sample: {args.n} test examples per model (seed {args.seed}; fewer where the test split is smaller); "
          f"deletion curves of {args.curve_steps} steps, random = mean of {args.random_orders} seeded orders; "
          f"Integrated Gradients n_steps = {args.steps}\n", flush=True)
    results, checks, sanity_jobs = [], [], []
    print(HEAD.format(r=args.random_orders))
    print("|" + "---|" * HEAD.count(" | ") + "---|", flush=True)
    for model in chosen:
        measure(model, args, results, sanity_jobs)
    if sanity_jobs:
        print(f"\nSanity check (Adebayo et al., 2018): Spearman rank correlation of each input's attributions with "
              f"those of the same model with every layer re-initialised (seed {args.seed}), mean over the inputs "
              f"where neither map is flat; target < {SANITY_TARGET} (signed)\n")
        print("| model | method | n | spearman (signed) | spearman (absolute values) | flat maps (left out) | target "
              "| pass | seconds |")
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        for job in sanity_jobs:
            checks.append(sanity(*job, args))
            print(sanity_row(checks[-1]), flush=True)
    if results:
        ratios = [r["ratio"] for r in results]
        print(f"\n{len(ratios)} model/method pairs: ratio median {statistics.median(ratios):.3f}, mean "
              f"{statistics.mean(ratios):.3f}; seconds per example (explaining) median "
              f"{statistics.median(r['s_per_example'] for r in results):.4f}")
    for r in results + checks:
        if r["pass"] is False:
            print(f"missed: {r['model']} {r['method']}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                                         "deletion": results, "sanity": checks}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
