"""The explanation-method registry and what every method shares: the model being explained, reading its inputs,
the target class, and the `Explanation` every method returns.

A method is a function `(subject: Subject, batch: Batch, params) -> Attributions`, registered with its pydantic
params class, the kinds of input it reads and what it needs of the model:

    @register_explainer("saliency", kinds=("image", "sequence"), needs="gradients", summary="...")
    def saliency(subject, batch, params): ...

Each kind of input (image, sequence, text, tabular) registers a view (`register_view`): how its inputs are shown
and written (PNG overlays, highlighted HTML, tables). `explain()` picks the method, checks it applies, reads the
inputs, runs the method, and assembles an `Explanation` with every input's prediction, target and quality figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from modelyard.errors import ConfigError, DataError
from modelyard.registry import Registry

EXPLAINERS: Registry = Registry("explanation method")
VIEWS: Registry = Registry("input kind")

# What `--method` defaults to, per kind of input, best first: the first one that applies to the model is taken.
DEFAULTS: dict[str, tuple[str, ...]] = {
    "image": ("integrated-gradients", "occlusion"),
    "sequence": ("integrated-gradients", "occlusion"),
    "text": ("integrated-gradients", "linear", "occlusion"),
    "tabular": ("linear", "kernel-shap"),
}

# Families whose model is a float torch module that gradients flow through (onnx and torch-int8 are not).
GRADIENT_FAMILIES = ("torch", "hf")

# Integrated Gradients' completeness gap above which an input's attributions are flagged: 5% of f(x) - f(baseline)
# and of the attributions' own scale (the sum of their absolute values). The first alone flags inputs the model finds
# about as likely as the baseline (the mean digit itself is a 50/50 8-or-1): 0.002 of error read as 16% there, on
# maps whose values are a hundred times larger. The second alone would miss an error as large as the attributions.
RELATIVE_DELTA_WARNING = 0.05


class MethodParams(BaseModel):
    """Base of every method's options: unknown keys are an error naming the method's own."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_flag(cls, value, info):
        # pydantic reads True as 1 for a number: n_steps=True would run Integrated Gradients with one step
        if isinstance(value, (bool, np.bool_)) and cls.model_fields[info.field_name].annotation is not bool:
            raise ValueError(f"expected a number, not {bool(value)}")
        return value


Needs = Literal["gradients", "forward", "linear", "conv"]


@dataclass
class Impl:
    """One method's implementation for one kind of input."""

    fn: Any  # (subject, batch, params) -> Attributions
    params: type[MethodParams]
    needs: Needs
    families: tuple[str, ...] | None
    summary: str


@dataclass
class Method:
    """A registered method: one name (what `--method` takes), an implementation per kind of input it reads.

    "integrated-gradients" is one method for a user, but attributes pixels in image.py and token embeddings in
    text.py: each file registers its own kind under the shared name.
    """

    name: str
    impls: dict[str, Impl] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return list(self.impls)


def register_explainer(name: str, *, kinds: tuple[str, ...], needs: Needs, params: type[MethodParams] = MethodParams,
                       families: tuple[str, ...] | None = None, summary: str = ""):
    """Register explanation method `name` for inputs of `kinds`.

    Args:
        needs: "gradients" (a float torch module), "conv" (gradients and a convolution layer: Grad-CAM),
            "forward" (any model that gives probabilities), "linear" (a model whose scores are linear in its
            features: logreg, tfidf-linear).
        families: the model families it takes; None means every family its `needs` allows.
    """
    def decorator(fn):
        if name not in EXPLAINERS:
            EXPLAINERS.register(name)(Method(name))
        method = EXPLAINERS.get(name).obj
        for kind in kinds:
            if kind in method.impls:
                raise ConfigError(f"explanation method {name!r} is registered twice for {kind} inputs")
            method.impls[kind] = Impl(fn, params, needs, families, summary)
        return fn

    return decorator


def register_view(kind: str):
    """Class decorator: register how inputs of `kind` are shown (`View`)."""
    def decorator(cls):
        VIEWS.register(kind)(cls)
        return cls

    return decorator


class View:
    """How one kind of input is read for a method, shown and written. Subclasses override what differs."""

    @staticmethod
    def shown(subject: "Subject", batch: "Batch") -> list[Any]:
        """What each input's picture or page shows beside its attributions (an image array, a row's values)."""
        return [None] * len(batch)

    @staticmethod
    def fragment(explanation: "Explanation") -> str:
        """A self-contained HTML fragment (images inlined) showing every input's attributions."""
        raise NotImplementedError

    @staticmethod
    def files(explanation: "Explanation", folder: Path) -> list[Path]:
        """Files beside index.html (a PNG per image, a CSV of attributions)."""
        return []


