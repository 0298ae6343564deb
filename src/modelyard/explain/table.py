"""Explanations of table rows, one attribution per original column (a categorical column's one-hot slots are one
feature): KernelSHAP and permutation SHAP for any model, the exact attribution of a logistic regression, and
Integrated Gradients for models gradients flow through; plus global permutation importance on a run's test split.

SHAP's methods work in raw-column space: numeric columns as floats, categorical ones as integer codes into the
preprocessor's categories, decoded back to strings and passed through the model's own preprocessing, so a masked
column takes a value the training data held, never an average of one-hot slots. Their cost is the number of
coalitions times the background rows, per row explained: both are capped, and the settings say by how much.
"""

from __future__ import annotations

import html
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from modelyard.errors import ConfigError, DataError, ModelyardError, RunError
from modelyard.explain.base import (Attributions, MethodParams, View, convergence, register_explainer,
                                    register_view)

MAX_BACKGROUND = 100  # background rows: each costs a model evaluation per coalition (SHAP warns from 100 too)
MAX_EVALS = 10_000  # coalitions per row
MAX_TRAIN_ROWS = 5000  # training rows the background is summarised from: more change little and cost a full read
CHUNK_ROWS = 65_536  # masked rows decoded at once: KernelSHAP asks for up to MAX_EVALS x MAX_BACKGROUND per row
TOP_BARS = 15  # columns drawn by name in a row's chart; the rest share one bar

_TRAIN_CACHE: dict[str, tuple[np.ndarray | None, str]] = {}  # model folder -> encoded training rows: a server
# explains many requests with the same model


# ---------------------------------------------------------------- rows as numbers and back


class ColumnCodec:
    """Raw table rows <-> a float matrix (N, F) with one column per original column: numeric values as they are,
    categorical values as their index in the preprocessor's categories (-1: a category training never saw)."""

    def __init__(self, pre) -> None:
        self.pre = pre
        self.columns = pre.columns
        self.n_numeric = len(pre.numeric)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows -> (N, F); empty cells take the preprocessor's fill, as the model itself would read them."""
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        for j, (col, st) in enumerate(self.pre.numeric.items()):
            out[:, j] = pd.to_numeric(frame[col], errors="coerce").fillna(st["fill"]).to_numpy(np.float64)
        for j, (col, st) in enumerate(self.pre.categorical.items(), start=self.n_numeric):
            values = frame[col].where(frame[col].notna(), st["fill"]).astype(str)
            codes = {name: k for k, name in enumerate(st["categories"])}
            out[:, j] = values.map(codes).fillna(-1).to_numpy(np.float64)
        return out

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        """(N, F) -> rows the preprocessor reads; a code outside the categories becomes a value none of them is
        (the model sees all-zero one-hot slots, as for an unseen category)."""
        data = {}
        for j, col in enumerate(self.pre.numeric):
            data[col] = matrix[:, j]
        for j, (col, st) in enumerate(self.pre.categorical.items(), start=self.n_numeric):
            names = np.asarray([*st["categories"], _unseen(st["categories"])], dtype=object)
            codes = np.rint(matrix[:, j]).astype(np.int64)
            codes[(codes < 0) | (codes >= len(st["categories"]))] = len(st["categories"])
            data[col] = names[codes]
        return pd.DataFrame(data, columns=self.columns)


def _unseen(categories: list[str]) -> str:
    name = "(unseen)"
    while name in categories:
        name += "_"
    return name


def column_slots(pre) -> list[np.ndarray]:
    """For each original column, the indices of its slots in the preprocessed vector (one numeric slot, or a
    categorical column's one-hot block)."""
    slots, start = [], 0
    for _ in pre.numeric:
        slots.append(np.array([start]))
        start += 1
    for st in pre.categorical.values():
        n = len(st["categories"])
        slots.append(np.arange(start, start + n))
        start += n
    return slots


def per_column(values: np.ndarray, pre) -> np.ndarray:
    """(N, D) attributions per preprocessed slot -> (N, F) per original column."""
    return np.stack([values[:, idx].sum(axis=1) for idx in column_slots(pre)], axis=1)


