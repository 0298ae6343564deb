"""Explanations of text classifiers: which tokens or words moved a prediction, and the page that highlights them.

- integrated-gradients: Captum's LayerIntegratedGradients at the token embedding layer (attributing at token ids
  is meaningless: captum#1112), from the text with every real token replaced by `subject.reference` (the mask
  token, else the unknown token); [CLS]/[SEP] and padding stay, so the attention mask and positions do not move.
- linear: tfidf-linear's exact attribution. Its class score is sum_f coef[t, f] * tfidf_f(x) + intercept[t], so
  each feature's term is split equally among the word occurrences that make it: the words' attributions add up
  to the score minus the intercept, to float rounding.
- occlusion: any model that answers probabilities (onnx and torch-int8 too): p(x) minus p(x with one token, or
  one word for TF-IDF, replaced by the reference), through Captum's FeatureAblation.

Units are the tokens as the tokenizer writes them (`##ing`, `Ġword`), or for TF-IDF the words as its analyzer
sees them; `positions` is where each sits in the id sequence (or the word index).
"""

from __future__ import annotations

import csv
import html
import re
from pathlib import Path

import numpy as np
from pydantic import Field

from modelyard.errors import ConfigError
from modelyard.explain.base import (Attributions, MethodParams, View, convergence, register_explainer,
                                    register_view)

TOWARD, AGAINST = "22,163,74", "220,38,38"  # green, red (RGB)


# ---------------------------------------------------------------- texts, tokens and words


def input_texts(subject, batch) -> list[str]:
    """The batch's texts as read (a DataFrame passed in memory gives its text column)."""
    import pandas as pd

    raw = batch.raw
    if isinstance(raw, pd.DataFrame):
        raw = raw[subject.predictor.preprocessor._column(raw, "input")].astype(str).tolist()
    return [raw] if isinstance(raw, str) else [str(t) for t in raw]


def kept_ids(subject) -> set[int]:
    """Token ids that are structure, not text: padding and the special tokens the tokenizer adds ([CLS], [SEP],
    <cls>). The unknown token is text (a word the vocabulary lacks) and is attributed like any other."""
    pre = subject.predictor.preprocessor
    tok = pre.tokenizer
    unk = unknown_id(tok)
    special = {i for i, added in tok.get_added_tokens_decoder().items() if added.special}
    return (special | {pre.pad_id}) - {unk}


def unknown_id(tok) -> int | None:
    name = getattr(tok.model, "unk_token", None)
    return tok.token_to_id(name) if name else None


def token_positions(row, kept: set[int]) -> np.ndarray:
    """Positions in one id sequence that hold the text's own tokens."""
    return np.array([i for i, t in enumerate(row.tolist()) if t not in kept], dtype=np.int64)


def baseline_ids(subject, ids):
    """Integrated Gradients' baseline for token ids (N, L): every token of the text replaced by the reference id
    (mask, else unknown), special tokens and padding kept, so the attention mask and the positions stay."""
    kept, ref = kept_ids(subject), int(subject.reference.value)
    base = ids.clone()
    for row, out in zip(ids, base):
        out[token_positions(row, kept)] = ref
    return base


def used_length(row, pad_id: int) -> int:
    """Positions up to the last non-padding one: the columns after it change nothing under the attention mask."""
    real = (row != pad_id).nonzero()
    return int(real.max()) + 1 if len(real) else 1


def analyzer_words(vectorizer, text: str) -> tuple[list[str], list[tuple[int, int]] | None]:
    """The words a TF-IDF vectorizer builds its n-grams from, and where each sits in `text` (None where its
    preprocessing changes the text's length, e.g. lowercasing some non-ASCII letters)."""
    pre = vectorizer.build_preprocessor()(vectorizer.decode(text))
    words = vectorizer.build_tokenizer()(pre)
    spans = None
    if vectorizer.tokenizer is None and len(pre) == len(text):
        pattern = re.compile(vectorizer.token_pattern)
        group = 1 if pattern.groups else 0
        spans = [m.span(group) for m in pattern.finditer(pre)]
        if len(spans) != len(words):
            spans = None
    return words, spans


class ShownText(str):
    """An input's text as read (a plain str to every caller), with what the highlighted view needs: where each
    position (token id or word index) sits in the text, how far the model read it, and the predicted class's
    probability."""

    spans: list[tuple[int, int]] | None
    read_upto: int | None  # characters past it were cut at the model's max_length
    predicted_probability: float | None

    def __new__(cls, text: str, spans=None, read_upto: int | None = None, predicted_probability: float | None = None):
        self = super().__new__(cls, text)
        self.spans, self.read_upto, self.predicted_probability = spans, read_upto, predicted_probability
        return self