# ---------------------------------------------------------------- the model and the inputs


@dataclass
class Subject:
    """The model being explained: a loaded `artifact.Predictor` and what methods ask of it."""

    predictor: Any

    @property
    def kind(self) -> str:
        return self.predictor.preprocessor.kind

    @property
    def family(self) -> str:
        return self.predictor.family

    @property
    def labels(self) -> list[str]:
        return self.predictor.labels

    @property
    def module(self):
        """The float torch module gradients flow through, or None (onnx, int8, estimators)."""
        return self.predictor.adapter.module if self.family in GRADIENT_FAMILIES else None

    @property
    def model_name(self) -> str:
        return self.predictor.meta["model"]["name"]

    @property
    def run_dir(self) -> Path | None:
        """The run directory the model folder sits in, or None for a bare model folder."""
        parent = self.predictor.model_dir.parent
        return parent if (parent / "config.yaml").is_file() else None

    def logits(self, x):
        """Class scores (B, C) with gradients, for methods that differentiate (`module` is not None).

        A Hugging Face classifier is called without its inference-time length bucketing: that splits the batch
        into sub-batches, and Captum's layer hooks expect the layer to see the whole batch at once.
        """
        from modelyard.models.hf import HFClassifier

        module = self.module
        x = x.to(self.predictor.device)
        if x.is_floating_point():  # a bf16 copy (compress bf16) takes inputs in its own dtype
            x = x.to(next(module.parameters()).dtype)
        if isinstance(module, HFClassifier):
            keep = x != module.pad_id
            keep[:, 0] = True
            return module._logits(x, keep).float()
        return module(x).float()

    def probabilities(self, x):
        """Class probabilities (B, C) with gradients: what gradient methods attribute."""
        return self.logits(x).softmax(dim=-1)

    def proba(self, x) -> np.ndarray:
        """Class probabilities (N, C) for preprocessed inputs, by any family (no gradients)."""
        return self.predictor.proba_of(x)

    @cached_property
    def reference(self):
        """The value that stands for "feature absent": a method's baseline and the deletion curve's fill
        (`explain.reference`)."""
        from modelyard.explain.reference import reference

        return reference(self)

    def eval(self) -> None:
        if self.module is not None:
            self.module.eval()


@dataclass
class Batch:
    """The inputs being explained, read and preprocessed once."""

    raw: Any  # as read: image paths or arrays, texts, a DataFrame of rows, sequences
    ids: list[str]
    x: Any  # the preprocessor's output: a tensor, or texts for models that read raw text
    proba: np.ndarray  # (N, C) the model's probabilities
    target: np.ndarray  # (N,) the class index each input is explained for

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Attributions:
    """What a method returns: one array of attributions per input, and the units they belong to.

    values[i] is (H, W) per pixel for images, (L,) per position for sequences, (T,) per token for text and (F,)
    per column for tables. units[i] names them (tokens, column names); None for pixels and positions.
    positions[i], for text read as token ids, is where each unit sits in the input's id sequence (deletion
    curves replace the ids there).
    """

    values: list[np.ndarray]
    units: list[list[str]] | None = None
    positions: list[np.ndarray] | None = None
    quality: list[dict[str, float]] | None = None  # e.g. {"convergence_delta": .., "relative_delta": ..}
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # n_steps, baseline, caps: shown with the figures


