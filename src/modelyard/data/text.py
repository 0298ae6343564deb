"""Text classification data: builtin:debian-sections and csv:PATH with `data.text`, and their tokeniser.

The tokeniser is trained on the training split with Hugging Face `tokenizers` (byte-level BPE or
characters) and saved inside the model artifact, so a saved model reads raw text on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from modelyard.data.base import RawData
from modelyard.data.datasets import ArrayDataset
from modelyard.data.preprocess import PREPROCESSORS, non_utf8_line, read_csv, require_column, split_column_values
from modelyard.data.sources import register_source
from modelyard.errors import DataError

BUILTIN = Path(__file__).resolve().parent / "builtin"
PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"  # ids 0, 1, 2


@register_source("debian-sections", builtin=True, kinds=("text",))
def debian_sections(arg: str, cfg) -> RawData:
    """16-class Debian package descriptions with their own train/val/test split (see the README beside them)."""
    folder = BUILTIN / "debian-sections"
    frames = {split: pd.read_csv(folder / f"{split}.csv.gz") for split in ("train", "val", "test")}
    frame = pd.concat(frames.values(), ignore_index=True)
    split = np.concatenate([[name] * len(f) for name, f in frames.items()])
    return RawData(x=frame["text"].astype(str).tolist(), y=frame["label"].astype(str).to_numpy(), kind="text",
                   split=split, names=frame["package"].astype(str).tolist())


def text_table(path: Path, cfg) -> RawData:
    """A CSV with a text column (`data.text`) and a label column (`data.target`)."""
    frame = read_csv(path)
    for role, col in (("data.text", cfg.text), ("data.target", cfg.target)):
        if not col:
            raise DataError(f"{role} is not set; name a column of {path} (columns: {list(frame.columns)})")
        require_column(frame, col, path, role)
    lines = np.arange(len(frame)) + 2  # the header is line 1
    texts = frame[cfg.text].astype(object).fillna("").astype(str).str.strip()
    labels = frame[cfg.target]
    bad = (texts == "").to_numpy() | labels.isna().to_numpy()
    notes = []
    if bad.any():
        if cfg.nan_policy != "drop":
            shown = ", ".join(str(n) for n in lines[bad][:5]) + (" ..." if bad.sum() > 5 else "")
            raise DataError(f"{path}: {int(bad.sum())} row(s) with an empty text or label, on line(s) {shown}; "
                            "fill them in or set data.nan_policy: drop")
        notes.append(f"dropped {int(bad.sum())} row(s) with an empty text or label (data.nan_policy: drop)")
    keep = ~bad
    split = None
    if cfg.split_column:
        split = split_column_values(frame, cfg.split_column, path)[keep]
    return RawData(x=texts[keep].tolist(), y=labels[keep].astype(str).to_numpy(), kind="text", split=split,
                   names=[str(n) for n in lines[keep]], notes=notes)


@dataclass
class PretrainedTokenizer:
    """A pre-trained model's own tokeniser and the special ids the data layer needs from it."""

    tokenizer: Any  # tokenizers.Tokenizer
    pad_id: int | None
    eos_id: int | None
    max_length: int  # positions the model has


