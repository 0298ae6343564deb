"""`evaluate()`: score a saved model on its own test split or on another dataset of the same kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from modelyard.errors import DataError


def evaluate(run: str | Path, *, data: str | None = None, bootstrap: int | None = None) -> dict:
    """Metrics of the run's saved model.

    Args:
        run: a run directory.
        data: a `data.source` URI (e.g. ``csv:new.csv``) whose every example is scored; default: the run's
            own test split, re-derived from its config and seed.
        bootstrap: resamples for the headline interval (default: the run's `evaluate.bootstrap`).

    Returns:
        `classification_report(...)` plus `headline` (with its bootstrap interval), `source` and `split`.

    Raises:
        DataError: the data holds labels the model never learnt, or cannot be read.
    """
    from modelyard.artifact import load
    from modelyard.config import load_config, resolve_source
    from modelyard.data import read_source, read_splits, source_entry
    from modelyard.data.base import label_indices
    from modelyard.metrics import bootstrap_ci, classification_report
    from modelyard.runs import RunDir

    rd = RunDir.open(run)
    cfg = load_config(yaml.safe_load(rd.config_path.read_text()))
    predictor = load(rd.path)
    lm = predictor.meta.get("task") == "lm"
    if data is None:
        raw, parts, _ = read_splits(cfg.data, cfg.seed)
        split = "val" if lm else "test"  # a corpus has no test split
        raw, source = raw.take(parts[split]), cfg.data.source
    else:
        data = resolve_source(data, Path.cwd())
        kinds = source_entry(data)[0].meta["kinds"]
        if predictor.preprocessor.kind not in kinds:
            raise DataError(f"{data} holds {' or '.join(kinds)} data but the model reads {predictor.preprocessor.kind} data")
        raw = read_source(data, cfg.data.model_copy(update={"source": data, "split_column": None}))
        source, split = data, "all"
    if lm:
        ppl = predictor.perplexity(raw.x)
        return {"perplexity": ppl, "loss": float(np.log(ppl)), "documents": len(raw), "source": source,
                "split": split, "run": str(rd.path)}
    y = label_indices(raw.y, predictor.labels, where=source)
    prob = predictor.predict_raw(raw)
    report = classification_report(y, prob, predictor.labels, ece_bins=cfg.evaluate.ece_bins)
    resamples = cfg.evaluate.bootstrap if bootstrap is None else bootstrap
    report["headline"] = bootstrap_ci(cfg.evaluate.metric, y, prob, resamples=resamples, seed=cfg.seed)
    report.update(source=source, split=split, run=str(rd.path))
    return report
