"""Report figures, drawn with matplotlib's Agg backend (no display needed). Each returns a matplotlib Figure;
`page.png_bytes` turns it into the PNG a page embeds.

Every figure is titled with the question it answers (`TITLES`, which the pages also use as the images' alt text)
and is at most `page.MAX_FIGURE_PX` wide: the full-width ones 10 inches, the ones shown two to a row 5.2 inches.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import (ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay, auc,
                             average_precision_score, precision_recall_curve, roc_auc_score, roc_curve)

from modelyard.report.page import plt

FULL_WIDTH_IN = 10.0
HALF_WIDTH_IN = 5.2
MAX_CURVES = 5  # beyond this many classes, one curve per class is a tangle: draw the averages instead
_FAINT = {"color": "#bbb", "lw": 0.8, "alpha": 0.8}


TITLES = {  # figure name: (the question it answers, what it is)
    "learning_curves": ("Is the model still learning, or starting to over-fit?",
                        "learning curves: loss and accuracy per epoch"),
    "confusion_matrix": ("Which classes does it confuse?", "confusion matrix, test split"),
    "roc_curves": ("How well does it rank each class above the rest?", "ROC curves, test split, one-vs-rest"),
    "pr_curves": ("How much precision does each level of recall cost?", "precision-recall curves, test split"),
    "reliability": ("Is the model's confidence trustworthy?", "reliability diagram, test split"),
    "per_class_f1": ("Which classes does it get wrong most?", "F1 per class, test split, worst first"),
}


def title(name: str) -> str:
    """A figure's title on one line: "Which classes does it confuse? (confusion matrix, test split)"."""
    question, what = TITLES[name]
    return f"{question} ({what})"


def _title(ax_or_fig, name: str) -> None:
    text = "{}\n({})".format(*TITLES[name])
    if hasattr(ax_or_fig, "suptitle"):
        ax_or_fig.suptitle(text, fontsize=11)
    else:
        ax_or_fig.set_title(text, fontsize=11)


def _by_epoch(history: list[dict]) -> list[dict]:
    """One row per epoch, the last written winning (a resumed run may have rewritten an epoch)."""
    rows = {r["epoch"]: r for r in history}
    return [rows[e] for e in sorted(rows)]


def learning_curves(history: list[dict], *, best_epoch: int | None = None, monitor: str | None = None) -> Figure:
    """Loss and accuracy per epoch, train beside validation; a marker per epoch and a star on the kept epoch."""
    rows = _by_epoch(history)
    lm = any("val_perplexity" in r for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(FULL_WIDTH_IN, 4.0))
    _curve_panel(axes[0], rows, "loss", "loss (nats/token)" if lm else "cross-entropy loss", best_epoch, monitor)
    _curve_panel(axes[1], rows, "accuracy", "next-token accuracy" if lm else "accuracy", best_epoch, monitor)
    _title(fig, "learning_curves")
    fig.tight_layout()
    return fig


def _curve_panel(ax, rows: list[dict], key: str, ylabel: str, best_epoch: int | None, monitor: str | None) -> None:
    epochs = [r["epoch"] for r in rows]
    size = float(np.clip(150 / max(len(epochs), 1), 1.5, 5))  # markers stay apart however many epochs
    drawn = []
    for split, marker in (("train", "o"), ("val", "s")):
        values = np.array([np.nan if r.get(f"{split}_{key}") is None else r[f"{split}_{key}"] for r in rows])
        if np.isnan(values).all():
            continue
        drawn.append(values)
        ax.plot(epochs, values, marker=marker, ms=size, lw=1.2, label="train" if split == "train" else "validation")
    if best_epoch in epochs:
        kept = rows[epochs.index(best_epoch)]
        ax.axvline(best_epoch, color="#d62728", ls="--", lw=1)
        if kept.get(f"val_{key}") is not None:
            why = f", best {monitor}" if monitor else ""
            ax.plot([best_epoch], [kept[f"val_{key}"]], "*", color="#d62728", ms=13, zorder=5,
                    label=f"kept: epoch {best_epoch}{why}")
    finite = np.concatenate(drawn)[np.isfinite(np.concatenate(drawn))] if drawn else np.array([])
    if key == "loss" and finite.size and finite.min() > 0 and finite.max() / finite.min() > 10:
        ax.set_yscale("log")  # a first epoch's loss ten times the last would flatten every later epoch
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ylabel += " (log scale)"
    pad = max(0.3, 0.02 * (epochs[-1] - epochs[0]))  # the kept epoch's star is not cut at the edge
    ax.set(xlabel="epoch", ylabel=ylabel, xlim=(epochs[0] - pad, epochs[-1] + pad))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def confusion_matrix(cm: list[list[int]], labels: list[str]) -> Figure:
    """Counts of (true, predicted) on the test split; zero cells are left blank so the mistakes stand out."""
    cm = np.asarray(cm)
    n = len(labels)
    side = HALF_WIDTH_IN if n <= 12 else float(np.clip(0.25 * n + 2.5, HALF_WIDTH_IN, FULL_WIDTH_IN))
    fig, ax = plt.subplots(figsize=(side, side * 0.95))
    disp = ConfusionMatrixDisplay(cm, display_labels=labels)
    values = n <= 30
    # Without numbers in the cells, a square-root colour scale keeps a handful of mistakes visible beside the
    # diagonal's hundreds.
    longest = max((len(str(label)) for label in labels), default=0)
    rotation = "horizontal" if longest <= 3 else 45 if n <= 12 else "vertical"
    disp.plot(ax=ax, cmap="Blues", colorbar=False, include_values=values, xticks_rotation=rotation,
              text_kw={"fontsize": 8 if n <= 15 else 6}, im_kw=None if values else {"norm": PowerNorm(0.5)})
    if not values:
        fig.colorbar(disp.im_, ax=ax, fraction=0.03, pad=0.02, label="examples (square-root scale)")
    if disp.text_ is not None:
        for text, count in zip(disp.text_.ravel(), cm.ravel()):
            if count == 0:
                text.set_text("")
    fontsize = float(np.clip(300 / max(n, 1), 4, 9))
    ax.tick_params(labelsize=fontsize)
    if rotation == 45:
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set(xlabel="predicted", ylabel="true")
    _title(ax, "confusion_matrix")
    fig.tight_layout()
    return fig


