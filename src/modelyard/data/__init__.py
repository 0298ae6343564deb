"""Data sources behind one registry, selected by the URI in `data.source`."""

from __future__ import annotations

import numpy as np

from modelyard.data import corpus, digits, imagefolder, mnist1d, tabular, text  # noqa: F401  (registers the sources)
from modelyard.data.base import DataBundle, RawData, fingerprint, label_indices, sort_labels, split_record
from modelyard.data.preprocess import PREPROCESSORS, preprocessor_from_json
from modelyard.data.sources import SOURCES
from modelyard.data.split import split_off_val, stratified_split
from modelyard.errors import DataError, RunError

__all__ = ["DataBundle", "RawData", "SOURCES", "build_data", "read_splits", "read_run_splits", "read_source", "source_entry", "split_indices",
           "preprocessor_from_json"]


def source_entry(source: str):
    """The registry entry and argument for a `data.source` URI; its meta says the data's `kind`."""
    scheme, sep, arg = source.partition(":")
    if not sep or not arg:
        raise DataError(
            f"data.source {source!r} needs the form scheme:argument, e.g. builtin:digits, builtin:mnist1d, "
            "imagefolder:PATH, csv:PATH or text:PATH"
        )
    key = arg if scheme == "builtin" else scheme
    entry = SOURCES.get(key) if key in SOURCES else None
    if entry is None or entry.meta.get("builtin", False) != (scheme == "builtin"):
        builtins = ", ".join(f"builtin:{e.name}" for e in SOURCES if e.meta.get("builtin"))
        raise DataError(f"unknown data source {source!r}; use {builtins}, imagefolder:PATH, csv:PATH or text:PATH")
    return entry, arg


def read_source(source: str, cfg) -> RawData:
    """Read the raw examples named by a `data.source` URI such as `csv:data/iris.csv`."""
    entry, arg = source_entry(source)
    raw = entry.obj(arg, cfg)
    if len(raw) == 0:
        raise DataError(f"data source {source!r} holds no examples")
    return raw


def read_splits(cfg, seed: int) -> tuple[RawData, dict[str, np.ndarray], list[str]]:
    """The raw examples, the indices of each split, and the label names (sorted, from the training split).

    A language-modelling corpus has no labels and no test split: it is scored on its validation split.
    """
    raw = read_source(cfg.source, cfg)
    if raw.kind == "corpus":
        parts = split_indices(raw, cfg, seed, test=False)
        if len(parts["val"]) == 0:
            raise DataError("the corpus has no validation documents; add lines of text or raise data.split.val")
        return raw, parts, []
    classes = sort_labels(raw.y)
    if len(classes) < 2:
        what = f"the label column {cfg.target!r}" if cfg.target else "the data"
        raise DataError(f"{cfg.source}: {what} holds only one class ({classes[0]!r}); a classifier needs at least "
                        "two: add examples of another class")
    try:
        parts = split_indices(raw, cfg, seed)
    except DataError as exc:
        raise DataError(f"{cfg.source}: {exc}") from None
    labels = sort_labels(raw.y[parts["train"]])
    for name in ("val", "test"):
        unseen = sorted({str(v) for v in raw.y[parts[name]]} - set(labels))
        if unseen:
            raise DataError(f"label(s) {unseen} appear in the {name} split but never in train; "
                            "add training examples of them or remove them")
        if len(parts[name]) == 0:
            raise DataError(f"the {name} split is empty; add data or change data.split")
    return raw, parts, labels


def read_run_splits(run) -> tuple[RawData, dict[str, np.ndarray], list[str]]:
    """The run's raw examples and the exact split it was trained with (its splits.json), after checking the data
    is the same as then; runs written before splits.json existed re-derive the split from config and seed.

    Args:
        run: a `runs.RunDir`.

    Raises:
        DataError: the data changed since the run was trained (its split would name other examples).
        RunError: splits.json is damaged.
    """
    record = run.splits()
    cfg = run.config()
    if record is None:
        return read_splits(cfg.data, cfg.seed)
    raw = read_source(cfg.data.source, cfg.data)
    if len(raw) != record["examples"] or fingerprint(raw) != record["data_sha256"]:
        raise DataError(f"{cfg.data.source} is not the data run {run.path} was trained on ({len(raw)} examples now, "
                        f"{record['examples']} then, and their SHA-256 differs from splits.json's): its test split "
                        "would name other examples. Restore that data, or train the experiment anew on this data")
    parts = {name: np.asarray(idx, dtype=np.int64) for name, idx in record["splits"].items()}
    if raw.kind != "corpus" and "test" not in parts:
        raise RunError(f"{run.splits_path} has no test split, which a classifier's run always records; the file was "
                       "edited or damaged: delete it to re-derive the split from config.yaml and seed")
    labels = sort_labels(raw.y[parts["train"]]) if raw.kind != "corpus" else []
    return raw, parts, labels


def build_data(cfg, seed: int, pretrained=None) -> DataBundle:
    """Read, split, fit preprocessing on the training split, and wrap each split as a dataset.

    Args:
        pretrained: a pre-trained model's own tokeniser (`data.text.PretrainedTokenizer`), used instead of
            training one on the training split.

    Raises:
        DataError: naming the file, column, line or image at fault, and how to fix it.
    """
    raw, parts, labels = read_splits(cfg, seed)
    pre_cls = PREPROCESSORS.get(raw.kind).obj
    train_raw = raw.take(parts["train"])
    pre = pre_cls.fit(train_raw, cfg, pretrained) if pretrained is not None else pre_cls.fit(train_raw, cfg)
    sets = {}
    for name, idx in parts.items():
        part = train_raw if name == "train" else raw.take(idx)
        # read_splits has checked that train holds every label; a corpus has none (its targets are the text)
        targets = label_indices(part.y, labels, where=f"the {name} split") if labels else np.zeros(len(part), int)
        sets[name] = pre.dataset(part, targets, train=name == "train")
    texts = isinstance(raw.x, list) and raw.kind in ("text", "corpus")
    return DataBundle(
        train=sets["train"], val=sets["val"], test=sets.get("test"), labels=labels,
        input_shape=tuple(pre.input_shape), preprocessor=pre,
        test_names=[raw.names[i] for i in parts.get("test", [])], val_names=[raw.names[i] for i in parts["val"]],
        notes=list(raw.notes) + list(getattr(pre, "notes", [])),
        model_inputs=dict(getattr(pre, "model_inputs", {})),
        texts={name: [raw.x[i] for i in idx] for name, idx in parts.items()} if texts else None,
        task="lm" if raw.kind == "corpus" else "classification",
        splits=split_record(raw, parts, cfg.source),
    )


def split_indices(raw: RawData, cfg, seed: int, *, test: bool = True) -> dict[str, np.ndarray]:
    s = cfg.split.seed if cfg.split.seed is not None else seed
    if not test:  # a corpus: train and val only, documents drawn at random
        if raw.split is not None:
            return {name: np.flatnonzero(raw.split == name) for name in ("train", "val")}
        order = np.random.default_rng(s).permutation(len(raw))
        n_val = max(1, round(cfg.split.val * len(raw))) if len(raw) > 1 else 0
        return {"train": np.sort(order[n_val:]), "val": np.sort(order[:n_val])}
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