# ---------------------------------------------------------------- Integrated Gradients


class IntegratedGradientsParams(MethodParams):
    n_steps: int = Field(50, ge=1, le=10_000, description="points on the path from the baseline to the input")
    internal_batch_size: int = Field(16, ge=1, le=100_000,
                                     description="path points per forward pass; IG runs n_steps forward passes per "
                                                 "text and runs out of memory without a cap (captum#245, #538)")


def embedding_layer(subject):
    """The token embedding module and a name for it: what layer Integrated Gradients attributes at."""
    from modelyard.models.hf import HFClassifier
    from modelyard.models.transformer import TextTransformer

    module = subject.module
    if isinstance(module, TextTransformer):
        return module.tok, "tok (the text-transformer's token embeddings)"
    if isinstance(module, HFClassifier):
        try:
            layer = module.hf.get_input_embeddings()
        except (NotImplementedError, AttributeError):
            layer = None
        if layer is not None:
            name = next((n for n, m in module.hf.named_modules() if m is layer), "input embeddings")
            return layer, f"{name} (the model's token embeddings)"
        raise ConfigError(f"--method integrated-gradients: {subject.predictor.model_dir} is a Hugging Face model "
                          "whose token embeddings transformers cannot find (get_input_embeddings()); use --method "
                          "occlusion")
    raise ConfigError(f"--method integrated-gradients attributes at a text model's token embeddings, and modelyard "
                      f"knows them for hf and text-transformer models, not {subject.model_name}; use --method "
                      "occlusion")


@register_explainer("integrated-gradients", kinds=("text",), needs="gradients", params=IntegratedGradientsParams,
                    summary="layer Integrated Gradients at the token embeddings (Captum), from the text with its "
                            "tokens masked, with its completeness gap")
def integrated_gradients(subject, batch, params: IntegratedGradientsParams) -> Attributions:
    import torch
    from captum.attr import LayerIntegratedGradients

    layer, layer_name = embedding_layer(subject)
    pre = subject.predictor.preprocessor
    kept = kept_ids(subject)
    lig = LayerIntegratedGradients(subject.probabilities, layer)
    values, units, positions, quality = [], [], [], []
    for row, target in zip(batch.x, batch.target):
        where = token_positions(row, kept)
        # One text at a time, cut after its last token: no text pays for the batch's longest.
        ids = row[:used_length(row, pre.pad_id)].unsqueeze(0)  # (1, T)
        base = baseline_ids(subject, ids)
        with torch.enable_grad():
            attr, delta = lig.attribute(ids, baselines=base, target=int(target), n_steps=params.n_steps,
                                        internal_batch_size=params.internal_batch_size, return_convergence_delta=True)
        with torch.no_grad():
            p = subject.probabilities(torch.cat([ids, base]))[:, int(target)].double().cpu()
        per_token = attr.sum(dim=-1)[0].detach().double().cpu().numpy()  # (1, T, D) -> (T,)
        values.append(per_token[where])
        units.append([pre.tokenizer.id_to_token(int(i)) for i in row[where]])
        positions.append(where)
        quality.append(convergence(float(delta[0]), float(p[0] - p[1])))
    truncated = pre.encode(input_texts(subject, batch))[1]
    notes = []
    if truncated:
        notes.append(f"{truncated} of {len(batch)} inputs are longer than the model's {pre.max_length} tokens; "
                     "the tokens past it are not read and have no attribution")
    return Attributions(values=values, units=units, positions=positions, quality=quality, notes=notes, settings={
        "n_steps": params.n_steps, "internal_batch_size": params.internal_batch_size,
        "baseline": subject.reference.source,
        "baseline ids": "every token replaced by it; special tokens and padding kept",
        "layer": layer_name, "attributes": "the target class's probability",
        "max_length": pre.max_length, "truncated_inputs": truncated})


# ---------------------------------------------------------------- exact linear attribution (TF-IDF)


@register_explainer("linear", kinds=("text",), needs="linear", families=("estimator",),
                    summary="exact: each TF-IDF feature's coefficient x value, split among the words that make it")
