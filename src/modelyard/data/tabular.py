"""csv:PATH - a table with a label column (`data.target`) and numeric or categorical feature columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from modelyard.data.base import RawData
from modelyard.data.preprocess import check_finite, read_csv, require_column, split_column_values
from modelyard.data.sources import register_source
from modelyard.errors import DataError

NUMERIC_SHARE = 0.9  # a text column whose values are this often numbers is a numeric column with typos


@register_source("csv", kinds=("tabular", "text"))
def csv_table(arg: str, cfg) -> RawData:
    path = Path(arg).expanduser()
    if cfg.text:
        from modelyard.data.text import text_table

        return text_table(path, cfg)
    frame = read_csv(path)
    if not cfg.target:
        raise DataError(f"data.target is not set; name the label column of {path} (columns: {list(frame.columns)})")
    wanted = [cfg.target] + list(cfg.features or []) + list(cfg.categorical)
    for col in wanted:
        require_column(frame, col, path)
    skip = {cfg.target, cfg.split_column}
    features = list(cfg.features) if cfg.features else [c for c in frame.columns if c not in skip]
    if not features:
        raise DataError(f"{path}: no feature columns besides the target {cfg.target!r}")
    notes: list[str] = []
    rows = np.arange(len(frame)) + 2  # file line numbers: the header is line 1

    y = frame[cfg.target]
    empty_y = y.isna().to_numpy()
    if empty_y.any():
        if cfg.nan_policy != "drop":
            raise DataError(f"{path}: the label column {cfg.target!r} is empty on {_lines(rows[empty_y])}; "
                            "fill them in or set data.nan_policy: drop")

    categorical = set(cfg.categorical)
    for col in features:
        if col in categorical or pd.api.types.is_numeric_dtype(frame[col]):
            continue
        values = frame[col].dropna()
        as_num = pd.to_numeric(values, errors="coerce")
        if len(values) and as_num.notna().mean() >= NUMERIC_SHARE:
            bad = values[as_num.isna()]
            raise DataError(
                f"{path}: column {col!r} is numeric but line {int(bad.index[0]) + 2} holds {bad.iloc[0]!r}, not a number; "
                f"fix the value, or list {col!r} in data.categorical to treat it as categories"
            )
        categorical.add(col)
    for col in features:
        if frame[col].isna().all() and cfg.nan_policy == "impute":
            raise DataError(f"{path}: column {col!r} is empty in every row, so there is no value to impute from; "
                            "fill it in, or remove it from the file or from data.features")
        if col not in categorical:
            check_finite(frame[col], col, str(path), lambda i: f"line {rows[i]}")

    holes = frame[features].isna().to_numpy()
    bad_rows = holes.any(axis=1) | empty_y
    if holes.any():
        cols = [c for c, n in zip(features, holes.sum(axis=0)) if n]
        if cfg.nan_policy == "error":
            raise DataError(
                f"{path}: missing values in column(s) {cols} on {_lines(rows[holes.any(axis=1)])}; "
                "fill them in, or set data.nan_policy to drop (remove those rows) or impute (median / most frequent)"
            )
    if cfg.nan_policy == "drop" and bad_rows.any():
        notes.append(f"dropped {int(bad_rows.sum())} row(s) with missing values (data.nan_policy: drop)")
        frame, rows = frame[~bad_rows].reset_index(drop=True), rows[~bad_rows]
    elif holes.any():
        notes.append(f"imputed {int(holes.sum())} missing value(s) from training-split statistics")
    if frame.empty:
        raise DataError(f"{path}: no rows left after dropping missing values")

    split = None
    if cfg.split_column:
        split = split_column_values(frame, cfg.split_column, path)
    return RawData(
        x=frame[features].reset_index(drop=True),
        y=frame[cfg.target].astype(str).to_numpy(),
        kind="tabular",
        split=split,
        names=[str(r) for r in rows],
        notes=notes,
        options={"categorical": sorted(categorical)},
    )


def _lines(lines: np.ndarray) -> str:
    """'line 4' or 'lines 4, 7, ... and 3 more'."""
    shown = ", ".join(str(int(r)) for r in lines[:5])
    more = f" and {len(lines) - 5} more" if len(lines) > 5 else ""
    return f"line{'s' * (len(lines) > 1)} {shown}{more}"
