"""Checking explanations, not just drawing them: deletion curves and the model-randomisation sanity check.

Deletion curves: replace an input's units (pixels, positions, tokens, words, columns) by the model's reference
input (`explain.reference`, the same value the methods use as their baseline), the most attributed first, and
track the model's probability of the explained class as more of the input goes. A faithful explanation makes it
fall fast; the area under the curve, over the area of the same curve for random orders, is the faithfulness
figure (lower is better; 1 is no better than random).

Sanity check (Adebayo et al., 2018, "Sanity checks for saliency maps"): an explanation that barely changes when
every weight of the model is re-initialised explains the input, not the model. `sanity_check` explains the same
inputs with a randomised copy and reports the rank correlation of the two attributions (low is good).

Example:
    >>> from modelyard.explain import explain
    >>> from modelyard.explain.faithfulness import deletion_curves, sanity_check
    >>> e = explain(run, images, method="integrated-gradients")
    >>> deletion_curves(run, e, images).ratio          # 0.2: the top pixels matter 5x more than random ones
    >>> sanity_check(run, images, "saliency").spearman  # near 0: saliency depends on the weights
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import ConfigError

BATCH_ROWS = 512  # variants per forward pass: every (order, k) of a few inputs at once


# ---------------------------------------------------------------- deletion curves


@dataclass
class DeletionCurves:
    """Deletion curves of one method's explanations, beside random orders' curves for the same inputs.

    curves[i, j] is input i's probability of its target with a share fractions[j] of its units (the most
    attributed first) replaced by the reference; random_curves the same for random orders (mean over
    `random_orders` seeded orders). Areas are trapezoids over fractions 0..1.
    """

    method: str
    kind: str
    fractions: np.ndarray  # (S + 1,) share of units replaced, 0 .. 1
    curves: np.ndarray  # (N, S + 1)
    random_curves: np.ndarray  # (N, S + 1)
    areas: np.ndarray  # (N,)
    random_areas: np.ndarray  # (N,)
    n_units: np.ndarray  # (N,) units per input
    flat: int  # inputs whose attributions are all equal (nothing to order by: they score as random does)
    random_orders: int
    seed: int
    reference: str  # what replaced the units (the reference's source)
    settings: dict[str, Any] = field(default_factory=dict)  # the explanation's (n_steps, baseline, caps)

    def __len__(self) -> int:
        return len(self.areas)

    @property
    def area(self) -> float:
        return float(self.areas.mean())

    @property
    def random_area(self) -> float:
        return float(self.random_areas.mean())

    @property
    def ratio(self) -> float:
        """The faithfulness figure: the method's mean area over random's (lower is better)."""
        return self.area / self.random_area if self.random_area > 0 else float("nan")

    @property
    def mean_curve(self) -> np.ndarray:
        return self.curves.mean(axis=0)

    @property
    def mean_random_curve(self) -> np.ndarray:
        return self.random_curves.mean(axis=0)

    def to_json(self) -> dict:
        return {"method": self.method, "kind": self.kind, "n": len(self), "ratio": self.ratio, "area": self.area,
                "random_area": self.random_area, "random_orders": self.random_orders, "flat": self.flat,
                "reference": self.reference,
                "fractions": self.fractions.tolist(), "mean_curve": self.mean_curve.tolist(),
                "mean_random_curve": self.mean_random_curve.tolist(), "settings": self.settings}


def deletion_curves(model, explanation, inputs, *, steps: int = 20, random_orders: int = 5, seed: int = 0,
                    random_from: DeletionCurves | None = None) -> DeletionCurves:
    """Score `explanation` (what `explain` returned for `inputs`) by deletion curves.

    Args:
        model: the explained model: a run directory, a model folder, a loaded `Predictor` or a `Subject`.
        explanation: the `Explanation` of `inputs`, in the same order.
        inputs: what was explained, as `explain` took it (paths, arrays, texts, a DataFrame), or its `Batch`.
        steps: points on the curve after k = 0: k = round(j / steps * units), j = 0 .. steps.
        random_orders: random orders averaged for the baseline curve; seeded by `seed` and the input's index
            only, so every method is compared with the same random curves.
        random_from: the curves of another method's explanation of the same inputs: its random curves are
            reused instead of recomputed (they would come out the same; five sixths of the cost).

    Raises:
        ConfigError: the explanation does not match the inputs or `random_from`, or the model reads a kind of
            input no deletion is defined for.
    """
    from modelyard.explain.base import Batch, Subject

    subject = model if isinstance(model, Subject) else Subject(_predictor(model))
    if explanation.kind != subject.kind:
        raise ConfigError(f"the explanation is of {explanation.kind} inputs and the model reads {subject.kind} "
                          "inputs; score an explanation with the model that gave it")
    raw, x = (inputs.raw, inputs.x) if isinstance(inputs, Batch) else _read(subject, inputs)
    if len(raw) != len(explanation):
        raise ConfigError(f"{len(explanation)} explanations for {len(raw)} inputs; pass the inputs that were "
                          "explained, in the same order")
    if steps < 1 or random_orders < 1:
        raise ConfigError(f"steps ({steps}) and random_orders ({random_orders}) must be at least 1")
    deleter = DELETERS[subject.kind](subject, raw, x)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    n_units = np.array([deleter.units(i, it) for i, it in enumerate(explanation)])
    for it, n in zip(explanation, n_units):
        if it.values.size != n:
            raise ConfigError(f"input {it.id}: {it.values.size} attributions for {n} units; the explanation does "
                              "not belong to these inputs")
    if random_from is not None:
        _check_reusable(random_from, n_units, fractions, random_orders, seed)
    curves = _probabilities(subject, deleter, explanation, n_units, fractions,
                            0 if random_from is not None else random_orders, seed)
    method_curves = curves[:, 0]
    if random_from is not None:
        random_curves, random_areas = random_from.random_curves, random_from.random_areas
    else:
        random_curves, random_areas = curves[:, 1:].mean(axis=1), _area(curves[:, 1:], fractions).mean(axis=1)
    return DeletionCurves(
        method=explanation.method, kind=subject.kind, fractions=fractions, curves=method_curves,
        random_curves=random_curves, areas=_area(method_curves, fractions), random_areas=random_areas,
        n_units=n_units, flat=sum(1 for it in explanation if it.values.size and np.ptp(it.values) == 0),
        random_orders=random_orders, seed=seed, reference=subject.reference.source,
        settings=dict(explanation.settings))


def _probabilities(subject, deleter, explanation, n_units, fractions, random_orders: int, seed: int) -> np.ndarray:
    """(N, 1 + random_orders, S + 1): each input's target probability along its method's order and the random
    ones, forward passes batched over inputs."""
    targets = [subject.labels.index(it.target) for it in explanation]
    curves = np.empty((len(explanation), 1 + random_orders, len(fractions)))
    pending: list[tuple[int, np.ndarray, Any]] = []  # (input, inverse of its distinct masks, their variants)

    def flush():
        if not pending:
            return
        proba = subject.proba(deleter.stack([v for _, _, v in pending]))
        start = 0
        for i, inverse, _ in pending:
            n = inverse.max() + 1
            curves[i] = proba[start:start + n, targets[i]][inverse].reshape(1 + random_orders, len(fractions))
            start += n
        pending.clear()

    rows = 0
    for i, it in enumerate(explanation):
        masks = deletion_masks(it.values, int(n_units[i]), fractions, random_orders, seed=(seed, i))
        # k = 0 and k = all are the same input in every order, and short texts repeat k: each is run once
        distinct, inverse = np.unique(masks, axis=0, return_inverse=True)
        pending.append((i, inverse.reshape(-1), deleter.variants(i, it, distinct)))
        rows += len(distinct)
        if rows >= BATCH_ROWS:
            flush()
            rows = 0
    flush()
    return curves


def _check_reusable(other: DeletionCurves, n_units, fractions, random_orders: int, seed: int) -> None:
    same = (len(other) == len(n_units) and np.array_equal(other.n_units, n_units)
            and np.array_equal(other.fractions, fractions) and other.random_orders == random_orders
            and other.seed == seed)
    if not same:
        raise ConfigError("random_from holds the curves of other inputs, units, steps, orders or seed; pass the "
                          "curves of another explanation of the same inputs with the same settings")


def faithfulness(model, inputs, method: str | None = None, *, target: str | None = None, steps: int = 20,
                 random_orders: int = 5, seed: int = 0, **params) -> tuple[Any, DeletionCurves]:
    """Explain `inputs` with `method` and score the explanation: (`Explanation`, `DeletionCurves`)."""
    from modelyard.explain.base import explain

    predictor = _predictor(model)
    explanation = explain(predictor, inputs, method=method, target=target, **params)
    return explanation, deletion_curves(predictor, explanation, inputs, steps=steps, random_orders=random_orders,
                                        seed=seed)


def deletion_masks(values: np.ndarray, n: int, fractions: np.ndarray, random_orders: int, *, seed) -> np.ndarray:
    """(1 + random_orders) x len(fractions) rows of n flags, True = replaced: the method's order first, then the
    random orders, each deleting round(fraction x n) units. Random orders depend on `seed` only (never on the
    attributions), so every method of the same inputs meets the same random curves."""
    rng = np.random.default_rng(seed)
    orders = [attribution_order(values, np.random.default_rng([*seed, 1]))]
    orders += [rng.permutation(n) for _ in range(random_orders)]
    ks = np.round(fractions * n).astype(int)
    return np.concatenate([_rank(order)[None, :] < ks[:, None] for order in orders])  # (V, n)


def attribution_order(values: np.ndarray, rng) -> np.ndarray:
    """Unit indices, most attributed first. Ties are broken at random: a map that is flat (Grad-CAM's ReLU often
    zeroes most of it) must score as random does, not by the order the pixels happen to be stored in."""
    flat = values.reshape(-1)
    return np.lexsort((rng.permutation(len(flat)), -flat))


def _rank(order: np.ndarray) -> np.ndarray:
    """rank[u] = where unit u comes in `order`."""
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _area(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    return np.trapezoid(curves, fractions, axis=-1)


def _predictor(model):
    from modelyard.artifact import load
    from modelyard.explain.base import Subject

    if isinstance(model, Subject):
        return model.predictor
    return load(model) if isinstance(model, (str, Path)) else model


def _read(subject, inputs) -> tuple[Any, Any]:
    from modelyard.explain.base import read_inputs

    raw, _ = read_inputs(subject, inputs)
    return raw, subject.predictor.transform(raw)


# ---------------------------------------------------------------- replacing units, per kind of input


class Deleter:
    """How one kind of input loses units: `variants` builds the model inputs for a stack of deletion masks."""

    def __init__(self, subject, raw, x) -> None:
        self.subject, self.raw, self.x = subject, raw, x

    def units(self, i: int, item) -> int:
        """How many units input i has (what its attributions must number)."""
        raise NotImplementedError

    def variants(self, i: int, item, masks: np.ndarray):
        """Input i with the units masks[v] is True for replaced by the reference, one variant per row."""
        raise NotImplementedError

    def stack(self, parts: list):
        import torch

        return torch.cat(parts)


class GridDeleter(Deleter):
    """Images (a pixel: all its channels) and sequences (a position): the reference's value at the same place."""

    def units(self, i: int, item) -> int:
        return int(np.prod(self.x.shape[2:]))

    def variants(self, i: int, item, masks: np.ndarray):
        import torch

        x, ref = self.x[i], self.subject.reference.value.to(self.x.dtype)  # (C, H, W) or (1, L)
        mask = torch.from_numpy(masks).to(x.dtype).reshape(len(masks), 1, *x.shape[1:])  # (V, 1, H, W)
        return x[None] * (1 - mask) + ref[None] * mask


