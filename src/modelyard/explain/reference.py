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
from pathlib import Path
from typing import Any

import numpy as np

FILE = "explain-reference.safetensors"  # in the model folder: a registered copy has no run to compute it from
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
    """The training split's mean image or sequence, in the model's preprocessed units: from the model folder
    (written at training), else from the run's own split, else the per-channel mean (0 once standardised)."""
    import torch

    from modelyard.errors import ModelyardError

    pre = subject.predictor.preprocessor
    what = "image" if subject.kind == "image" else "sequence"
    saved = _read_saved(subject.predictor.model_dir / FILE, tuple(pre.input_shape))
    if saved is not None:
        value, n = saved
        return Reference(value, f"the training split's mean {what} ({n})")
    fallback = Reference(torch.zeros(tuple(pre.input_shape)),
                         f"the training data's per-channel mean {what} (0 after standardisation)")
    if subject.run_dir is None:
        fallback.source += " (the model folder holds no mean input and has no run around it)"
        return fallback
    try:
        value, n = mean_input(subject.run_dir, pre)
    except (ModelyardError, OSError) as exc:
        fallback.source += f" (the run's training split could not be read: {exc})"
        return fallback
    return Reference(value, f"the training split's mean {what} ({n})")


def mean_input(run_dir, pre):
    """(the mean of the run's training split through `pre`, a phrase saying over how many examples)."""
    from modelyard.data import read_run_splits
    from modelyard.runs import RunDir

    raw, parts, _ = read_run_splits(RunDir.open(run_dir))
    idx = parts["train"]
    if len(idx) > MAX_REFERENCE_EXAMPLES:
        idx = np.sort(np.random.default_rng(0).choice(idx, MAX_REFERENCE_EXAMPLES, replace=False))
    train = raw.take(idx)
    total = None
    for start in range(0, len(train), 512):
        x = pre.transform(_take(train.x, slice(start, start + 512))).double()
        total = x.sum(dim=0) if total is None else total + x.sum(dim=0)
    sampled = f", a sample of {len(parts['train']):,}" if len(idx) < len(parts["train"]) else ""
    return (total / len(idx)).float(), f"{len(idx):,} examples{sampled}"


def save_reference(model_dir: Path, run_dir: Path, pre) -> None:
    """Write the training split's mean input beside the weights (images and sequences; the other kinds' references
    need no data), so that a copy registered and served without its run explains from the same baseline."""
    from safetensors.torch import save_file

    from modelyard.filemode import as_umask_allows

    if pre.kind not in ("image", "sequence"):
        return
    value, n = mean_input(run_dir, pre)
    save_file({"mean_input": value.contiguous()}, str(model_dir / FILE), metadata={"examples": n})
    as_umask_allows(model_dir / FILE)


def _read_saved(path: Path, shape: tuple[int, ...]):
    """(tensor, examples phrase) from the model folder's reference file, or None when absent or not fitting."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            value, n = f.get_tensor("mean_input"), (f.metadata() or {}).get("examples", "?")
    except Exception:  # a damaged file: compute it again rather than fail the explanation
        return None
    if tuple(value.shape) != shape or not bool(value.isfinite().all()):
        return None
    return value.float(), n


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