@dataclass
class Item:
    """One input's explanation."""

    id: str
    predicted: str
    target: str
    probability: float  # the model's probability of `target`
    values: np.ndarray
    units: list[str] | None
    positions: np.ndarray | None
    shown: Any
    quality: dict[str, float]

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k units with the largest attribution toward the target, strongest first."""
        flat = self.values.reshape(-1)
        order = np.argsort(-flat, kind="stable")[:k]
        if self.units is not None:
            return [(self.units[i], float(flat[i])) for i in order]
        shape = self.values.shape
        return [(str(tuple(int(v) for v in np.unravel_index(i, shape))) if len(shape) > 1 else str(int(i)),
                 float(flat[i])) for i in order]


@dataclass
class Explanation:
    """Attributions for a batch of inputs, by one method, with the settings and warnings that go with them.

    Example:
        >>> e = modelyard.load("runs/digits-lenet-...").explain("my_digits/", method="integrated-gradients")
        >>> e[0].values.shape, e[0].predicted, e[0].quality
        >>> e.save("explanations/")           # index.html, one PNG per image, explanations.json
    """

    method: str
    kind: str
    labels: list[str]
    items: list[Item]
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]

    def __iter__(self):
        return iter(self.items)

    def to_json(self) -> dict:
        """Plain JSON: per input, its prediction, target, quality and attributions with their units."""
        return {
            "method": self.method, "kind": self.kind, "settings": self.settings, "notes": self.notes,
            "items": [{"id": it.id, "predicted": it.predicted, "target": it.target, "probability": it.probability,
                       "quality": it.quality, "shape": list(it.values.shape), "units": it.units,
                       "attributions": it.values.astype(float).round(8).reshape(-1).tolist()} for it in self.items],
        }

    def fragment(self) -> str:
        """An HTML fragment showing every input (the run report embeds it)."""
        return VIEWS.get(self.kind).obj.fragment(self)

    def save(self, folder: str | Path) -> Path:
        """Write index.html (open it in a browser), the kind's own files and explanations.json into `folder`;
        returns index.html's path."""
        from modelyard.explain.page import write_page

        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            VIEWS.get(self.kind).obj.files(self, folder)
            (folder / "explanations.json").write_text(json.dumps(self.to_json(), indent=1) + "\n")
            return write_page(self, folder / "index.html")
        except OSError as exc:
            raise ConfigError(f"cannot write explanations to {folder}: {exc.strerror or exc}; pass an --output folder "
                              "you can write to") from None


# ---------------------------------------------------------------- picking and checking the method


def why_not(method: Method, subject: Subject) -> str | None:
    """None when `method` applies to the subject, else the reason it does not."""
    impl = method.impls.get(subject.kind)
    if impl is None:
        return f"it explains {' and '.join(method.kinds)} inputs, and this model reads {subject.kind} inputs"
    if impl.families is not None and subject.family not in impl.families:
        return f"it explains {', '.join(impl.families)} models, and this is a {subject.family} model"
    if impl.needs in ("gradients", "conv") and subject.module is None:
        article = "an" if subject.family[:1] in ("a", "e", "i", "o", "u") else "a"
        return f"it needs gradients, and {article} {subject.family} model gives none"
    if impl.needs == "conv" and not has_convolution(subject.module):
        return f"it needs a convolution layer, and {subject.model_name} has none"
    if impl.needs == "linear" and not is_linear(subject):
        return f"it needs a model linear in its features, and {subject.model_name} is not"
    return None


def has_convolution(module) -> bool:
    import torch

    return any(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) for m in module.modules())


def is_linear(subject: Subject) -> bool:
    """A model whose class scores are an affine function of its (preprocessed) features."""
    return subject.model_name in ("logreg", "tfidf-linear") and subject.family in ("torch", "estimator")


def methods_for(subject: Subject) -> list[str]:
    """The methods that apply to the subject, by name."""
    return [e.name for e in EXPLAINERS if why_not(e.obj, subject) is None]


def default_method(subject: Subject) -> str:
    for name in DEFAULTS.get(subject.kind, ()):
        if name in EXPLAINERS and why_not(EXPLAINERS.get(name).obj, subject) is None:
            return name
    raise ConfigError(f"no explanation method applies to {subject.predictor.model_dir} ({subject.family} model "
                      f"{subject.model_name}, {subject.kind} inputs)")


def check_method(subject: Subject, method: str | None) -> tuple[str, Impl]:
    """The method's name (the subject's default when None) and its implementation for the subject's inputs,
    after checking it applies."""
    import modelyard.explain  # noqa: F401  (registers the methods)

    if subject.predictor.task != "classification":
        raise ConfigError(f"{subject.predictor.model_dir} holds a language model; explanations are for classifiers "
                          "(images, sequences, texts and tables)")
    entry = EXPLAINERS.get(method or default_method(subject))
    reason = why_not(entry.obj, subject)
    if reason:
        fits = methods_for(subject)
        raise ConfigError(f"--method {entry.name} does not apply to {subject.model_name}: {reason}. Methods that "
                          f"do: {', '.join(fits) or 'none'}")
    return entry.name, entry.obj.impls[subject.kind]