class TokenDeleter(Deleter):
    """Text read as token ids: the units are where item.positions says; each becomes the mask (or unknown) id."""

    def units(self, i: int, item) -> int:
        if item.positions is None:
            raise ConfigError(f"the {item.id} explanation gives no token positions; deletion curves need them to "
                              "replace its tokens")
        return len(item.positions)

    def variants(self, i: int, item, masks: np.ndarray):
        import torch

        ids = self.x[i]
        out = ids[None].repeat(len(masks), 1)  # (V, T)
        positions = torch.as_tensor(np.asarray(item.positions, dtype=np.int64))
        rows, units = np.nonzero(masks)
        out[torch.from_numpy(rows), positions[torch.from_numpy(units)]] = int(self.subject.reference.value)
        return out


class WordDeleter(Deleter):
    """TF-IDF texts: the text as the model's analyzer splits it into words, words replaced by the reference word.

    Units are word occurrences when the explanation gives their positions in that word list, else distinct words
    (units[j]: deleting it replaces every occurrence).
    """

    def __init__(self, subject, raw, x) -> None:
        from modelyard.explain.text import analyzer_words

        super().__init__(subject, raw, x)
        vectorizer = subject.predictor.model.vectorizer
        preprocess = vectorizer.build_preprocessor()
        self.normal = lambda word: preprocess(str(word)).strip()
        self.words = [analyzer_words(vectorizer, str(t))[0] for t in x]  # the words the linear method attributes

    def units(self, i: int, item) -> int:
        return len(item.positions) if item.positions is not None else len(item.units or ())

    def _occurrences(self, i: int, item) -> list[np.ndarray]:
        """For each unit, the indices in the word list it stands for."""
        if item.positions is not None:
            return [np.atleast_1d(np.asarray(p, dtype=np.int64)) for p in item.positions]
        normal = np.array([self.normal(w) for w in self.words[i]], dtype=object)
        return [np.flatnonzero(normal == self.normal(u)) for u in item.units]

    def variants(self, i: int, item, masks: np.ndarray) -> list[str]:
        words, fill = self.words[i], str(self.subject.reference.value)
        occurrences = self._occurrences(i, item)
        texts = []
        for mask in masks:
            out = list(words)
            for u in np.flatnonzero(mask):
                for w in occurrences[u]:
                    out[w] = fill
            texts.append(" ".join(out))
        return texts

    def stack(self, parts: list) -> list[str]:
        return [t for part in parts for t in part]