def linear(subject, batch, params: MethodParams) -> Attributions:
    model = subject.predictor.model
    vec = model.vectorizer
    texts = input_texts(subject, batch)
    tfidf = vec.transform(texts).tocsr()  # (N, F)
    scores = model.scores(texts)  # (N, C), before temperature and softmax
    coef, intercept = model.coef.astype(np.float64), model.intercept.astype(np.float64)
    # Two classes: scikit-learn fits one score s, kept as the scores (0, s), so class 0's own score never moves and
    # its attributions would all be 0. Either class is explained by its log-odds against the other instead.
    pair = len(coef) == 2
    values, units, positions, quality, empty = [], [], [], [], []
    for i, (text, target) in enumerate(zip(texts, batch.target)):
        t = int(target)
        weights = coef[t] - coef[1 - t] if pair else coef[t]
        row = tfidf[i]
        share = dict(zip(row.indices.tolist(), (weights[row.indices] * row.data.astype(np.float64)).tolist()))
        words, _ = analyzer_words(vec, text)
        value = np.zeros(len(words))
        for feature, occurrences in ngram_occurrences(vec, words).items():
            if feature in share:
                part = share[feature] / len(occurrences)
                for start, n in occurrences:
                    value[start:start + n] += part / n
        values.append(value)
        units.append(words)
        positions.append(np.arange(len(words)))
        score = scores[i, t] - intercept[t] - (scores[i, 1 - t] - intercept[1 - t] if pair else 0.0)
        quality.append({"completeness_gap": abs(float(value.sum()) - float(score))})
        if not words:
            empty.append(batch.ids[i])
    notes = [f"input {empty[0]} has no word the model reads ({len(empty)} such input{'s' if len(empty) > 1 else ''})"
             ] if empty else []
    return Attributions(values=values, units=units, positions=positions, quality=quality, notes=notes, settings={
        "attributes": ("the target class's log-odds against the other class (score difference, before temperature)"
                       if pair else "the target class's linear score (before temperature and softmax)"),
        "split": "each feature's coef x tf-idf value shared equally by the words of its occurrences",
        "baseline": "no features (the score is the intercept)"})


def ngram_occurrences(vectorizer, words: list[str]) -> dict[int, list[tuple[int, int]]]:
    """Feature index -> the (first word, n) of each of its n-gram occurrences among `words`."""
    vocab = vectorizer.vocabulary_
    lo, hi = vectorizer.ngram_range
    found: dict[int, list[tuple[int, int]]] = {}
    for n in range(lo, hi + 1):
        for start in range(len(words) - n + 1):
            feature = vocab.get(" ".join(words[start:start + n]))
            if feature is not None:
                found.setdefault(int(feature), []).append((start, n))
    return found


# ---------------------------------------------------------------- occlusion


class OcclusionParams(MethodParams):
    max_tokens: int = Field(256, ge=1, le=100_000,
                            description="tokens (words for TF-IDF) occluded per input, from its start: one forward "
                                        "pass each")
    batch_size: int = Field(64, ge=1, le=100_000, description="occluded copies per forward pass")


@register_explainer("occlusion", kinds=("text",), needs="forward", params=OcclusionParams,
                    summary="p(x) minus p(x with one token replaced by the reference), per token (Captum "
                            "FeatureAblation); any model, gradients or not")
def occlusion(subject, batch, params: OcclusionParams) -> Attributions:
    tok = subject.predictor.preprocessor.tokenizer
    occlude_one = _occlude_tokens if tok is not None else _occlude_words
    # A dynamically quantised model scales its activations by the whole batch's range, so a text's answer
    # moves with the texts beside it: each occluded copy is evaluated on its own, as `predict` would see it.
    per_pass = 1 if quantised_per_batch(subject) else params.batch_size
    values, units, positions, capped = [], [], [], []
    for i, target in enumerate(batch.target):
        unit, position, forward = occlude_one(subject, batch, i)
        if len(unit) > params.max_tokens:
            capped.append((batch.ids[i], len(unit)))
            unit, position = unit[:params.max_tokens], position[:params.max_tokens]
        values.append(ablate(forward, len(unit), int(target), per_pass))
        units.append(unit)
        positions.append(position)
    what = "tokens" if tok is not None else "words"
    notes = [f"{len(capped)} input(s) have more than max_tokens {params.max_tokens} {what} (input {capped[0][0]}: "
             f"{capped[0][1]}); only their first {params.max_tokens} are occluded"] if capped else []
    return Attributions(values=values, units=units, positions=positions, notes=notes, settings={
        "attributes": "the target class's probability: p(x) - p(x with the unit replaced)",
        "baseline": subject.reference.source, "occludes": f"one {what[:-1]} at a time",
        "max_tokens": params.max_tokens, "copies per forward pass": per_pass})


