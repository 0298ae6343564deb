"""The reference input that stands for "feature absent": Integrated Gradients' baseline, occlusion's and the
deletion curve's fill.

One reference per model, and the same for the method and its scoring: a zero fill scored against a zero
baseline flatters the method (the issue's quick check: 0.91 of random's area with a zero baseline, 0.155 with
the mean image). Images and sequences: the training split's mean, read from the run's own split; tables: the
training mean of each numeric column and the most frequent value of each categorical one (both in the model's
preprocessing already); text: the tokeniser's mask token, else its unknown token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_REFERENCE_EXAMPLES = 5000  # a mean over more training images changes little and costs a full read

_CACHE: dict[tuple[str, str], "Reference"] = {}  # model folder -> its reference: a server explains many requests


@dataclass
class Reference:
    """value: (C, H, W) or (1, L) tensor in preprocessed units; a one-row DataFrame of raw values (tables); a token
    id (text read as ids) or a word no vocabulary holds (TF-IDF). source says what it is, for the settings."""

    value: Any
    source: str


def reference(subject) -> Reference:
    key = (str(subject.predictor.model_dir.resolve()), subject.kind)
    if key not in _CACHE:
        _CACHE[key] = {"image": _mean_input, "sequence": _mean_input, "tabular": _mean_row,
                       "text": _absent_token}[subject.kind](subject)
    return _CACHE[key]


def _mean_input(subject) -> Reference:
    """The training split's mean image or sequence, in the model's preprocessed units."""
    import torch

    from modelyard.errors import ModelyardError

    pre = subject.predictor.preprocessor
    what = "image" if subject.kind == "image" else "sequence"
    fallback = Reference(torch.zeros(tuple(pre.input_shape)),
                         f"the training data's per-channel mean {what} (0 after standardisation)")
    run = subject.run_dir
    if run is None:
        return fallback
    from modelyard.data import read_run_splits
    from modelyard.runs import RunDir

    try:
        raw, parts, _ = read_run_splits(RunDir.open(run))
    except (ModelyardError, OSError) as exc:
        fallback.source += f" (the run's training split could not be read: {exc})"
        return fallback
    idx = parts["train"]
    if len(idx) > MAX_REFERENCE_EXAMPLES:
        idx = np.sort(np.random.default_rng(0).choice(idx, MAX_REFERENCE_EXAMPLES, replace=False))
    train = raw.take(idx)
    total = None
    for start in range(0, len(train), 512):
        x = pre.transform(_take(train.x, slice(start, start + 512))).double()
        total = x.sum(dim=0) if total is None else total + x.sum(dim=0)
    sampled = f", a sample of {len(idx):,} of {len(parts['train']):,}" if len(idx) < len(parts["train"]) else ""
    return Reference((total / len(idx)).float(), f"the training split's mean {what} ({len(idx):,} examples{sampled})")


def _take(x, part: slice):
    return x[part] if not isinstance(x, list) else list(x[part])


def _mean_row(subject) -> Reference:
    import pandas as pd

    pre = subject.predictor.preprocessor
    row = {col: st["mean"] for col, st in pre.numeric.items()}
    row.update({col: st["fill"] for col, st in pre.categorical.items()})
    return Reference(pd.DataFrame([row], columns=pre.columns),
                     "the training split's mean row (numeric columns' mean, categorical columns' most frequent value)")


def _absent_token(subject) -> Reference:
    tok = subject.predictor.preprocessor.tokenizer
    if tok is None:  # TF-IDF reads words: a word outside its vocabulary adds no feature
        return Reference("[UNK]", "a word outside the vocabulary (adds no feature)")
    for name in ("[MASK]", "<mask>"):
        if tok.token_to_id(name) is not None:
            return Reference(tok.token_to_id(name), f"the tokeniser's mask token {name}")
    for name in (getattr(tok.model, "unk_token", None), "[UNK]", "<unk>"):
        if name and tok.token_to_id(name) is not None:
            return Reference(tok.token_to_id(name), f"the tokeniser's unknown token {name}")
    return Reference(0, "token id 0 (the tokeniser has neither a mask nor an unknown token)")
