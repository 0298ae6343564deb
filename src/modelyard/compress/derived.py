"""Writing a derived run: the compressed model, scored on the parent's own val and test split, its size and
parameters beside the parent's, and both models' speed measured in this one process."""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from modelyard.runs import RunDir, utc_stamp

SPEED_BATCH = 32  # the batch size of the throughput figure the targets are stated at
# The derived model is written here and renamed to model/ once it is scored: a run stopped half-way has no model
# that evaluate, register or serve would take as finished.
STAGING = "model.partial"


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def write_derived(parent, derived: RunDir, compressed, *, speed_budget_s: float = 4.0,
                  speed_iterations: int | None = None) -> dict:
    """Save `compressed` into `derived`, score it on the parent's split, time both models; returns metrics.json."""
    from modelyard.artifact import load, save_artifact
    from modelyard.data.base import label_indices
    from modelyard.explain.reference import FILE as REFERENCE_FILE
    from modelyard.metrics import classification_report, headline_interval
    from modelyard.pipeline import write_predictions
    from modelyard.report.html import write_report

    t0 = time.perf_counter()
    cfg, meta = parent.cfg, parent.predictor.meta
    lineage = derived.lineage()
    derived.mark_running(started=utc_stamp())
    staged = derived.path / STAGING
    save_artifact(staged, compressed.adapter, model_cfg=cfg.model, input_shape=meta["input_shape"],
                  labels=meta["labels"], preprocessor=parent.predictor.preprocessor,
                  experiment=derived.path.name.rsplit("-", 1)[0], model_inputs=meta["model_inputs"],
                  extra={"lineage": {k: lineage[k] for k in ("parent_name", "method", "params")},
                         **compressed.meta})
    parent_reference = parent.predictor.model_dir / REFERENCE_FILE
    if parent_reference.is_file():  # the training split's mean input: the derived model explains from it too
        shutil.copyfile(parent_reference, staged / REFERENCE_FILE)
    model = load(staged)  # what serve and evaluate will load is what is scored here
    labels = model.labels
    predictions = {}
    for split in ("val", "test"):
        part = parent.split(split)
        y = label_indices(part.y, labels, where=f"the parent's {split} split")
        predictions[split] = (y, model.predict_raw(part), part.names or list(range(1, len(part) + 1)))
    metrics: dict = {split: classification_report(y, prob, labels, ece_bins=cfg.evaluate.ece_bins)
                     for split, (y, prob, _) in predictions.items()}
    y, prob, _ = predictions["test"]
    metrics["test"]["headline"] = headline_interval(cfg.evaluate.metric, y, prob, resamples=cfg.evaluate.bootstrap,
                                                    seed=cfg.seed)
    parent_metrics = parent.metrics
    sizes = model.adapter.count_parameters()
    metrics.update(
        method=lineage["method"], params=lineage["params"], parent=str(parent.run.path),
        parent_figures=parent_figures(parent, parent_metrics),
        bytes_on_disk=folder_bytes(staged), compress_time_s=time.perf_counter() - t0, notes=compressed.notes,
        speed=measure_pair(parent.predictor, model, parent.split("test").x, budget_s=speed_budget_s,
                           iterations=speed_iterations),
        train_time_s=parent_metrics.get("train_time_s"), epochs=0, monitor=None, **sizes, **compressed.facts)
    derived.write_json(derived.metrics_path, metrics)
    derived.predictions_dir.mkdir(exist_ok=True)
    for split, (y, prob, names) in predictions.items():
        write_predictions(derived.predictions_dir / f"{split}.csv", names, y, prob, labels)
    write_report(derived, cfg, metrics, [], predictions["test"], labels,
                 texts=parent.split("test").x if parent.predictor.preprocessor.kind == "text" else None,
                 model=model)  # model/ is filled after the report: its explanations take the staged model
    staged.rename(derived.model_dir)
    derived.set_status(status="completed", finished=utc_stamp())
    return metrics


def parent_figures(parent, parent_metrics: dict) -> dict:
    """The parent's test figures, parameters and size, for metrics.json to show beside the derived run's."""
    return {"test": {k: parent_metrics["test"].get(k) for k in ("accuracy", "f1_macro", "log_loss", "ece")},
            "parameters": parent_metrics.get("parameters"), "bytes_on_disk": folder_bytes(parent.predictor.model_dir)}