def quantised_per_batch(subject) -> bool:
    """Whether the model quantises activations per batch (torch-int8, onnx-int8): rows then affect each other."""
    onnx = subject.predictor.meta.get("onnx") or {}
    return subject.family == "torch-int8" or (subject.family == "onnx" and bool(onnx.get("quantization")))


def ablate(forward, n_units: int, target: int, batch_size: int) -> np.ndarray:
    """p(x) - p(x with unit j replaced), for each j < n_units, by Captum's FeatureAblation over keep-flags:
    forward maps rows of flags (k, n_units), 1 = kept, to probabilities (k, C)."""
    import torch
    from captum.attr import FeatureAblation

    if n_units == 0:
        return np.zeros(0)
    flags = torch.ones(1, n_units, dtype=torch.float64)
    attr = FeatureAblation(lambda keep: torch.as_tensor(forward(keep > 0.5))).attribute(
        flags, baselines=0.0, target=target, perturbations_per_eval=batch_size)
    return attr[0].double().numpy()


def _occlude_tokens(subject, batch, i: int):
    import torch

    row = batch.x[i]
    where = token_positions(row, kept_ids(subject))
    ref = int(subject.reference.value)
    tok = subject.predictor.preprocessor.tokenizer

    def forward(keep):  # (k, n) bool -> (k, C)
        cols = torch.as_tensor(where[:keep.shape[1]])
        ids = row.unsqueeze(0).repeat(len(keep), 1)  # (k, L)
        block = ids[:, cols]
        block[~keep] = ref
        ids[:, cols] = block
        return subject.proba(ids)

    return [tok.id_to_token(int(t)) for t in row[where]], where, forward


def _occlude_words(subject, batch, i: int):
    vec = subject.predictor.model.vectorizer
    text = input_texts(subject, batch)[i]
    pre = vec.build_preprocessor()(vec.decode(text))
    words, _ = analyzer_words(vec, text)
    spans = [m.span(1 if m.re.groups else 0) for m in re.finditer(vec.token_pattern, pre)]
    fill = f" {subject.reference.value} "

    def forward(keep):  # (k, n) bool -> (k, C)
        texts = []
        for flags in keep.tolist():
            parts, at = [], 0
            for (start, end), kept in zip(spans, flags):
                if not kept:
                    parts += [pre[at:start], fill]
                    at = end
            texts.append("".join(parts) + pre[at:])
        return subject.proba(texts)

    return words, np.arange(len(words)), forward


# ---------------------------------------------------------------- the view


@register_view("text")
class TextView(View):
    """Each text with its tokens (or words) highlighted: green toward the target label, red against it."""

    @staticmethod
    def shown(subject, batch) -> list[ShownText]:
        texts = input_texts(subject, batch)
        predicted = batch.proba.max(axis=1)
        tok = subject.predictor.preprocessor.tokenizer
        if tok is None:
            vec = subject.predictor.model.vectorizer
            return [ShownText(t, spans=analyzer_words(vec, t)[1], predicted_probability=float(p))
                    for t, p in zip(texts, predicted)]
        shown = []
        for text, encoding, p in zip(texts, tok.encode_batch(texts), predicted):
            ends = [end for end, special in zip((o[1] for o in encoding.offsets), encoding.special_tokens_mask)
                    if not special]
            shown.append(ShownText(text, spans=[tuple(o) for o in encoding.offsets],
                                   read_upto=max(ends, default=0) if encoding.overflowing else None,
                                   predicted_probability=float(p)))
        return shown

    @staticmethod
    def fragment(explanation) -> str:
        legend = ('<p class="note">Green: pushes the model toward the target label; red: away from it. The stronger '
                  "the colour, the nearer the token's attribution is to the largest in its text; hover a token for "
                  "its value.</p>")
        return f'<div class="text-explanations">{legend}{"".join(_item_html(it) for it in explanation)}</div>'

    @staticmethod
    def files(explanation, folder: Path) -> list[Path]:
        path = folder / "attributions.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["id", "unit", "position", "value"])
            for it in explanation:
                where = it.positions if it.positions is not None else range(len(it.values))
                for unit, pos, value in zip(it.units or [""] * len(it.values), where, it.values):
                    out.writerow([it.id, unit, int(pos), f"{float(value):.8g}"])
        return [path]


