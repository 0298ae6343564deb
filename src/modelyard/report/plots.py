"""Report figures, drawn with matplotlib's Agg backend (no display needed). Each returns PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from modelyard.metrics import reliability_bins  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def learning_curves(history: list[dict]) -> bytes:
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    a.plot(epochs, [r["val_loss"] for r in history], "s-", label="val")
    a.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    b.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train")
    b.plot(epochs, [r["val_accuracy"] for r in history], "s-", label="val")
    b.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(fig)


def confusion_matrix(cm: list[list[int]], labels: list[str]) -> bytes:
    cm = np.asarray(cm)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(cm, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def roc_curves(y: np.ndarray, prob: np.ndarray, labels: list[str]) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    classes = [1] if len(labels) == 2 else range(len(labels))
    for c in classes:
        if (y == c).any() and (y != c).any():
            fpr, tpr, _ = roc_curve(y == c, prob[:, c])
            ax.plot(fpr, tpr, lw=1.2, label=labels[c])
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curves (test, one-vs-rest)")
    if len(labels) <= 16:
        ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def reliability_diagram(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> bytes:
    rb = reliability_bins(y, prob, bins=bins)
    centers = (np.arange(bins) + 0.5) / bins
    acc = [a if a is not None else 0 for a in rb["accuracy"]]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.bar(centers, acc, width=1 / bins, edgecolor="k", alpha=0.7, label="accuracy")
    for c, a, n in zip(centers, acc, rb["count"]):
        if n:  # a bin of 2 examples must not look as weighty as one of 200
            ax.text(c, min(a, 0.9) + 0.02, f"n={n}", ha="center", fontsize=7, rotation=90)
    conf = [(c, x) for c, x in zip(centers, rb["confidence"]) if x is not None]
    ax.plot([c for c, _ in conf], [x for _, x in conf], "r.", label="mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title="Reliability diagram (test)")
    ax.legend(fontsize=8)
    return _png(fig)


def per_class_f1(per_class: dict) -> bytes:
    labels = list(per_class)
    fig, ax = plt.subplots(figsize=(max(5, 0.4 * len(labels) + 2), 3.5))
    ax.bar(labels, [per_class[k]["f1"] for k in labels], color="tab:green")
    ax.set(ylim=(0, 1.05), ylabel="F1", title="Per-class F1 (test)")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    return _png(fig)