def _scoreable(y: np.ndarray, c: int) -> bool:
    """A one-vs-rest curve needs both positives and negatives."""
    return bool((y == c).any() and (y != c).any())


def per_class_auc(y: np.ndarray, prob: np.ndarray, labels: list[str]) -> dict[str, dict]:
    """Per class, one-vs-rest: ROC AUC and average precision (None where the class is absent from `y`)."""
    out = {}
    for c, label in enumerate(labels):
        ok = _scoreable(y, c)
        out[label] = {"roc_auc": float(roc_auc_score(y == c, prob[:, c])) if ok else None,
                      "average_precision": float(average_precision_score(y == c, prob[:, c])) if ok else None}
    return out


def _curve_classes(labels: list[str]) -> list[int]:
    return [1] if len(labels) == 2 else list(range(len(labels)))


def roc_curves(y: np.ndarray, prob: np.ndarray, labels: list[str]) -> Figure:
    """One-vs-rest ROC: a curve per class up to `MAX_CURVES` classes, else micro- and macro-average curves over
    faint per-class ones. Every legend entry carries its AUC; when the curves hug the corner, an inset zooms in."""
    fig, ax = plt.subplots(figsize=(HALF_WIDTH_IN, 4.8))
    classes = [c for c in _curve_classes(labels) if _scoreable(y, c)]
    curves = []  # (fpr, tpr, colour): the ones the inset redraws
    if len(labels) <= MAX_CURVES:
        for c in classes:
            fpr, tpr, _ = roc_curve(y == c, prob[:, c])
            name = f"{labels[c]} (AUC = {auc(fpr, tpr):.4f})"
            curves.append(_draw(ax, RocCurveDisplay(fpr=fpr, tpr=tpr, name=name)))
    elif classes:
        per_class = [roc_curve(y == c, prob[:, c]) for c in classes]
        for i, (fpr, tpr, _) in enumerate(per_class):
            ax.plot(fpr, tpr, **_FAINT, label=None if i else f"each of {len(classes)} classes (table below)")
        onehot = np.eye(len(labels), dtype=bool)[y]
        fpr, tpr, _ = roc_curve(onehot.ravel(), prob.ravel())
        name = f"micro-average (AUC = {auc(fpr, tpr):.4f})"
        curves.append(_draw(ax, RocCurveDisplay(fpr=fpr, tpr=tpr, name=name)))
        grid, mean_tpr = macro_average_roc([(f, t) for f, t, _ in per_class])
        curves.append(_draw(ax, RocCurveDisplay(fpr=grid, tpr=mean_tpr,
                                                name=f"macro-average (AUC = {auc(grid, mean_tpr):.4f})")))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance (AUC = 0.5)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    if curves and min(auc(f, t) for f, t, _ in curves) >= 0.95:
        _corner_inset(ax, curves)
    _title(ax, "roc_curves")
    fig.tight_layout()
    return fig