class ColumnDeleter(Deleter):
    """Table rows: a column's raw value becomes the reference row's (the training mean, the most frequent
    category), and the row goes through the model's preprocessing again."""

    def units(self, i: int, item) -> int:
        return len(item.units) if item.units is not None else len(self.raw.columns)

    def variants(self, i: int, item, masks: np.ndarray):
        import pandas as pd

        row, ref = self.raw.iloc[i], self.subject.reference.value.iloc[0]
        columns = item.units if item.units is not None else list(self.raw.columns)
        frame = pd.DataFrame({c: [row[c]] * len(masks) for c in self.raw.columns})
        for j, col in enumerate(columns):
            if col not in ref.index:
                raise ConfigError(f"the explanation attributes column {col!r}, which the model's reference row "
                                  f"lacks (it has {list(ref.index)})")
            frame[col] = np.where(masks[:, j], np.asarray(ref[col], dtype=object), frame[col].to_numpy(object))
        return self.subject.predictor.transform(frame)


class _TextDeleter:
    """Token ids when the model reads them, words for TF-IDF (no tokeniser)."""

    def __new__(cls, subject, raw, x):
        kind = TokenDeleter if subject.predictor.preprocessor.tokenizer is not None else WordDeleter
        return kind(subject, raw, x)


DELETERS = {"image": GridDeleter, "sequence": GridDeleter, "text": _TextDeleter, "tabular": ColumnDeleter}