def _target_proba(subject, codec: ColumnCodec):
    """f(encoded rows) -> (n, C) class probabilities, through the model's own preprocessing."""
    def f(matrix: np.ndarray) -> np.ndarray:
        matrix = np.atleast_2d(matrix)
        parts = [subject.proba(subject.predictor.transform(codec.decode(matrix[i:i + CHUNK_ROWS])))
                 for i in range(0, len(matrix), CHUNK_ROWS)]
        return np.concatenate(parts)

    return f


# ---------------------------------------------------------------- the background SHAP masks with


def training_rows(subject, codec: ColumnCodec) -> tuple[np.ndarray | None, str]:
    """The run's training split, encoded (a sample of MAX_TRAIN_ROWS at most), or None and why it is not there."""
    key = str(subject.predictor.model_dir.resolve())
    if key not in _TRAIN_CACHE:
        _TRAIN_CACHE[key] = _read_training_rows(subject, codec)
    return _TRAIN_CACHE[key]


def _read_training_rows(subject, codec: ColumnCodec) -> tuple[np.ndarray | None, str]:
    run = subject.run_dir
    if run is None:
        return None, "the model folder sits in no run directory"
    from modelyard.data import read_run_splits
    from modelyard.runs import RunDir

    try:
        raw, parts, _ = read_run_splits(RunDir.open(run))
        idx = parts["train"]
        if len(idx) > MAX_TRAIN_ROWS:
            idx = np.sort(np.random.default_rng(0).choice(idx, MAX_TRAIN_ROWS, replace=False))
        rows = codec.encode(raw.x.iloc[idx])
    except (ModelyardError, OSError, KeyError) as exc:
        return None, f"the run's training split could not be read: {exc}"
    if len(rows) == 0:
        return None, "the run's training split is empty"
    sampled = f", a sample of {len(idx):,} of {len(parts['train']):,}" if len(idx) < len(parts["train"]) else ""
    return rows, f"the training split ({len(rows):,} rows{sampled})"


def background_rows(subject, codec: ColumnCodec) -> tuple[np.ndarray, str]:
    """The rows SHAP masks columns with: the run's training split, else the reference row (and why)."""
    train, source = training_rows(subject, codec)
    if train is None:
        return codec.encode(subject.reference.value), f"{subject.reference.source} ({source})"
    return train, source


class ShapParams(MethodParams):
    background: int = Field(20, ge=1, le=MAX_BACKGROUND,
                            description="Background rows SHAP masks columns with (the cost grows with them).")
    max_evals: int | None = Field(None, ge=1, le=MAX_EVALS,
                                  description="Coalitions evaluated per row; default 2 x columns + 512.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seeds SHAP's sampling (NumPy's legacy generator's range).")


def summarise(shap, rows: np.ndarray, k: int, columns: list[str], source: str):
    """At most k weighted background rows for KernelSHAP (its `DenseData`): the distinct rows weighted by their
    counts when there are no more than k of them (exact), else shap.kmeans' k centres, each column rounded to a
    value the data holds (a categorical code stays a category)."""
    from shap.utils._legacy import DenseData  # the weighted data KernelExplainer reads and shap.kmeans returns

    distinct, counts = np.unique(rows, axis=0, return_counts=True)
    if len(distinct) <= k:
        return (DenseData(distinct, list(columns), None, counts.astype(np.float64)),
                f"the {len(distinct)} distinct rows of {source}, weighted by their counts")
    return (shap.kmeans(rows, k), f"a k-means summary (shap.kmeans) of {source} into {k} weighted rows, each "
                                  "column rounded to a value the data holds")


def _shap():
    """shap, imported without the deprecation warnings its plotting module raises on import."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap
    return shap


def default_evals(params: ShapParams, n_columns: int) -> int:
    return params.max_evals or min(2 * n_columns + 512, MAX_EVALS)


@contextmanager
def seeded(seed: int):
    """SHAP samples with NumPy's global generator: seed it for reproducible values, then put it back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _pick(values, target: np.ndarray) -> np.ndarray:
    """SHAP's values for every class, (N, F, C) or a list of C (N, F) -> (N, F) for each row's target."""
    values = np.stack(values, axis=-1) if isinstance(values, list) else np.asarray(values)
    return values[np.arange(len(target)), :, target]