def _item_html(item) -> str:
    shown = item.shown
    p_pred = getattr(shown, "predicted_probability", None)
    if p_pred is None and item.predicted == item.target:
        p_pred = item.probability
    pred = f" ({p_pred:.3f})" if p_pred is not None else ""
    figures = "".join(f" · {html.escape(k.replace('_', ' '))} {v:.3g}" for k, v in item.quality.items())
    head = (f'<p style="margin:1.2em 0 .2em"><b>{html.escape(item.id)}</b> · predicted '
            f"<b>{html.escape(item.predicted)}</b>{pred} · target <b>{html.escape(item.target)}</b> "
            f"({item.probability:.3f}){figures}</p>")
    spans = getattr(shown, "spans", None)
    units = item.units or []
    if isinstance(shown, str) and spans is not None and item.positions is not None:
        body = _highlight_text(str(shown), spans, getattr(shown, "read_upto", None), units, item.positions,
                               item.values)
    else:
        body = _highlight_units(units, item.values)
    order = [int(i) for i in np.argsort(-item.values, kind="stable")[:3] if item.values[i] > 0]
    top = ", ".join(f"{html.escape(_unit_label(item, i))} {item.values[i]:+.3g}" for i in order)
    strongest = f'<p class="note" style="margin:.2em 0">strongest toward the target: {top}</p>' if top else ""
    return (f'{head}<p style="white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.8;margin:.2em 0">{body}</p>'
            f"{strongest}")


def _unit_label(item, i: int) -> str:
    """How unit i reads in a sentence: the piece and, for a piece of a longer word, the word ('p (in TCP)')."""
    unit = item.units[i] if item.units else str(i)
    piece = _display(unit).strip() or repr(unit)
    spans, text = getattr(item.shown, "spans", None), str(item.shown)
    if spans is None or item.positions is None or item.positions[i] >= len(spans):
        return piece
    start, end = spans[int(item.positions[i])]
    while start > 0 and not text[start - 1].isspace() and end - start < 40:
        start -= 1
    while end < len(text) and not text[end].isspace() and end - start < 40:
        end += 1
    word = text[start:end].strip().strip(".,;:!?\"'()[]{}")
    return f"{piece} (in {word})" if word and word.lower() != piece.lower() else piece


def _mark(text: str, value: float, scale: float, title: str) -> str:
    alpha = 0.85 * min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    rgb = TOWARD if value >= 0 else AGAINST
    return (f'<span style="background:rgba({rgb},{alpha:.2f});border-radius:2px" '
            f'title="{html.escape(title, quote=True)}">{html.escape(text)}</span>')


def _highlight_text(text: str, spans, read_upto, units, positions, values) -> str:
    """The text as written, each unit's characters highlighted; units whose characters overlap (byte-level BPE
    splits a letter into byte pieces) are shown as one mark with their summed value."""
    marks = []  # [start, end, [(unit, value), ...]]
    for unit, pos, value in zip(units, positions, values):
        if pos >= len(spans):
            continue
        start, end = spans[pos]
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end:
            marks.append([start, end, [(unit, float(value))]])
    marks.sort(key=lambda m: m[0])
    merged = []
    for m in marks:
        if merged and m[0] < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], m[1])
            merged[-1][2] += m[2]
        else:
            merged.append(m)
    scale = max((abs(sum(v for _, v in m[2])) for m in merged), default=0.0)
    out, at = [], 0
    for start, end, parts in merged:
        title = ", ".join(f"{u} {v:+.4g}" for u, v in parts)
        out += [html.escape(text[at:start]), _mark(text[start:end], sum(v for _, v in parts), scale, title)]
        at = end
    if read_upto is not None and read_upto < len(text):
        out.append(html.escape(text[at:read_upto]))
        out.append(f'<span style="color:#999" title="past the model\'s max_length: not read">'
                   f"{html.escape(text[max(at, read_upto):])}</span>")
    else:
        out.append(html.escape(text[at:]))
    return "".join(out)


def _display(unit: str) -> str:
    """A token as it reads in running text: WordPiece '##ing' joins its word, byte-level 'Ġword' and
    SentencePiece '▁word' start one."""
    if unit.startswith("##"):
        return unit[2:]
    if unit[:1] in ("Ġ", "▁"):
        return " " + unit[1:]
    return unit


def _highlight_units(units, values) -> str:
    """The units one after another (when the text's own characters are not at hand)."""
    byte_level = any(u[:1] in ("Ġ", "▁") for u in units)
    scale = max((abs(float(v)) for v in values), default=0.0)
    out = []
    for i, (unit, value) in enumerate(zip(units, values)):
        shown = _display(unit)
        if i and not byte_level and not unit.startswith("##"):
            shown = " " + shown
        lead = len(shown) - len(shown.lstrip(" "))
        out += [shown[:lead], _mark(shown[lead:], float(value), scale, f"{unit} {float(value):+.4g}")]
    return "".join(out)
