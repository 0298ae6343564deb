"""What every data source returns, and the bundle the trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from modelyard.errors import DataError


@dataclass
class RawData:
    """Examples before preprocessing, as the source read them.

    `x` is an array (N, ...), a list of file paths, or a DataFrame; `y` holds label strings.
    `split` holds "train"/"val"/"test" per example where the source defines its own split.
    """

    x: Any
    y: np.ndarray
    kind: str  # the preprocessor kind: image, sequence, tabular, text, corpus
    split: np.ndarray | None = None
    names: list[str] | None = None  # per-example ids shown in errors and predictions
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # source facts the preprocessor needs (pixel_max, ...)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> "RawData":
        return RawData(
            x=take(self.x, idx),
            y=self.y[idx],
            kind=self.kind,
            split=None if self.split is None else self.split[idx],
            names=None if self.names is None else [self.names[i] for i in idx],
            options=self.options,
        )


def fingerprint(raw: RawData) -> str:
    """A SHA-256 of the examples, labels and ids as read, in order: a run's split indices name the same examples
    only while this is unchanged. Image folders hash each file's path and size, not its pixels (fast on any size)."""
    import hashlib
    import os

    h = hashlib.sha256()

    def add(text: str) -> None:
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")

    add(f"{raw.kind}:{len(raw)}")
    x = raw.x
    if isinstance(x, pd.DataFrame):
        h.update(pd.util.hash_pandas_object(x, index=False).to_numpy().tobytes())
        add(",".join(map(str, x.columns)))
    elif isinstance(x, np.ndarray):
        h.update(np.ascontiguousarray(x).tobytes())
        add(str(x.dtype) + str(x.shape))
    else:
        for item in x:
            add(f"{item}:{os.path.getsize(item)}" if not isinstance(item, str) else item)
    for label in raw.y:
        add(str(label))
    for name in raw.names or []:
        add(str(name))
    return h.hexdigest()


def split_record(raw: RawData, parts: dict[str, np.ndarray], source: str) -> dict:
    """What a run stores in splits.json: the indices of each split among the source's examples, and the data's
    fingerprint, so evaluation and compression score exactly the examples training held out."""
    return {"source": source, "examples": len(raw), "data_sha256": fingerprint(raw),
            "splits": {name: [int(i) for i in idx] for name, idx in parts.items()}}


def take(x: Any, idx: np.ndarray) -> Any:
    if isinstance(x, pd.DataFrame):
        return x.iloc[idx].reset_index(drop=True)
    if isinstance(x, list):
        return [x[i] for i in idx]
    return x[idx]


def sort_labels(values) -> list[str]:
    """Numeric labels in numeric order (2 before 10), others alphabetically."""
    uniq = sorted({str(v) for v in values})
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


def label_indices(values, labels: list[str], *, where: str) -> np.ndarray:
    """Class indices of `values` among `labels`.

    Raises:
        DataError: `where` holds labels that are not among `labels`, named.
    """
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = sorted({str(v) for v in values} - index.keys())
    if unknown:
        raise DataError(f"{where} holds label(s) {unknown} the model never learnt (it knows {labels}); remove those "
                        "rows, or train a model that has seen them")
    return np.array([index[str(v)] for v in values], dtype=np.int64)


@dataclass
class DataBundle:
    """Preprocessed train/val/test datasets plus what a saved model needs to predict on its own."""

    train: Dataset
    val: Dataset
    test: Dataset | None  # None for a language-modelling corpus, scored on val
    labels: list[str]
    input_shape: tuple[int, ...]
    preprocessor: Any
    test_names: list[str]
    val_names: list[str]
    notes: list[str] = field(default_factory=list)
    model_inputs: dict = field(default_factory=dict)  # facts a model needs beyond the shape (vocab_size, pad_id)
    texts: dict[str, list[str]] | None = None  # text sets: raw texts per split (baselines, the report's examples)
    task: str = "classification"  # or "lm" (next-token prediction on a corpus)
    splits: dict | None = None  # `split_record`: what the run writes to splits.json

    @property
    def test_texts(self) -> list[str] | None:
        return None if self.texts is None else self.texts.get("test")