def macro_average_roc(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ROC curves (FPR, TPR), point for point over every curve's breakpoints.

    A ROC curve has vertical steps (several TPRs at one FPR), so each breakpoint appears twice, with the mean TPR
    arriving at it and leaving it. Drawn that way the mean curve is exact: its area is the mean of the curves'
    areas, the macro-average AUC of the metrics table.
    """
    grid = np.unique(np.concatenate([f for f, _ in curves]))
    arriving, leaving = [], []
    for fpr, tpr in curves:
        xs, first = np.unique(fpr, return_index=True)
        last = len(fpr) - 1 - np.unique(fpr[::-1], return_index=True)[1]
        i = np.searchsorted(xs, grid, side="right") - 1  # the breakpoint at or left of each grid FPR
        on_vertex = xs[i] == grid
        j = np.minimum(i + 1, len(xs) - 1)
        span = np.where(on_vertex, 1.0, xs[j] - xs[i])
        between = tpr[last[i]] + (tpr[first[j]] - tpr[last[i]]) * (grid - xs[i]) / span
        arriving.append(np.where(on_vertex, tpr[first[i]], between))
        leaving.append(np.where(on_vertex, tpr[last[i]], between))
    fpr = np.repeat(grid, 2)
    tpr = np.column_stack([np.mean(arriving, axis=0), np.mean(leaving, axis=0)]).ravel()
    return fpr, tpr


def _draw(ax, display: RocCurveDisplay) -> tuple[np.ndarray, np.ndarray, str]:
    """Plot a ROC display on `ax`; its points and the colour it was given."""
    before = len(ax.lines)
    display.plot(ax=ax)
    return display.fpr, display.tpr, ax.lines[before].get_color()


def _corner_inset(ax, curves: list[tuple[np.ndarray, np.ndarray, str]]) -> None:
    """Good models' curves hug the top-left corner; redraw that corner (FPR <= 0.1, TPR >= 0.8) enlarged."""
    inset = ax.inset_axes([0.33, 0.36, 0.6, 0.4])
    for fpr, tpr, colour in curves:
        inset.plot(fpr, tpr, color=colour, lw=1.2)
    inset.set(xlim=(-0.002, 0.1), ylim=(0.8, 1.005))
    inset.tick_params(labelsize=7)
    inset.set_title("top-left corner, enlarged", fontsize=8)
    inset.grid(alpha=0.3)


def pr_curves(y: np.ndarray, prob: np.ndarray, labels: list[str]) -> Figure:
    """One-vs-rest precision-recall: a curve per class up to `MAX_CURVES` classes, else the micro-average curve
    over faint per-class ones. Legends carry the average precision (AP)."""
    fig, ax = plt.subplots(figsize=(HALF_WIDTH_IN, 4.8))
    classes = [c for c in _curve_classes(labels) if _scoreable(y, c)]
    if len(labels) <= MAX_CURVES:
        for c in classes:
            precision, recall, _ = precision_recall_curve(y == c, prob[:, c])
            ap = average_precision_score(y == c, prob[:, c])
            PrecisionRecallDisplay(precision, recall, name=f"{labels[c]} (AP = {ap:.4f})").plot(ax=ax)
    elif classes:
        macro_ap = np.mean([average_precision_score(y == c, prob[:, c]) for c in classes])
        for i, c in enumerate(classes):
            precision, recall, _ = precision_recall_curve(y == c, prob[:, c])
            ax.plot(recall, precision, **_FAINT, drawstyle="steps-post",
                    label=None if i else f"each of {len(classes)} classes: macro-average AP = {macro_ap:.4f}")
        onehot = np.eye(len(labels), dtype=bool)[y]
        precision, recall, _ = precision_recall_curve(onehot.ravel(), prob.ravel())
        micro_ap = average_precision_score(onehot, prob, average="micro")
        PrecisionRecallDisplay(precision, recall, name=f"micro-average (AP = {micro_ap:.4f})").plot(ax=ax)
    ax.set(xlabel="recall", ylabel="precision", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    _title(ax, "pr_curves")
    fig.tight_layout()
    return fig


def reliability_diagram(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> Figure:
    """Top-label reliability: accuracy against confidence in equal-width bins, and below it how many test examples
    each bin holds (a bin of 2 examples must not look as weighty as one of 200)."""
    conf = prob.max(axis=1)
    correct = (prob.argmax(axis=1) == y).astype(int)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(HALF_WIDTH_IN, 5.6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.2]})
    CalibrationDisplay.from_predictions(correct, conf, n_bins=bins, strategy="uniform", pos_label=1,
                                        name="model", ax=top)
    top.set(xlabel="", ylabel="accuracy in the bin", xlim=(0, 1), ylim=(0, 1.02))
    top.legend(fontsize=8, loc="upper left")
    top.grid(alpha=0.3)
    bottom.hist(conf, bins=np.linspace(0, 1, bins + 1), color="#1f77b4", alpha=0.7, edgecolor="k", lw=0.5)
    bottom.set_yscale("log")
    bottom.set_ylim(bottom=0.7)  # a bin of one example still shows
    bottom.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    bottom.set(xlabel="confidence (highest class probability)", ylabel="examples\n(log scale)")
    bottom.grid(alpha=0.3)
    _title(top, "reliability")
    fig.tight_layout()
    return fig


def per_class_f1(per_class: dict) -> Figure:
    """F1 per class, worst first, each bar labelled with its value."""
    labels = sorted(per_class, key=lambda k: (per_class[k]["f1"], k))
    fig, ax = plt.subplots(figsize=(HALF_WIDTH_IN, float(np.clip(0.28 * len(labels) + 1.6, 3.2, 30))))
    f1 = [per_class[k]["f1"] for k in labels]
    bars = ax.barh(range(len(labels)), f1, color="tab:green")
    ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_yticks(range(len(labels)), labels, fontsize=float(np.clip(300 / max(len(labels), 1), 5, 9)))
    ax.margins(y=0.01)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.12), xlabel="F1 (test)")
    ax.grid(alpha=0.3, axis="x")
    _title(ax, "per_class_f1")
    fig.tight_layout()
    return fig