def check_params(name: str, impl: Impl, params: dict):
    """The method's options, validated by its params class; an option it does not take is named."""
    from modelyard.config import one_line_problem

    fields = impl.params.model_fields
    takes = ", ".join(fields) or "no options"
    given = {k: v for k, v in params.items() if v is not None}
    unknown = [k for k in given if k not in fields]
    if unknown:
        raise ConfigError(f"explanation method {name} does not take {', '.join(unknown)} (it takes {takes})")
    try:
        return impl.params.model_validate(given)
    except ValidationError as exc:
        raise ConfigError(f"explanation method {name}: {one_line_problem(exc, given, impl.params, hints=False)} "
                          f"(it takes {takes})") from None


def resolve_target(target: str | None, labels: list[str], proba: np.ndarray) -> np.ndarray:
    """Class indices to explain: the named label for every input, or each input's predicted class."""
    if target is None:
        return proba.argmax(axis=1)
    if target not in labels:
        import difflib

        close = difflib.get_close_matches(str(target), labels, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} in all)" if len(labels) > 20 else "")
        raise ConfigError(f"--target {target!r} is not one of the model's labels.{hint} Labels: {shown}")
    return np.full(len(proba), labels.index(target), dtype=np.int64)


# ---------------------------------------------------------------- reading inputs


def read_inputs(subject: Subject, inputs, ids: list[str] | None = None) -> tuple[Any, list[str]]:
    """Raw inputs and an id per input, from what a user passes: a path (as `modelyard predict` reads it), several
    paths, in-memory inputs, or for text models the texts themselves.

    Raises:
        DataError: a path that does not exist, no inputs, or an empty text.
    """
    import pandas as pd

    predictor, kind = subject.predictor, subject.kind
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(i, (str, Path)) for i in inputs):
        raws, names, given = [], [], []  # given: each input named by the path as passed
        for i, item in enumerate(inputs):
            path = Path(item)
            # "" would be Path("."), the working directory: a blank string is an (empty) text, never a path
            literal = kind == "text" and isinstance(item, str) and (not item.strip() or not _is_file(path))
            if literal:
                raws.append([str(item)])
                names.append([str(i + 1)])
                given.append(names[-1])
                continue
            raw, read_ids = predictor.read(path)
            raws.append(raw)
            names.append([f"{path.name}:{r}" if len(inputs) > 1 and kind != "image" else r for r in read_ids])
            given.append([(str(path / r) if path.is_dir() else str(item)) if kind == "image" else f"{item}:{r}"
                          for r in read_ids])
        raw = _concat(raws, kind)
        read_ids = [n for part in names for n in part]
        if len(set(read_ids)) < len(read_ids):  # the same file name in two folders: name each as it was passed
            read_ids = [n for part in given for n in part]
    else:
        raw = _in_memory(inputs, kind)
        read_ids = [str(i + 1) for i in range(len(raw))]
    if isinstance(raw, pd.DataFrame):
        raw = raw.reset_index(drop=True)
    n = len(raw)
    if n == 0:
        raise DataError("no inputs to explain; pass at least one image, text, sequence or table row")
    if kind == "text":
        empty = [read_ids[i] for i, t in enumerate(raw) if not str(t).strip()]
        if empty:
            raise DataError(f"input {empty[0]} is an empty text, and an empty text has no tokens to explain; remove "
                            "it or write the text")
    ids = list(ids) if ids is not None else read_ids
    if len(ids) != n:
        raise ConfigError(f"{len(ids)} ids for {n} inputs; pass one id per input")
    return raw, [str(i) for i in ids]


def _in_memory(inputs, kind: str):
    """In-memory inputs as the preprocessor takes them: a table's rows as a DataFrame (from a dict per row), a
    lone PIL image as a list of one."""
    import pandas as pd
    from PIL import Image

    if kind == "tabular":
        if isinstance(inputs, dict):
            inputs = [inputs]
        if isinstance(inputs, (list, tuple)) and all(isinstance(r, dict) for r in inputs):  # [] too: no rows
            return pd.DataFrame(list(inputs))
        if not isinstance(inputs, pd.DataFrame):
            raise DataError(f"table rows come as a DataFrame, a dict per row or a CSV path, not a "
                            f"{type(inputs).__name__}")
        return inputs
    if isinstance(inputs, Image.Image):
        return [inputs]
    if not hasattr(inputs, "__len__") or isinstance(inputs, (bytes, dict)):
        raise DataError(f"cannot explain a {type(inputs).__name__}; pass a path, a list of inputs or an array")
    return inputs