ADDITIVITY_WARNING = 0.01  # probability: a gap past this says the model's outputs are not a function of the row


def additivity(subject, batch, values: np.ndarray, fx: np.ndarray, base: np.ndarray
               ) -> tuple[list[dict[str, float]], list[str]]:
    """SHAP's efficiency: attributions sum to f(x) - E[f(background)]. Each row's gap, and a note when one is
    large: a model whose output for a row depends on the rows evaluated beside it breaks the sum."""
    gaps = [float(abs(v.sum() - (f - b))) for v, f, b in zip(values, fx, base)]
    notes = []
    worst = int(np.argmax(gaps))
    if gaps[worst] > ADDITIVITY_WARNING:
        why = (" (dynamic int8 quantisation scales activations per batch, so a row's probability shifts with the "
               "rows beside it)" if subject.family == "torch-int8" else "")
        notes.append(f"attributions add up to f(x) - E[f(background)] only within {gaps[worst]:.3f} (row "
                     f"{batch.ids[worst]}): the model's probability for a row depends on the batch it is in{why}")
    return [{"additivity_gap": g} for g in gaps], notes


# ---------------------------------------------------------------- KernelSHAP and permutation SHAP


@register_explainer("kernel-shap", kinds=("tabular",), needs="forward", params=ShapParams,
                    summary="KernelSHAP (shap.KernelExplainer) in raw-column space against a k-means summary of the "
                            "training split; any model")
def kernel_shap(subject, batch, params: ShapParams) -> Attributions:
    shap = _shap()
    codec = ColumnCodec(subject.predictor.preprocessor)
    n_columns = len(codec.columns)
    train, source = background_rows(subject, codec)
    data, source = summarise(shap, train, params.background, codec.columns, source)
    background, weights = data.data, data.weights
    nsamples = default_evals(params, n_columns)
    f = _target_proba(subject, codec)
    rows = codec.encode(batch.raw)
    with seeded(params.seed), warnings.catch_warnings(record=True) as caught:
        # too few coalitions for the columns: shap warns on stderr (six lines amid the CLI's table); a note says it
        warnings.filterwarnings("always", message="Linear regression equation is singular")
        explainer = shap.KernelExplainer(f, data, link="identity")
        raw_values = explainer.shap_values(rows, nsamples=nsamples, l1_reg=False, silent=True)
    singular = any("equation is singular" in str(w.message) for w in caught)
    values = _pick(raw_values, batch.target)
    expected = np.average(f(background), axis=0, weights=weights)  # (C,)
    fx = f(rows)[np.arange(len(rows)), batch.target]
    exhaustive = 2 ** n_columns - 2
    settings = {"baseline": source, "background_rows": len(background),
                "nsamples": min(nsamples, exhaustive) if n_columns <= 30 else nsamples,
                "output": "probability of the target class", "l1_reg": "off (every column gets a value)"}
    quality, notes = additivity(subject, batch, values, fx, expected[batch.target])
    if n_columns <= 30 and nsamples < exhaustive:
        notes.append(f"KernelSHAP sampled {nsamples:,} of the {exhaustive:,} column coalitions per row (max_evals); "
                     "values are estimates: raise max_evals for steadier ones")
    if singular:
        notes.append(f"KernelSHAP's {nsamples:,} coalitions per row are too few to tell {n_columns} columns apart: "
                     "its values are a least-squares guess; raise max_evals")
    return Attributions(values=list(values), units=[list(codec.columns)] * len(batch), quality=quality, notes=notes,
                        settings=settings)


@register_explainer("permutation-shap", kinds=("tabular",), needs="forward", params=ShapParams,
                    summary="Permutation SHAP (shap.PermutationExplainer) in raw-column space, columns masked with "
                            "training rows; any model")
