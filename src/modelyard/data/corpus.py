"""Language-modelling corpora: `text:PATH` (a .txt file or a folder of them) and builtin:debian-descriptions.

Every non-blank line is a document. Documents are split into train and val by the seed, encoded with a
tokeniser (trained on the training split, or a pre-trained model's own), joined with an end-of-text
token, and cut into blocks of `data.block_size` tokens whose targets are the same tokens shifted by one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from modelyard.data.base import RawData
from modelyard.data.datasets import ArrayDataset
from modelyard.data.preprocess import PREPROCESSORS, non_utf8_line
from modelyard.data.sources import register_source
from modelyard.data.text import BUILTIN, fit_tokenizer
from modelyard.errors import DataError

EOS = "<eos>"


@register_source("text", kinds=("corpus",))
def text_corpus(arg: str, cfg) -> RawData:
    """Every non-blank line of PATH (a .txt file) or of every .txt file under PATH (a folder)."""
    path = Path(arg).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"text:{path} is a folder with no .txt files in it; add some or point at one file")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"text:{path}: no such file or folder")
    docs, names = [], []
    for f in files:
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{f}: {non_utf8_line(f)}") from None
        for i, line in enumerate(lines):
            if line.strip():
                docs.append(line.strip())
                names.append(f"{f.name}:{i + 1}")
    if not docs:
        raise DataError(f"text:{path} holds no text (every line is blank)")
    return RawData(x=docs, y=np.full(len(docs), "", dtype=object), kind="corpus", names=names)


@register_source("debian-descriptions", builtin=True, kinds=("corpus",))
def debian_descriptions(arg: str, cfg) -> RawData:
    """The debian-sections descriptions as a corpus, keeping that set's train/val split (its test split unused)."""
    folder = BUILTIN / "debian-sections"
    frames = {split: pd.read_csv(folder / f"{split}.csv.gz") for split in ("train", "val")}
    docs = [t for f in frames.values() for t in f["text"].astype(str)]
    split = np.concatenate([[name] * len(f) for name, f in frames.items()])
    names = [p for f in frames.values() for p in f["package"].astype(str)]
    return RawData(x=docs, y=np.full(len(docs), "", dtype=object), kind="corpus", split=split, names=names)


@PREPROCESSORS.register("corpus")
class CorpusPreprocessor:
    """Documents -> one token stream (documents joined by <eos>) -> (block_size,) inputs and shifted targets."""

    kind = "corpus"

    def __init__(self, *, tokenizer, block_size: int, eos_id: int) -> None:
        self.tokenizer, self.block_size, self.eos_id = tokenizer, int(block_size), int(eos_id)
        self.notes: list[str] = []

    @property
    def input_shape(self) -> tuple[int]:
        return (self.block_size,)

    @property
    def model_inputs(self) -> dict:
        return {"vocab_size": self.tokenizer.get_vocab_size(), "task": "lm"}

    @classmethod
    def fit(cls, raw: RawData, cfg, pretrained=None) -> "CorpusPreprocessor":
        if pretrained is not None:
            tok, eos = pretrained.tokenizer, pretrained.eos_id
            if eos is None:
                raise DataError("the pre-trained tokenizer has no end-of-text token to join documents with")
        else:
            tok = fit_tokenizer(raw.x, cfg.tokenizer, specials=[EOS])
            eos = tok.token_to_id(EOS)
        tok.no_padding()
        tok.no_truncation()
        return cls(tokenizer=tok, block_size=cfg.block_size, eos_id=eos)

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokenizer": self.tokenizer.to_str(), "block_size": self.block_size,
                "eos_id": self.eos_id}

    @classmethod
    def from_json(cls, d: dict) -> "CorpusPreprocessor":
        from tokenizers import Tokenizer

        return cls(tokenizer=Tokenizer.from_str(d["tokenizer"]), block_size=d["block_size"], eos_id=d["eos_id"])

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def stream(self, docs: list[str]) -> np.ndarray:
        """All documents as one array of token ids, each followed by <eos>."""
        out: list[int] = []
        for enc in self.tokenizer.encode_batch(list(docs), add_special_tokens=False):
            out.extend(enc.ids)
            out.append(self.eos_id)
        return np.asarray(out, dtype=np.int64)

    def dataset(self, raw: RawData, targets: np.ndarray, *, train: bool):
        ids = self.stream(raw.x)
        T = self.block_size
        n = (len(ids) - 1) // T
        if n == 0:
            where = "training" if train else "validation"
            raise DataError(f"the {where} split holds {len(ids)} tokens, too few for one block of "
                            f"data.block_size={T} (+1 for the shifted target); lower data.block_size or add text")
        x = torch.from_numpy(ids[:n * T].reshape(n, T))
        y = torch.from_numpy(ids[1:n * T + 1].reshape(n, T))
        return ArrayDataset(x, y)

    def unigram_log_probs(self, docs: list[str]) -> np.ndarray:
        """Add-one-smoothed log frequency of every token id in `docs`: the unigram baseline."""
        counts = np.bincount(self.stream(docs), minlength=self.tokenizer.get_vocab_size()).astype(np.float64) + 1.0
        return np.log(counts / counts.sum())

    def transform(self, texts):
        raise DataError("a language model does not predict labels; use `modelyard generate RUN --prompt ...`")

    def read_inputs(self, path: Path):
        raise DataError("a language model does not predict labels; use `modelyard generate RUN --prompt ...`")