def _is_file(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a text too long to be a file name
        return False


def _concat(parts: list, kind: str):
    import pandas as pd

    if len(parts) == 1:
        return parts[0]
    if kind == "tabular":
        return pd.concat(parts, ignore_index=True)
    if kind == "sequence":
        return np.concatenate([np.asarray(p) for p in parts])
    return [x for p in parts for x in p]


# ---------------------------------------------------------------- the entry point


def explain(model, inputs, *, method: str | None = None, target: str | None = None, ids: list[str] | None = None,
            **params) -> Explanation:
    """Explain a model's predictions for `inputs`: which pixels, tokens or columns moved them.

    Args:
        model: a run directory, a model folder, or a loaded `Predictor`.
        inputs: what `modelyard predict` reads (a path, a list of paths), in-memory inputs (image arrays, PIL
            images, a DataFrame of rows, sequences), or for text models the texts themselves.
        method: a registered method (`modelyard explain --help` lists them); default: the best for the model.
        target: explain this label for every input (default: each input's predicted label).
        params: the method's options (n_steps, internal_batch_size, window, max_evals, ...).

    Raises:
        ConfigError: an unknown method, one that does not apply (the message lists those that do), an unknown
            target label, or an option the method does not take.
        DataError: an input the model cannot take.
    """
    from modelyard.artifact import load

    predictor = load(model) if isinstance(model, (str, Path)) else model
    subject = Subject(predictor)
    name, impl = check_method(subject, method)
    options = check_params(name, impl, params)
    raw, ids = read_inputs(subject, inputs, ids)
    return run_method(subject, name, impl, options, raw, ids, target=target)


def run_method(subject: Subject, name: str, impl: Impl, options, raw, ids: list[str], *, target: str | None = None,
               x=None) -> Explanation:
    """A checked method on inputs already read (`x`: already through the preprocessor). The server reads its own
    inputs, since over HTTP a text is never a path to open."""
    predictor = subject.predictor
    x = predictor.transform(raw) if x is None else x
    proba = predictor.proba_of(x)
    batch = Batch(raw=raw, ids=ids, x=x, proba=proba, target=resolve_target(target, predictor.labels, proba))
    subject.eval()
    return assemble(subject, batch, name, impl.fn(subject, batch, options))


def convergence(delta: float, change: float) -> dict[str, float]:
    """Integrated Gradients' quality figure for one input: |delta| (Captum's completeness gap) and its share of
    |f(x) - f(baseline)|, the two that `unconverged` reads."""
    gap = abs(float(delta))
    return {"convergence_delta": gap, "relative_delta": gap / max(abs(float(change)), 1e-12)}


def unconverged(item: "Item") -> bool:
    """Whether Integrated Gradients' completeness gap makes an input's attributions unreliable."""
    q = item.quality
    if "convergence_delta" not in q:
        return False
    scale = float(np.abs(item.values).sum())
    return (q.get("relative_delta", 0.0) > RELATIVE_DELTA_WARNING
            and q["convergence_delta"] > RELATIVE_DELTA_WARNING * scale)


def assemble(subject: Subject, batch: Batch, method: str, result: Attributions) -> Explanation:
    """The `Explanation` of a method's attributions: predictions, targets, what to show, quality warnings."""
    labels = subject.labels
    shown = VIEWS.get(subject.kind).obj.shown(subject, batch)
    quality = result.quality or [{} for _ in batch.ids]
    items, notes = [], list(result.notes)
    for i, id_ in enumerate(batch.ids):
        t = int(batch.target[i])
        items.append(Item(id=id_, predicted=labels[int(batch.proba[i].argmax())], target=labels[t],
                          probability=float(batch.proba[i, t]), values=np.asarray(result.values[i], dtype=np.float64),
                          units=None if result.units is None else list(result.units[i]),
                          positions=None if result.positions is None else np.asarray(result.positions[i]),
                          shown=shown[i], quality={k: float(v) for k, v in quality[i].items()}))
    flagged = [it for it in items if unconverged(it)]
    if flagged:
        worst = max(flagged, key=lambda it: it.quality["relative_delta"])
        notes.append(f"Integrated Gradients did not converge on {len(flagged)} of {len(items)} inputs: attributions "
                     f"sum to f(x) - f(baseline) only within {worst.quality['relative_delta']:.1%} (input {worst.id}; "
                     f"over {RELATIVE_DELTA_WARNING:.0%} of it and of the attributions' own scale is unreliable). "
                     "Raise n_steps")
    return Explanation(method=method, kind=subject.kind, labels=list(labels), items=items,
                       settings=dict(result.settings), notes=notes)