def permutation_shap(subject, batch, params: ShapParams) -> Attributions:
    shap = _shap()
    codec = ColumnCodec(subject.predictor.preprocessor)
    n_columns = len(codec.columns)
    max_evals = default_evals(params, n_columns)
    if max_evals < 2 * n_columns + 1:
        raise ConfigError(f"permutation-shap: max_evals {max_evals} is too low for {n_columns} columns; it needs at "
                          f"least 2 x columns + 1 = {2 * n_columns + 1}")
    train, source = background_rows(subject, codec)
    n_background = min(params.background, len(train))
    if n_background < len(train):
        source = f"{n_background} rows sampled from {source}"
    f = _target_proba(subject, codec)
    rows = codec.encode(batch.raw)
    with seeded(params.seed):
        masker = shap.maskers.Independent(train, max_samples=params.background)
        explainer = shap.PermutationExplainer(f, masker, feature_names=list(codec.columns), seed=params.seed)
        result = explainer(rows, max_evals=max_evals, silent=True)
    values = _pick(result.values, batch.target)
    base = np.asarray(result.base_values)[np.arange(len(rows)), batch.target]
    fx = f(rows)[np.arange(len(rows)), batch.target]
    permutations = max_evals // (2 * n_columns + 1)
    settings = {"baseline": source, "background_rows": n_background, "max_evals": max_evals,
                "permutations": f"{permutations} forward-and-back per row", "output": "probability of the target class"}
    quality, notes = additivity(subject, batch, values, fx, base)
    return Attributions(values=list(values), units=[list(codec.columns)] * len(batch), quality=quality, notes=notes,
                        settings=settings)


# ---------------------------------------------------------------- exact and gradient attributions


def _reference_x(subject):
    """The reference row through the model's preprocessing: (1, D)."""
    return subject.predictor.transform(subject.reference.value)


@register_explainer("linear", kinds=("tabular",), needs="linear", families=("torch",),
                    summary="exact: weight x (value - reference) summed over each column's slots, in logits")
def linear(subject, batch, params: MethodParams) -> Attributions:
    import torch

    pre = subject.predictor.preprocessor
    layers = [m for m in subject.module.modules() if isinstance(m, torch.nn.Linear)]
    if len(layers) != 1:
        raise ConfigError(f"--method linear needs a model with one linear layer, and {subject.model_name} has "
                          f"{len(layers)}; use kernel-shap")
    weight = layers[0].weight.detach().double().cpu().numpy()  # (C, D)
    x = batch.x.double().numpy()
    ref = _reference_x(subject)
    values = per_column(weight[batch.target] * (x - ref.double().numpy()), pre)  # (N, F)
    with torch.no_grad():
        logits = subject.logits(torch.cat([batch.x, ref])).double().cpu().numpy()
    rows = np.arange(len(batch))
    change = logits[rows, batch.target] - logits[-1, batch.target]
    quality = [{"completeness_gap": float(abs(v.sum() - c))} for v, c in zip(values, change)]
    return Attributions(values=list(values), units=[list(pre.columns)] * len(batch), quality=quality,
                        settings={"baseline": subject.reference.source, "output": "logit of the target class "
                                  "(exact: the values sum to logit(x) - logit(reference))"})


class IGParams(MethodParams):
    n_steps: int = Field(50, ge=1, le=2000, description="Integration steps.")
    internal_batch_size: int = Field(256, ge=1, description="Rows per forward pass (memory bound).")


@register_explainer("integrated-gradients", kinds=("tabular",), needs="gradients", params=IGParams,
                    summary="Captum Integrated Gradients from the reference row, summed over each column's slots")
def integrated_gradients(subject, batch, params: IGParams) -> Attributions:
    import torch
    from captum.attr import IntegratedGradients

    pre = subject.predictor.preprocessor
    device = subject.predictor.device
    x = batch.x.float().to(device)
    ref = _reference_x(subject).float().to(device)
    target = torch.as_tensor(batch.target, dtype=torch.long, device=device)
    ig = IntegratedGradients(subject.probabilities)
    attr, delta = ig.attribute(x, baselines=ref.expand_as(x), target=target, n_steps=params.n_steps,
                               internal_batch_size=params.internal_batch_size, return_convergence_delta=True)
    values = per_column(attr.detach().double().cpu().numpy(), pre)
    proba_ref = subject.proba(ref.cpu())[0]
    change = batch.proba[np.arange(len(batch)), batch.target] - proba_ref[batch.target]
    delta = delta.detach().double().cpu().numpy()
    quality = [convergence(d, c) for d, c in zip(delta, change)]
    return Attributions(values=list(values), units=[list(pre.columns)] * len(batch), quality=quality,
                        settings={"baseline": subject.reference.source, "n_steps": params.n_steps,
                                  "internal_batch_size": params.internal_batch_size,
                                  "output": "probability of the target class"})