@contextmanager
def outcome_recorded(run: RunDir):
    """Record in run.json that making `run` was interrupted (Ctrl-C) or failed, with the error, and re-raise: a
    derived run stopped half-way must never read `completed`. Its half-written model is removed."""
    try:
        yield
    except BaseException as exc:
        run.set_status(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                       error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, finished=utc_stamp())
        shutil.rmtree(run.path / STAGING, ignore_errors=True)
        raise


def measure_pair(parent, model, pool, *, budget_s: float = 4.0, iterations: int | None = None) -> dict:
    """Batch-1 latency and batch-32 throughput of the parent and the derived model, raw inputs to probabilities,
    timed alternately in this process so both see the same machine load; with the machine and the ratios."""
    from modelyard.data.base import take
    from modelyard.machine import machine_info
    from modelyard.value.measure import repeat_until_stable

    n = len(pool)

    def batch(size: int, start: int = 0):
        return take(pool, np.arange(start, start + size) % n)

    figures = {"parent": {}, "this": {}}
    for who, predictor in (("parent", parent), ("this", model)):
        for i in range(3):  # warm-up: lazy initialisation, ONNX Runtime's first-run allocations
            predictor.predict_proba(batch(1, i))
    for size in (1, SPEED_BATCH):
        x = batch(size)
        for who, predictor in (("parent", parent), ("this", model)):
            times = repeat_until_stable(lambda: predictor.predict_proba(x), budget_s=budget_s,
                                        iterations=iterations, min_runs=5 if size == 1 else 3)
            median = float(np.median(times))
            if size == 1:
                figures[who]["latency_ms_batch1"] = median * 1000
            else:
                figures[who][f"throughput_batch{size}"] = size / median
    ratio = {"latency_batch1": figures["parent"]["latency_ms_batch1"] / figures["this"]["latency_ms_batch1"],
             f"throughput_batch{SPEED_BATCH}": figures["this"][f"throughput_batch{SPEED_BATCH}"]
             / figures["parent"][f"throughput_batch{SPEED_BATCH}"]}
    return {**figures, "ratio": ratio, "machine": machine_info(), "iterations": iterations, "budget_s": budget_s}


def finish_trained(parent, run: RunDir, method: str, params: dict, *, notes: list[str] = (), facts: dict | None = None,
                   speed_budget_s: float = 4.0, speed_iterations: int | None = None) -> dict:
    """Make a run that a method trained through the normal trainer (a distilled student, a pruned model's
    recovery) a derived run: check it was scored on the parent's exact split, record its lineage, and add the
    parent's figures and both models' speed to its metrics.json.

    Raises:
        RunError: the trained run's split differs from the parent's (its test figures would not compare).
    """
    from modelyard.artifact import load
    from modelyard.report.html import render_run

    run.mark_running()  # the trainer wrote `completed`; a stop before the lineage and figures are in must not read so
    with outcome_recorded(run):
        _check_same_split(parent, run)
        _record_lineage(parent, run, method, params)
        metrics = run.read_json(run.metrics_path)
        parent_metrics = parent.metrics
        model = load(run.path)
        metrics.update(
            method=method, params=dict(params), parent=str(parent.run.path),
            parent_figures=parent_figures(parent, parent_metrics),
            bytes_on_disk=folder_bytes(run.model_dir), notes=list(notes),
            speed=measure_pair(parent.predictor, model, parent.split("test").x, budget_s=speed_budget_s,
                               iterations=speed_iterations), **(facts or {}))
        run.write_json(run.metrics_path, metrics)
        render_run(run.path)  # the trainer wrote the report before the run had a lineage to show
    run.set_status(status="completed", finished=utc_stamp())
    return metrics


def _check_same_split(parent, run: RunDir) -> None:
    from modelyard.errors import RunError

    mine, theirs = run.splits(), parent.run.splits()
    if theirs is not None and (mine is None or mine["data_sha256"] != theirs["data_sha256"]
                               or mine["splits"] != theirs["splits"]):
        raise RunError(f"{run.path} was not trained on the split of {parent.run.path} (splits.json differs), so its "
                       "test figures would not compare with the parent's; keep the parent's data and seed")


def _record_lineage(parent, run: RunDir, method: str, params: dict) -> None:
    """The parent, method and parameters in run.json and in the model's modelyard.json."""
    import json

    folder = parent.run.path.resolve()  # `.` or `..` has no name of its own
    run.set_status(lineage={"parent": str(folder), "parent_name": folder.name, "method": method,
                            "params": dict(params), "created": utc_stamp()})
    meta_path = run.model_dir / "modelyard.json"
    meta = json.loads(meta_path.read_text())
    meta["lineage"] = {"parent_name": folder.name, "method": method, "params": dict(params)}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
