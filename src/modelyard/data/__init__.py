"""Data sources behind one registry, selected by the URI in `data.source`."""

from __future__ import annotations

import numpy as np

from modelyard.data import digits, imagefolder, mnist1d, tabular, text  # noqa: F401  (registers the sources)
from modelyard.data.base import DataBundle, RawData, sort_labels
from modelyard.data.preprocess import PREPROCESSORS, preprocessor_from_json
from modelyard.data.sources import SOURCES
from modelyard.data.split import split_off_val, stratified_split
from modelyard.errors import DataError

__all__ = ["DataBundle", "RawData", "SOURCES", "build_data", "read_source", "source_entry", "split_indices", "preprocessor_from_json"]


def source_entry(source: str):
    """The registry entry and argument for a `data.source` URI; its meta says the data's `kind`."""
    scheme, sep, arg = source.partition(":")
    if not sep or not arg:
        raise DataError(
            f"data.source {source!r} needs the form scheme:argument, e.g. builtin:digits, builtin:mnist1d, "
            "imagefolder:PATH or csv:PATH"
        )
    key = arg if scheme == "builtin" else scheme
    entry = SOURCES.get(key) if key in SOURCES else None
    if entry is None or entry.meta.get("builtin", False) != (scheme == "builtin"):
        builtins = ", ".join(f"builtin:{e.name}" for e in SOURCES if e.meta.get("builtin"))
        raise DataError(f"unknown data source {source!r}; use {builtins}, imagefolder:PATH or csv:PATH")
    return entry, arg


def read_source(source: str, cfg) -> RawData:
    """Read the raw examples named by a `data.source` URI such as `csv:data/iris.csv`."""
    entry, arg = source_entry(source)
    raw = entry.obj(arg, cfg)
    if len(raw) == 0:
        raise DataError(f"data source {source!r} holds no examples")
    return raw


def build_data(cfg, seed: int) -> DataBundle:
    """Read, split, fit preprocessing on the training split, and wrap each split as a dataset.

    Raises:
        DataError: naming the file, column, line or image at fault, and how to fix it.
    """
    raw = read_source(cfg.source, cfg)
    parts = split_indices(raw, cfg, seed)
    labels = sort_labels(raw.y[parts["train"]])
    index = {lab: i for i, lab in enumerate(labels)}
    for name in ("val", "test"):
        unseen = sorted({str(v) for v in raw.y[parts[name]]} - set(labels))
        if unseen:
            raise DataError(f"label(s) {unseen} appear in the {name} split but never in train; "
                            "add training examples of them or remove them")
        if len(parts[name]) == 0:
            raise DataError(f"the {name} split is empty; add data or change data.split")
    pre_cls = PREPROCESSORS.get(raw.kind).obj
    train_raw = raw.take(parts["train"])
    pre = pre_cls.fit(train_raw, cfg)
    sets = {}
    for name, idx in parts.items():
        part = train_raw if name == "train" else raw.take(idx)
        targets = np.array([index[v] for v in part.y])
        sets[name] = pre.dataset(part, targets, train=name == "train")
    return DataBundle(
        train=sets["train"], val=sets["val"], test=sets["test"], labels=labels,
        input_shape=tuple(pre.input_shape), preprocessor=pre,
        test_names=[raw.names[i] for i in parts["test"]], val_names=[raw.names[i] for i in parts["val"]],
        notes=list(raw.notes) + list(getattr(pre, "notes", [])),
        model_inputs=dict(getattr(pre, "model_inputs", {})),
        test_texts=[raw.x[i] for i in parts["test"]] if raw.kind == "text" else None,
    )


def split_indices(raw: RawData, cfg, seed: int) -> dict[str, np.ndarray]:
    s = cfg.split.seed if cfg.split.seed is not None else seed
    if raw.split is None:
        return stratified_split(raw.y, val=cfg.split.val, test=cfg.split.test, seed=s)
    idx = {name: np.flatnonzero(raw.split == name) for name in ("train", "val", "test")}
    if len(idx["train"]) == 0:
        raise DataError("the source's own split has no training examples")
    if len(idx["test"]) == 0:
        idx["train"], idx["test"] = split_off_val(raw.y, idx["train"], val=cfg.split.test, seed=s)
    if len(idx["val"]) == 0:
        idx["train"], idx["val"] = split_off_val(raw.y, idx["train"], val=cfg.split.val, seed=s)
    return idx