# ---------------------------------------------------------------- global permutation importance


def permutation_importance(model_or_run, *, split: str = "test", n_repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """How much accuracy drops when one column's values are shuffled among the rows of the run's test split
    (scikit-learn's `permutation_importance`), per original column.

    Args:
        model_or_run: a run directory, its model folder, or a loaded `Predictor` of a table model.
        split: the run's split to score on.

    Returns:
        A DataFrame with columns feature, importance_mean, importance_std, the most important column first.

    Raises:
        ConfigError: the model does not read tables, or n_repeats is below 1.
        RunError: the model sits in no run, or the run has no such split (or an empty one).
        DataError: the run's data cannot be read, or changed since the run was trained.

    Example:
        >>> permutation_importance("runs/wine-mlp-20261129T100000Z").head(3)
    """
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    from modelyard.artifact import load
    from modelyard.explain.base import Subject

    if not isinstance(n_repeats, int) or n_repeats < 1:
        raise ConfigError(f"n_repeats must be a whole number of at least 1 (shuffles per column), not {n_repeats!r}")
    predictor = load(model_or_run) if isinstance(model_or_run, (str, Path)) else model_or_run
    pre = getattr(predictor, "preprocessor", None)
    kind = getattr(pre, "kind", "unknown")
    if kind != "tabular":
        raise ConfigError(f"permutation importance ranks table columns, and {predictor.model_dir} reads {kind} "
                          "inputs; use modelyard explain for a per-input explanation")
    rows, y, run = _split_rows(Subject(predictor), split)
    result = sk_permutation_importance(_scored(predictor), rows, y, scoring="accuracy", n_repeats=n_repeats,
                                       random_state=seed)
    frame = pd.DataFrame({"feature": list(rows.columns), "importance_mean": result.importances_mean,
                          "importance_std": result.importances_std})
    frame = frame.sort_values("importance_mean", ascending=False, kind="stable").reset_index(drop=True)
    frame.attrs.update(run=str(run), split=split, rows=len(rows), n_repeats=n_repeats, seed=seed)
    return frame


def _split_rows(subject, split: str) -> tuple[pd.DataFrame, np.ndarray, Path]:
    from modelyard.data import read_run_splits
    from modelyard.runs import RunDir

    run = subject.run_dir
    if run is None:
        raise RunError(f"{subject.predictor.model_dir} is a model folder with no run around it, and permutation "
                       f"importance scores the run's {split} split; pass the run directory `modelyard train` printed")
    try:
        raw, parts, _ = read_run_splits(RunDir.open(run))
    except DataError as exc:
        raise DataError(f"permutation importance reads run {run}'s {split} split, and its data cannot be read: "
                        f"{exc}") from None
    idx = parts.get(split)
    if idx is None or len(idx) == 0:
        held = ", ".join(f"{name} ({len(i)} rows)" for name, i in parts.items() if len(i)) or "none"
        raise RunError(f"run {run} has no {split} split (or an empty one), which permutation importance scores; "
                       f"splits it has: {held}. Pass split= one of them, or train the experiment with a {split} split")
    return raw.x.iloc[idx].reset_index(drop=True), np.asarray(raw.y[idx]).astype(str), run


def _scored(predictor):
    """The trained model as scikit-learn scores it: fit does nothing, predict goes through the preprocessing."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Scored(ClassifierMixin, BaseEstimator):
        def __init__(self, predictor=None) -> None:
            self.predictor = predictor

        def fit(self, X, y=None) -> "Scored":
            self.classes_ = np.asarray(self.predictor.labels)
            return self

        def predict(self, X) -> np.ndarray:
            return np.asarray(self.predictor.predict(X)).astype(str)

    return Scored(predictor).fit(None)


# ---------------------------------------------------------------- the view


class RowShown(list):
    """A row's raw values as strings (one per column), and the model's probabilities for it (the chart's title
    names the predicted class's)."""

    proba: np.ndarray


@register_view("tabular")
class TableView(View):
    @staticmethod
    def shown(subject, batch) -> list[RowShown]:
        columns = subject.predictor.preprocessor.columns
        out = []
        for i in range(len(batch)):
            row = RowShown(_cell(batch.raw[col].iloc[i]) for col in columns)
            row.proba = batch.proba[i]
            out.append(row)
        return out

    @staticmethod
    def fragment(explanation) -> str:
        from modelyard.report.page import figure, table

        parts = []
        for item in explanation:
            cells = _cells(item)
            order = np.argsort(-np.abs(item.values), kind="stable")
            rows = [[html.escape(item.units[j]), f'<td class="text">{html.escape(cells[j])}</td>',
                     f"{item.values[j]:+.4g}"] for j in order]
            quality = "; ".join(f"{k.replace('_', ' ')} {v:.2g}" for k, v in item.quality.items())
            caption = html.escape(f"Row {item.id}: {_title(item, explanation.method)}" + (f". {quality}" if quality
                                                                                           else ""))
            parts.append(f"<h3>Row {html.escape(item.id)}</h3>"
                         + figure(chart(item, explanation.method), f"attributions of row {item.id}", caption)
                         + table(["column", '<th class="text">value</th>', "attribution"], rows))
        return "".join(parts)

    @staticmethod
    def files(explanation, folder: Path) -> list[Path]:
        columns = list(explanation[0].units) if len(explanation) else []
        frame = pd.DataFrame([[it.id, it.predicted, it.target, it.probability, *it.values] for it in explanation],
                             columns=["id", "predicted", "target", "probability", *columns])
        written = [folder / "attributions.csv"]
        frame.to_csv(written[0], index=False)
        for i, item in enumerate(explanation):
            path = folder / f"{i + 1:03d}-{safe_name(item.id)}.png"
            path.write_bytes(chart(item, explanation.method))
            written.append(path)
        return written


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "(empty)"
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)


def _cells(item) -> list[str]:
    return list(item.shown) if item.shown is not None else [""] * len(item.values)


def safe_name(text: str, limit: int = 60) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")[:limit] or "row"


def _title(item, method: str) -> str:
    proba = getattr(item.shown, "proba", None)
    predicted = f"predicted {item.predicted}"
    if proba is not None:
        predicted += f" ({float(np.max(proba)):.2f})"
    return f"{predicted} · target {item.target} ({item.probability:.2f}) · {method}"


def bars(item) -> tuple[list[str], list[float]]:
    """A row's chart bars, largest |attribution| first: "column = value" for the TOP_BARS columns, then one bar
    summing the rest."""
    cells = _cells(item)
    order = np.argsort(-np.abs(item.values), kind="stable")
    shown, rest = order[:TOP_BARS], order[TOP_BARS:]
    labels = [f"{item.units[j]} = {cells[j]}" for j in shown]
    values = [float(item.values[j]) for j in shown]
    if len(rest):
        labels.append(f"other {len(rest)} column{'s' * (len(rest) > 1)}")
        values.append(float(item.values[rest].sum()))
    return labels, values


def chart(item, method: str) -> bytes:
    """A horizontal bar per column, largest |attribution| on top: green toward the target, red against."""
    import matplotlib.pyplot as plt

    from modelyard.report.page import png_bytes

    labels, values = bars(item)
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.32 * len(values)))
    y = np.arange(len(values))
    ax.barh(y, values, color=["#2a9d3a" if v >= 0 else "#d62728" for v in values])
    ax.set_yticks(y, [_plain(label) for label in labels], fontsize=9)
    ax.invert_yaxis()
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.set_xlabel("attribution (toward the target +, against -)", fontsize=9)
    ax.set_title(_plain(_title(item, method), limit=120), fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def _plain(text: str, limit: int = 48) -> str:
    """Text from the data as matplotlib draws it literally ("$" would start mathtext), shortened to `limit`."""
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("$", r"\$")