# ---------------------------------------------------------------- the sanity check


@dataclass
class SanityCheck:
    """Rank correlation between a method's attributions on the trained model and on a copy with every weight
    re-initialised, per input (Spearman). Near 0: the explanation depends on what the model learnt; near 1: it
    would look the same for any model (an edge detector, not an explanation).

    An input where either map is flat (Grad-CAM's ReLU can zero all of it) has no ranking: its correlation is
    NaN, left out of the means, and counted in `undefined`.
    """

    method: str
    spearman_per_input: np.ndarray  # (N,) signed attributions; NaN where undefined
    spearman_abs_per_input: np.ndarray  # (N,) absolute values
    undefined: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def spearman(self) -> float:
        return _mean_defined(self.spearman_per_input)

    @property
    def spearman_abs(self) -> float:
        return _mean_defined(self.spearman_abs_per_input)

    def to_json(self) -> dict:
        return {"method": self.method, "n": len(self.spearman_per_input), "spearman": self.spearman,
                "spearman_abs": self.spearman_abs, "undefined": self.undefined, "settings": self.settings}


def _mean_defined(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else float("nan")


def sanity_check(model, inputs, method: str | None = None, *, seed: int = 0, **params) -> SanityCheck:
    """Explain `inputs` with the trained model and with a copy whose every layer is re-initialised (seeded),
    for the trained model's predicted class, and rank-correlate the two attributions per input.

    Raises:
        ConfigError: the model has no torch module to re-initialise (onnx, int8, estimators), or the method
            does not apply.
    """
    from modelyard.explain.base import Batch, Subject, check_method, check_params, read_inputs

    predictor = _predictor(model)
    subject = Subject(predictor)
    if subject.module is None:
        raise ConfigError(f"the sanity check re-initialises a torch model's weights, and {predictor.model_dir} "
                          f"holds a {subject.family} model; run it on the model before export or quantisation")
    name, impl = check_method(subject, method)
    options = check_params(name, impl, params)
    raw, ids = read_inputs(subject, inputs)
    x = predictor.transform(raw)
    target = predictor.proba_of(x).argmax(axis=1)
    results = []
    for s in (subject, Subject(randomised(predictor, seed=seed))):
        s.eval()
        batch = Batch(raw=raw, ids=ids, x=x, proba=s.proba(x), target=target)
        results.append(impl.fn(s, batch, options))
    pairs = [(np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1))
             for a, b in zip(results[0].values, results[1].values)]
    signed = np.array([_spearman(a, b) for a, b in pairs])
    return SanityCheck(method=name, spearman_per_input=signed,
                       spearman_abs_per_input=np.array([_spearman(np.abs(a), np.abs(b)) for a, b in pairs]),
                       undefined=int(np.isnan(signed).sum()), settings=dict(results[0].settings))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def randomised(predictor, *, seed: int = 0):
    """A copy of `predictor` whose every layer is re-initialised (Adebayo et al.'s cascading randomisation run to
    the input layer): modules with `reset_parameters` reset themselves, and any other parameter (a learnt
    position embedding, a class token) is shuffled, which keeps its scale and loses what it learnt."""
    import torch

    from modelyard.artifact import Predictor

    adapter = copy.copy(predictor.adapter)
    adapter.model = copy.deepcopy(predictor.adapter.model)
    module = adapter.module
    generator = torch.Generator().manual_seed(seed)
    reset: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
                reset.update(id(p) for p in m.parameters(recurse=False))
        with torch.no_grad():
            for p in module.parameters():
                if id(p) not in reset and p.numel() > 1:
                    flat = p.view(-1)
                    flat.copy_(flat[torch.randperm(flat.numel(), generator=generator)])
    module.eval()
    return Predictor(predictor.model_dir, adapter, predictor.meta, predictor.preprocessor)
