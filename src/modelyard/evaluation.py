"""`evaluate()`: score a saved model on its own test split or on another dataset of the same kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelyard.errors import DataError

# The builtin text source's own column names: what a new CSV names its columns when the run read builtin data.
BUILTIN_TEXT_COLUMN, BUILTIN_LABEL_COLUMN = "text", "label"


def evaluate(run: str | Path, *, data: str | None = None, bootstrap: int | None = None) -> dict:
    """Metrics of the run's saved model.

    Args:
        run: a run directory.
        data: a `data.source` URI (e.g. ``csv:new.csv``) whose every example is scored; default: the run's
            own test split, exactly as splits.json records it (re-derived from config and seed for runs
            written before splits.json existed). A CSV is read with the run's own columns:
            its label column (`data.target`), its text column or the feature columns the model was trained
            on (other columns are ignored), and labels are matched to the model's own label order.
        bootstrap: resamples for the headline interval of a metric that is not a proportion (default: the
            run's `evaluate.bootstrap`); accuracy's exact binomial interval needs none.

    Returns:
        `classification_report(...)` plus `headline` (the metric, its interval and the interval's method),
        `source` and `split`.

    Raises:
        DataError: the data lacks a column the model was trained with, holds labels the model never learnt,
            or cannot be read.

    Example:
        >>> modelyard.evaluate("runs/wine-20261122T060000Z", data="csv:wine-2027.csv")["accuracy"]
    """
    if data is not None and not isinstance(data, str):
        raise TypeError(f"evaluate(data=...) takes a data.source string such as 'csv:new.csv', not a "
                        f"{type(data).__name__}; write the rows to a CSV first, or use modelyard.load(run).predict_proba")
    from modelyard.artifact import load
    from modelyard.config import load_config, resolve_source
    from modelyard.data import read_run_splits, read_source, source_entry
    from modelyard.data.base import label_indices
    from modelyard.metrics import classification_report, headline_interval
    from modelyard.runs import RunDir

    rd = RunDir.open(run)
    cfg = load_config(rd.config_path)  # a damaged config.yaml is a ConfigError naming the line
    predictor = load(rd.path)
    lm = predictor.task == "lm"
    if data is None:
        raw, parts, _ = read_run_splits(rd)
        split = "val" if lm else "test"  # a corpus has no test split
        raw, source = raw.take(parts[split]), cfg.data.source
    else:
        data = resolve_source(data, Path.cwd())
        kinds = source_entry(data)[0].meta["kinds"]
        if predictor.preprocessor.kind not in kinds:
            raise DataError(f"{data} holds {' or '.join(kinds)} data but the model reads {predictor.preprocessor.kind} data")
        raw = read_source(data, data_section_for(data, cfg.data, predictor.preprocessor, run=rd.path))
        source, split = data, "all"
    if lm:
        ppl = predictor.perplexity(raw.x)
        return {"perplexity": ppl, "loss": float(np.log(ppl)), "documents": len(raw), "source": source,
                "split": split, "run": str(rd.path)}
    y = label_indices(raw.y, predictor.labels, where=source)
    prob = predictor.predict_raw(raw)
    report = classification_report(y, prob, predictor.labels, ece_bins=cfg.evaluate.ece_bins)
    resamples = cfg.evaluate.bootstrap if bootstrap is None else bootstrap
    report["headline"] = headline_interval(cfg.evaluate.metric, y, prob, resamples=resamples, seed=cfg.seed)
    report.update(source=source, split=split, run=str(rd.path))
    return report


def data_section_for(source: str, trained, preprocessor, *, run: Path | str = "the run"):
    """The run's `data` section pointed at a new source, so the new file is read as the training data was.

    A CSV keeps the run's label column and missing-value policy, and takes its text column or feature columns
    (numeric and categorical, as fitted) from the saved preprocessor; the split column is dropped, since every
    example is scored. A run trained on builtin text reads the builtin's own column names, `text` and `label`.

    Raises:
        DataError: the CSV lacks one of those columns; the message names each with its role and the file's columns.
    """
    update: dict = {"source": source, "split_column": None}
    scheme, _, arg = source.partition(":")
    if scheme != "csv":
        return trained.model_copy(update=update)
    target = trained.target or BUILTIN_LABEL_COLUMN
    needed = {target: "label column (data.target)"}
    if preprocessor.kind == "tabular":
        update.update(text=None, features=list(preprocessor.columns), categorical=list(preprocessor.categorical))
        needed.update({col: "feature" for col in preprocessor.columns})
    else:
        text = trained.text or getattr(preprocessor, "text_column", None) or BUILTIN_TEXT_COLUMN
        update["text"] = text
        needed[text] = "text column (data.text)"
    update["target"] = target
    _require_header(Path(arg).expanduser(), needed, run)
    return trained.model_copy(update=update)


def _require_header(path: Path, needed: dict[str, str], run: Path | str) -> None:
    import pandas as pd

    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError):  # missing, empty or unparsable: reading the source reports it
        return
    missing = [f"{col!r} ({role})" for col, role in needed.items() if col not in header]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)} that the model of {run} was trained with; "
                        f"the file has {header}. Rename or add those columns to score it")