def fit_tokenizer(texts: list[str], cfg, specials: list[str] = ()):
    """A byte-level BPE or character tokeniser trained on `texts`; ids 0, 1 are <pad>, <unk>, then `specials`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    special_tokens = [PAD, UNK, *specials]
    if cfg.kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=special_tokens,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    else:
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tok.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(special_tokens=special_tokens, show_progress=False)
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), *([normalizers.Lowercase()] if cfg.lowercase else [])])
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_tokenizer(texts: list[str], cfg):
    """A tokeniser fitted to `texts` that prepends <cls>, truncates and pads to `cfg.max_length`."""
    from tokenizers import processors

    tok = fit_tokenizer(texts, cfg, specials=[CLS])
    tok.post_processor = processors.TemplateProcessing(single=f"{CLS} $A", special_tokens=[(CLS, tok.token_to_id(CLS))])
    tok.enable_truncation(cfg.max_length)
    tok.enable_padding(pad_id=tok.token_to_id(PAD), pad_token=PAD, length=cfg.max_length)
    return tok


@PREPROCESSORS.register("text")
class TextPreprocessor:
    """Texts as (max_length,) token ids: <cls> first, truncated, padded with <pad> (id 0).

    With no tokenizer it passes the texts through as strings, for models that read raw text (tfidf-linear).
    """

    kind = "text"

    def __init__(self, *, tokenizer, max_length: int, text_column: str | None, pad_id: int = 0) -> None:
        self.tokenizer, self.max_length, self.text_column = tokenizer, int(max_length), text_column
        self.pad_id = int(pad_id)
        self.notes: list[str] = []

    @property
    def input_shape(self) -> tuple[int]:
        return (self.max_length,)

    @property
    def model_inputs(self) -> dict:
        if self.tokenizer is None:
            return {}
        return {"vocab_size": self.tokenizer.get_vocab_size(), "pad_id": self.pad_id}

    @classmethod
    def fit(cls, raw: RawData, cfg, pretrained: PretrainedTokenizer | None = None) -> "TextPreprocessor":
        if pretrained is None:
            return cls(tokenizer=train_tokenizer(raw.x, cfg.tokenizer), max_length=cfg.tokenizer.max_length,
                       text_column=cfg.text)
        tok, length = pretrained.tokenizer, min(cfg.tokenizer.max_length, pretrained.max_length)
        pad = pretrained.pad_id if pretrained.pad_id is not None else pretrained.eos_id
        tok.enable_truncation(length)
        tok.enable_padding(pad_id=pad, pad_token=tok.id_to_token(pad), length=length)
        pre = cls(tokenizer=tok, max_length=length, text_column=cfg.text, pad_id=pad)
        if length < cfg.tokenizer.max_length:
            pre.notes.append(f"data.tokenizer.max_length {cfg.tokenizer.max_length} is more than the model's "
                             f"{pretrained.max_length} positions; using {length}")
        return pre

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokenizer": self.tokenizer and self.tokenizer.to_str(),
                "max_length": self.max_length, "text_column": self.text_column, "pad_id": self.pad_id}

    @classmethod
    def from_json(cls, d: dict) -> "TextPreprocessor":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(d["tokenizer"]) if d["tokenizer"] else None
        return cls(tokenizer=tok, max_length=d["max_length"], text_column=d["text_column"], pad_id=d.get("pad_id", 0))

    def encode(self, texts) -> tuple[torch.Tensor, int]:
        """Token ids (N, max_length) and how many texts were truncated."""
        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        encodings = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        return ids, sum(1 for e in encodings if e.overflowing)

    def transform(self, texts) -> torch.Tensor | list[str]:
        if isinstance(texts, pd.DataFrame):
            texts = texts[self._column(texts, "input")].astype(str).tolist()
        if self.tokenizer is None:
            return [texts] if isinstance(texts, str) else [str(t) for t in texts]
        return self.encode(texts)[0]

    def dataset(self, raw: RawData, targets: np.ndarray, *, train: bool):
        ids, truncated = self.encode(raw.x)
        if truncated:
            self.notes.append(f"{truncated} of {len(ids)} texts were longer than {self.max_length} tokens and were "
                              "truncated (data.tokenizer.max_length)")
        return ArrayDataset(ids, targets)

    def read_inputs(self, path: Path):
        """A CSV (the text column the model was trained on, or `text`) or a .txt file, one example per line."""
        if path.is_dir():
            raise DataError(f"{path} is a folder, and a text model reads a CSV or a .txt file of one text per line")
        if path.suffix.lower() == ".csv":
            frame = read_csv(path)
            col = self._column(frame, str(path))
            return frame[col].astype(object).fillna("").astype(str).tolist(), [str(i + 2) for i in range(len(frame))]
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{path}: {non_utf8_line(path)}") from None
        kept = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
        if not kept:
            raise DataError(f"{path} holds no text; write one example per line")
        return [t for _, t in kept], [str(n) for n, _ in kept]

    def _column(self, frame: pd.DataFrame, where: str) -> str:
        for col in (self.text_column, "text"):
            if col and col in frame.columns:
                return col
        raise DataError(f"{where}: no text column {self.text_column or 'text'!r}; columns: {list(frame.columns)}")
