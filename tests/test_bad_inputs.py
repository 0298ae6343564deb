"""Every bad input a user can give ends in one clear message, never a traceback: a table of them.

Each case runs `modelyard ARGS` in-process through `modelyard.cli.main` and checks that it exits with status 2,
prints no traceback, says in one or two lines on stderr what is wrong, where, and how to fix it (the fragments
listed with the case), and leaves every file the user had as it was. The cases cover config files, data files,
images given to predict, command-line arguments and tampered model folders; a few also run as real
subprocesses, some under a pseudo-terminal.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pexpect
import pytest
import yaml

from tests.conftest import cli_in_process, run_cli, tiny_config

# ---------------------------------------------------------------- inputs the cases are made from

BASE = {  # a valid experiment; each config case breaks one thing in it
    "name": "tiny", "seed": 0,
    "data": {"source": "builtin:digits"},
    "model": {"name": "mlp", "hidden_sizes": [16]},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.01},
    "evaluate": {"bootstrap": 10},
}
DELETE = object()


def experiment(**edits) -> str:
    """BASE as YAML with dotted keys replaced (`train__lr=0` sets train.lr; DELETE removes the key)."""
    cfg = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        *parents, last = dotted.split("__")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return yaml.safe_dump(cfg, sort_keys=False)


def png(width: int, height: int, *, colour: bool = False) -> bytes:
    """A valid PNG; large sizes cost nothing (one zlib stream of zero rows), which is what makes a bomb."""
    channels = 3 if colour else 1
    row = b"\x00" + b"\x00" * (width * channels)
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2 if colour else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def bomb_png() -> bytes:
    """A 1 MB file that decodes to 20,000 x 20,000 pixels (400 megapixels)."""
    return png(20_000, 20_000)


WINE_COLUMNS = ["alcohol", "malic_acid", "ash", "cultivar"]


def wine(rows: list[list] | None = None, *, header: list[str] = WINE_COLUMNS) -> str:
    """A small wine-like CSV: three numeric features and the label, 12 rows of 3 classes unless `rows` is given."""
    if rows is None:
        rows = [[13.0 + i / 10, 1.5 + (i % 3) / 2, 2.0 + (i % 4) / 5, f"class_{i % 3}"] for i in range(12)]
    return "\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n"


def wine_with(row: int, column: str, value: str) -> str:
    """`wine()` with one cell replaced; `row` counts data rows from 0 (file line row + 2)."""
    lines = wine().splitlines()
    cells = lines[row + 1].split(",")
    cells[WINE_COLUMNS.index(column)] = value
    lines[row + 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def csv_experiment(**data) -> str:
    """An experiment on data.csv beside it (target cultivar), with data fields replaced."""
    return experiment(data={"source": "csv:data.csv", "target": "cultivar", **data})


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # {d}: the case's folder; {run}: the shared digits run; {tab}: the shared table run
    expect: tuple[str, ...]  # fragments the message must hold (case-insensitive): what, where, how
    files: dict = field(default_factory=dict)  # written into {d} first: name -> text or bytes
    tamper: Callable[[Path], None] | None = None  # applied to a copy of the digits run at {d}/run
    code: int = 2


def config_case(id: str, text: str | bytes, *expect: str, sets: tuple[str, ...] = (), where: str = "exp.yaml") -> Case:
    args = [a for s in sets for a in ("--set", s)]
    return Case(id, ("train", "{d}/exp.yaml", "--output", "{d}/runs", *args), (where, *expect),
                files={"exp.yaml": text})


def data_case(id: str, csv: str | bytes | None, *expect: str, **data) -> Case:
    files = {"exp.yaml": csv_experiment(**data)}
    if csv is not None:
        files["data.csv"] = csv
    return Case(id, ("train", "{d}/exp.yaml", "--output", "{d}/runs"), expect, files=files)


def images_case(id: str, classes: dict[str, dict[str, bytes]], *expect: str) -> Case:
    files = {f"images/{cls}/{name}": data for cls, imgs in classes.items() for name, data in imgs.items()}
    files["exp.yaml"] = experiment(data__source="imagefolder:images")
    return Case(id, ("train", "{d}/exp.yaml", "--output", "{d}/runs"), expect, files=files)


def predict_case(id: str, files: dict, input: str, *expect: str, run: str = "{run}") -> Case:
    return Case(id, ("predict", run, input), expect, files=files)


def tamper_case(id: str, tamper: Callable[[Path], None], *expect: str, command: str = "predict") -> Case:
    argv = ("predict", "{d}/run", "{d}/seven.png") if command == "predict" else ("evaluate", "{d}/run")
    return Case(id, argv, expect, files={"seven.png": png(8, 8)}, tamper=tamper)


GOOD_IMAGES = {"a": {f"{i}.png": png(8, 8) for i in range(4)}, "b": {f"{i}.png": png(8, 8) for i in range(4)}}

CONFIG_CASES = [
    config_case("yaml-unclosed-bracket", "name: [tiny\ndata: {source: builtin:digits}\n", "not valid YAML", "line"),
    config_case("yaml-tab-indent", "name: t\ndata:\n\tsource: builtin:digits\n", "line 3", "tab", "spaces"),
    config_case("yaml-bad-indent", "name: t\ndata:\n  source: builtin:digits\n   x: 1\n", "not valid YAML", "line 4"),
    config_case("yaml-latin1", experiment(name="tiny").replace("tiny", "caf\u00e9").encode("latin-1"),
                "line 1", "UTF-8", "iconv"),
    config_case("yaml-binary", png(2, 2), "UTF-8"),
    config_case("yaml-empty", "", "empty", "examples/"),
    config_case("yaml-comments-only", "# nothing here\n", "empty", "examples/"),
    config_case("yaml-top-level-list", "- a\n- b\n", "top level must be a mapping"),
    config_case("yaml-top-level-scalar", "hello\n", "top level must be a mapping"),
    config_case("yaml-duplicate-key", experiment() + "train:\n  lr: 0.5\n", "duplicate key", "train", "line"),
    config_case("yaml-duplicate-nested-key", experiment().replace("  lr: 0.01", "  lr: 0.01\n  lr: 0.02"),
                "duplicate key", "train.lr", "line"),
    config_case("missing-data", experiment(data=DELETE), "data", "required key is missing", "add it"),
    config_case("missing-model", experiment(model=DELETE), "model", "required key is missing"),
    config_case("missing-name", experiment(name=DELETE), "name", "required key is missing"),
    config_case("name-with-space", experiment(name="my run"), "name", "letters, digits"),
    config_case("name-empty", experiment(name=""), "name", "letters, digits"),
    config_case("unknown-top-key", experiment(epochs=3), "epochs", "unknown key", "valid keys here"),
    config_case("unknown-train-key", experiment(train__lrr=0.1), "train.lrr", "did you mean 'train.lr'"),
    config_case("unknown-model-key", experiment(model__hiden_sizes=[8]), "model.hiden_sizes",
                "did you mean 'model.hidden_sizes'"),
    config_case("unknown-model-name", experiment(model__name="mlpp"), "model.name", "did you mean 'mlp'"),
    config_case("model-without-name", experiment(model={"hidden_sizes": [8]}), "model", "missing 'name'", "lenet5"),
    config_case("model-is-a-string", experiment(model="mlp"), "model", "section", "name: mlp"),
    config_case("train-is-a-number", experiment(train=5), "train", "section"),
    config_case("data-is-null", experiment(data=None), "data", "section"),
    config_case("seed-negative", experiment(seed=-1), "seed", "greater than or equal to 0"),
    config_case("seed-huge", experiment(seed=2**64), "seed", "less than or equal to 4294967295"),
    config_case("seed-text", experiment(seed="abc"), "seed", "integer"),
    config_case("seed-fraction", experiment(seed=1.5), "seed", "integer"),
    config_case("seed-negative-from-set", experiment(), "seed", "from --set", "greater than or equal to 0",
                sets=("seed=-1",)),
    config_case("epochs-zero", experiment(train__epochs=0), "train.epochs", "greater than or equal to 1"),
    config_case("epochs-negative-from-set", experiment(), "train.epochs", "from --set", sets=("train.epochs=-3",)),
    config_case("epochs-text", experiment(train__epochs="ten"), "train.epochs", "integer"),
    config_case("batch-size-zero", experiment(train__batch_size=0), "train.batch_size", "greater than or equal to 1"),
    config_case("batch-size-negative", experiment(train__batch_size=-8), "train.batch_size", "greater than"),
    config_case("lr-zero", experiment(train__lr=0), "train.lr", "greater than 0"),
    config_case("lr-negative", experiment(train__lr=-0.1), "train.lr", "greater than 0"),
    config_case("lr-text", experiment(train__lr="fast"), "train.lr", "number"),
    config_case("lr-infinite", experiment().replace("lr: 0.01", "lr: .inf"), "train.lr", "finite"),
    config_case("lr-nan", experiment().replace("lr: 0.01", "lr: .nan"), "train.lr", "finite"),
    config_case("lr-nan-from-set", experiment(), "train.lr", "from --set", "finite", sets=("train.lr=.nan",)),
    config_case("momentum-one", experiment(train__momentum=1.0), "train.momentum", "less than 1"),
    config_case("weight-decay-negative", experiment(train__weight_decay=-1), "train.weight_decay", "greater than"),
    config_case("l1-negative", experiment(train__l1=-0.5), "train.l1", "greater than"),
    config_case("optimizer-unknown", experiment(train__optimizer="sgdd"), "train.optimizer", "'sgd'"),
    config_case("schedule-unknown", experiment(train__schedule="linear"), "train.schedule", "'cosine'"),
    config_case("precision-unknown", experiment(train__precision="fp8"), "train.precision", "'bf16'"),
    config_case("device-unknown", experiment(train__device="tpu"), "train.device", "'cuda'"),
    config_case("grad-clip-zero", experiment(train__grad_clip=0), "train.grad_clip", "greater than 0"),
    config_case("grad-accum-zero", experiment(train__grad_accum_steps=0), "train.grad_accum_steps", "greater"),
    config_case("monitor-typo", experiment(train__monitor="val_acc"), "train.monitor", "val_accuracy"),
    config_case("patience-zero", experiment(train__early_stopping={"patience": 0}), "train.early_stopping.patience",
                "greater than or equal to 1"),
    config_case("min-delta-negative", experiment(train__early_stopping={"min_delta": -1}),
                "train.early_stopping.min_delta", "greater than"),
    config_case("gamma-above-one", experiment(train__gamma=2), "train.gamma", "less than or equal to 1"),
    config_case("warmup-negative", experiment(train__warmup_epochs=-1), "train.warmup_epochs", "greater than"),
    config_case("step-size-zero", experiment(train__step_size=0), "train.step_size", "greater than"),
    config_case("checkpoint-steps-zero", experiment(train__checkpoint_every_steps=0),
                "train.checkpoint_every_steps", "greater than"),
    config_case("split-val-zero", experiment(data__split={"val": 0}), "data.split.val", "greater than 0"),
    config_case("split-leaves-nothing", experiment(data__split={"val": 0.5, "test": 0.45}), "data.split",
                "keep it under 0.9"),
    config_case("split-test-above-one", experiment(data__split={"test": 1.5}), "data.split.test", "less than 1"),
    config_case("split-seed-negative", experiment(data__split={"seed": -5}), "data.split.seed",
                "greater than or equal to 0"),
    config_case("nan-policy-unknown", experiment(data__nan_policy="ignore"), "data.nan_policy", "'impute'"),
    config_case("max-length-huge", experiment(data__tokenizer={"max_length": 10**9}), "data.tokenizer.max_length",
                "less than or equal to"),
    config_case("max-length-tiny", experiment(data__tokenizer={"max_length": 2}), "data.tokenizer.max_length",
                "greater than or equal to 4"),
    config_case("vocab-size-tiny", experiment(data__tokenizer={"vocab_size": 10}), "data.tokenizer.vocab_size",
                "greater than or equal to 32"),
    config_case("vocab-size-huge", experiment(data__tokenizer={"vocab_size": 10**12}), "data.tokenizer.vocab_size",
                "less than or equal to"),
    config_case("tokenizer-kind-unknown", experiment(data__tokenizer={"kind": "wordpiece"}),
                "data.tokenizer.kind", "'bpe'"),
    config_case("block-size-one", experiment(data__block_size=1), "data.block_size", "greater than or equal to 2"),
    config_case("block-size-huge", experiment(data__block_size=10**9), "data.block_size", "less than or equal to"),
    config_case("image-size-zero", experiment(data__image={"size": 0}), "data.image.size", "from 1 to 4096"),
    config_case("image-size-huge", experiment(data__image={"size": 10**6}), "data.image.size", "from 1 to 4096"),
    config_case("image-size-three-numbers", experiment(data__image={"size": [8, 8, 8]}), "data.image.size",
                "[height, width]"),
    config_case("image-size-negative-pair", experiment(data__image={"size": [8, -8]}), "data.image.size",
                "from 1 to 4096"),
    config_case("image-channels-two", experiment(data__image={"channels": 2}), "data.image.channels", "1 or 3"),
    config_case("crop-padding-zero", experiment(data__image={"augment": {"crop_padding": 0}}),
                "data.image.augment.crop_padding", "greater than"),
    config_case("num-workers-negative", experiment(data__num_workers=-1), "data.num_workers", "greater than"),
    config_case("features-not-a-list", experiment(data__features="alcohol"), "data.features", "list"),
    config_case("categorical-not-a-list", experiment(data__categorical="colour"), "data.categorical", "list"),
    config_case("hidden-size-zero", experiment(model__hidden_sizes=[0]), "model.hidden_sizes.0", "greater than 0"),
    config_case("hidden-size-huge", experiment(model__hidden_sizes=[10**9]), "model.hidden_sizes.0",
                "less than or equal to"),
    config_case("hidden-sizes-text", experiment(model__hidden_sizes="big"), "model.hidden_sizes", "list"),
    config_case("dropout-one", experiment(model__dropout=1.0), "model.dropout", "less than 1"),
    config_case("dropout-text", experiment(model__dropout="high"), "model.dropout", "number"),
    config_case("activation-unknown", experiment(model__activation="swish"), "model.activation", "'gelu'"),
    config_case("lenet-one-channel-list", experiment(model={"name": "lenet5", "channels": [6]}), "model.channels",
                "at least 2"),
    config_case("transformer-heads-do-not-divide", experiment(model={"name": "text-transformer", "d_model": 10,
                "n_heads": 4}), "model", "multiple of n_heads"),
    config_case("d-model-huge", experiment(model={"name": "text-transformer", "d_model": 10**7, "n_heads": 1}),
                "model.d_model", "less than or equal to"),
    config_case("gpt-context-one", experiment(model={"name": "gpt", "context_length": 1}), "model.context_length",
                "greater than or equal to 2"),
    config_case("tfidf-with-pretrained", experiment(model={"name": "tfidf-linear", "pretrained": "w.pt"}),
                "model", "remove pretrained"),
    config_case("hf-finetune-unknown", experiment(model={"name": "hf", "finetune": "partial"}), "model.finetune",
                "'lora'"),
    config_case("hf-lora-rank-zero", experiment(model={"name": "hf", "finetune": "lora", "lora": {"r": 0}}),
                "model.lora.r", "greater than or equal to 1"),
    config_case("metric-unknown", experiment(evaluate__metric="auc"), "evaluate.metric", "'roc_auc_ovr_macro'"),
    config_case("bootstrap-negative", experiment(evaluate__bootstrap=-1), "evaluate.bootstrap", "greater than"),
    config_case("ece-bins-one", experiment(evaluate__ece_bins=1), "evaluate.ece_bins", "greater than or equal to 2"),
    config_case("set-without-equals", experiment(), "train.lr", "section.key=value", sets=("train.lr",), where="--set"),
    config_case("set-without-key", experiment(), "section.key=value", sets=("=5",), where="--set"),
    config_case("set-into-a-value", experiment(), "is a value, not a section", sets=("train.lr.x=1",),
                where="--set"),
    config_case("set-unknown-key", experiment(), "train.lrr", "from --set", "did you mean 'train.lr'",
                sets=("train.lrr=0.1",)),
    config_case("set-wrong-type", experiment(), "train.batch_size", "from --set", "integer",
                sets=("train.batch_size=many",)),
]

# what the user must do to get the data back, named for the example data sets
MAKE_DATA = "python {d}/examples/make_data.py"

DATA_CASES = [
    data_case("csv-empty-file", "", "data.csv", "empty", "header row"),
    data_case("csv-blank-lines", "\n\n\n", "data.csv", "empty"),
    data_case("csv-header-only", wine(rows=[]), "data.csv", "no data rows", "add"),
    data_case("csv-one-class", wine([[13.0 + i, 2.0, 2.5, "class_0"] for i in range(9)]), "data.csv", "cultivar",
              "one class", "class_0", "at least two"),
    data_case("csv-missing-target-column", wine(), "data.csv", "no column 'label'", "cultivar", target="label"),
    data_case("csv-target-not-set", wine(), "data.target is not set", "data.csv", target=None),
    data_case("csv-non-numeric-cell", wine_with(3, "alcohol", "abc"), "data.csv", "alcohol", "line 5",
              "not a number"),
    data_case("csv-inf-cell", wine_with(1, "alcohol", "inf"), "data.csv", "alcohol", "line 3", "finite"),
    data_case("csv-minus-inf-cell", wine_with(2, "ash", "-inf"), "data.csv", "ash", "line 4", "finite"),
    data_case("csv-1e308-cell", wine_with(1, "malic_acid", "1e308"), "data.csv", "malic_acid", "line 3",
              "too large"),
    data_case("csv-1e39-cell", wine_with(4, "alcohol", "1e39"), "data.csv", "alcohol", "line 6", "too large"),
    data_case("csv-nan-cell", wine_with(2, "ash", "nan"), "data.csv", "ash", "line 4", "nan_policy"),
    data_case("csv-empty-cell", wine_with(2, "ash", ""), "data.csv", "ash", "line 4", "fill them in"),
    data_case("csv-empty-label", wine_with(5, "cultivar", ""), "data.csv", "cultivar", "line 7", "fill them in"),
    data_case("csv-latin1", wine_with(0, "cultivar", "caf\u00e9").encode("latin-1"), "data.csv", "line 2", "UTF-8",
              "iconv"),
    data_case("csv-binary", png(4, 4), "data.csv", "UTF-8"),
    data_case("csv-ragged-row", wine().replace("\n13.1,", "\n13.1,9,", 1), "data.csv", "line 3", "fields"),
    data_case("csv-unclosed-quote", wine().replace("\n13.1,", '\n"13.1,', 1), "data.csv", "parse"),
    data_case("csv-feature-not-in-file", wine(), "data.csv", "no column 'alcool'", "did you mean 'alcohol'",
              features=["alcool"]),
    data_case("csv-split-column-missing", wine(), "data.csv", "no column 'part'", split_column="part"),
    data_case("csv-split-column-bad-values", wine() .replace("cultivar", "part", 1), "data.csv", "part",
              "use only train, val and test", target="ash", split_column="part"),
    data_case("csv-only-the-label", wine([["class_0"]] * 9, header=["cultivar"]), "data.csv", "no feature columns"),
    data_case("csv-rare-class", wine([[13.0 + i, 2.0, 2.5, f"class_{min(i, 1)}"] for i in range(9)] +
                                     [[1, 2, 3, "class_9"]]), "class_9", "fewer than 3", "add examples"),
    data_case("csv-impute-empty-column", wine([[13.0 + i, "", 2.5, f"class_{i % 3}"] for i in range(9)]), "data.csv",
              "malic_acid", "no value", "every", nan_policy="impute"),
    data_case("csv-drop-leaves-nothing", wine([["", 2.0, 2.5, f"class_{i % 3}"] for i in range(9)]), "data.csv",
              "no rows left", nan_policy="drop"),
    Case("csv-source-is-a-folder", ("train", "{d}/exp.yaml", "--output", "{d}/runs"), ("data.csv", "a folder", "CSV file"),
         files={"exp.yaml": csv_experiment(), "data.csv/.keep": ""}),
    data_case("csv-missing-file", None, "data.csv", "not found", source="csv:data.csv"),
    data_case("text-column-missing", wine(), "data.csv", "no column 'description'", text="description"),
    data_case("text-empty-texts", "description,cultivar\n,class_0\n,class_1\n", "data.csv", "empty text",
              "fill them in", text="description"),
    Case("example-csv-missing-says-how-to-make-it", ("train", "{d}/examples/tab.yaml", "--output", "{d}/runs"),
         ("wine.csv", "not found", MAKE_DATA), files={
             "examples/make_data.py": "print('writes data/')\n",
             "examples/tab.yaml": experiment(data={"source": "csv:data/wine.csv", "target": "cultivar"})}),
    Case("example-images-missing-say-how-to-make-them", ("train", "{d}/examples/img.yaml", "--output", "{d}/runs"),
         ("shapes", "not found", MAKE_DATA), files={
             "examples/make_data.py": "print('writes data/')\n",
             "examples/img.yaml": experiment(data={"source": "imagefolder:data/shapes"})}),
    Case("source-without-scheme", ("train", "{d}/exp.yaml", "--output", "{d}/runs"), ("data.source", "'digits'", "builtin:digits"),
         files={"exp.yaml": experiment(data__source="digits")}),
    Case("source-unknown-builtin", ("train", "{d}/exp.yaml", "--output", "{d}/runs"),
         ("builtin:nope", "builtin:digits"), files={"exp.yaml": experiment(data__source="builtin:nope")}),
    Case("source-unknown-scheme", ("train", "{d}/exp.yaml", "--output", "{d}/runs"), ("'ftp:", "csv:PATH"),
         files={"exp.yaml": experiment(data__source="ftp:x")}),
    Case("pretrained-file-missing", ("train", "{d}/exp.yaml", "--output", "{d}/runs"),
         ("weights.safetensors", "not found", "model.pretrained"),
         files={"exp.yaml": experiment(model__pretrained="weights.safetensors")}),
    Case("pretrained-file-garbage", ("train", "{d}/exp.yaml", "--output", "{d}/runs"),
         ("w.safetensors", "cannot read weights"),
         files={"exp.yaml": experiment(model__pretrained="w.safetensors"), "w.safetensors": b"\x00" * 64}),
    images_case("images-folder-missing", {}, "images", "not found", "one sub-folder per class"),
    images_case("images-no-class-folders", {".": {"x.png": png(8, 8)}}, "images", "no class sub-folders"),
    images_case("images-class-without-images", {"a": {"notes.txt": b"hello"}, "b": {"0.png": png(8, 8)}},
                "images/a", "holds no images"),
    images_case("images-corrupt-file", {**GOOD_IMAGES, "c": {"bad.png": b"not a png at all"}}, "bad.png",
                "unreadable", "remove or replace"),
    images_case("images-truncated-file", {**GOOD_IMAGES, "c": {"cut.png": png(8, 8)[:40]}}, "cut.png",
                "remove or replace"),
    images_case("images-decompression-bomb", {**GOOD_IMAGES, "c": {"bomb.png": bomb_png()}}, "bomb.png",
                "pixels", "limit"),
    images_case("images-one-class", {"a": GOOD_IMAGES["a"]}, "one class", "'a'", "at least two"),
    images_case("images-split-without-train", {"val/a": {"0.png": png(8, 8)}, "val/b": {"0.png": png(8, 8)}},
                "no train/", "add train/"),
]

PREDICT_CASES = [
    predict_case("input-missing", {}, "{d}/nope.png", "nope.png", "not found"),
    predict_case("image-not-an-image", {"x.png": b"plain text, not a PNG"}, "{d}/x.png", "x.png",
                 "cannot read image", "replace"),
    predict_case("image-truncated", {"x.png": png(8, 8)[:33]}, "{d}/x.png", "x.png", "cannot read image"),
    predict_case("image-zero-bytes", {"x.png": b""}, "{d}/x.png", "x.png", "cannot read image"),
    predict_case("image-decompression-bomb", {"bomb.png": bomb_png()}, "{d}/bomb.png", "bomb.png", "pixels",
                 "limit"),
    predict_case("image-bomb-in-a-folder", {"in/a.png": png(8, 8), "in/bomb.png": bomb_png()}, "{d}/in",
                 "bomb.png", "pixels", "limit"),
    predict_case("image-broken-in-a-folder", {"in/a.png": png(8, 8), "in/b.png": b"GIF89a broken"}, "{d}/in",
                 "b.png", "cannot read image"),
    predict_case("folder-without-images", {"in/notes.txt": "hello"}, "{d}/in", "no images found", "in"),
    predict_case("csv-to-an-image-model", {"x.csv": wine()}, "{d}/x.csv", "x.csv", "cannot read image",
                 "image files"),
    predict_case("run-missing", {"x.png": png(8, 8)}, "{d}/x.png", "no-such-run", "not found", run="{d}/no-such-run"),
    predict_case("run-is-an-unfinished-run", {"r/config.yaml": experiment(), "x.png": png(8, 8)}, "{d}/x.png",
                 "did not finish", "--resume", run="{d}/r"),
    predict_case("run-is-an-empty-folder", {"r/.keep": "", "x.png": png(8, 8)}, "{d}/x.png", "r", "no saved model",
                 "modelyard train", run="{d}/r"),
    Case("output-is-unwritable", ("predict", "{run}", "{d}/x.png", "--output", "/proc/modelyard/p.csv"),
         ("/proc/modelyard/p.csv", "cannot write", "--output"), files={"x.png": png(8, 8)}),
    Case("output-is-a-folder", ("predict", "{run}", "{d}/x.png", "--output", "{d}/out"),
         ("--output", "directory"), files={"x.png": png(8, 8), "out/.keep": ""}),
    predict_case("table-empty-csv", {"x.csv": ""}, "{d}/x.csv", "x.csv", "empty", run="{tab}"),
    predict_case("table-header-only", {"x.csv": "alcohol,malic_acid,ash\n"}, "{d}/x.csv", "x.csv", "no data rows",
                 run="{tab}"),
    predict_case("table-missing-column", {"x.csv": "alcohol,ash\n13,2\n"}, "{d}/x.csv", "x.csv", "malic_acid",
                 "missing column", run="{tab}"),
    predict_case("table-non-numeric", {"x.csv": "alcohol,malic_acid,ash\n13,2,2\n13,two,2\n"}, "{d}/x.csv",
                 "x.csv", "malic_acid", "line 3", "not a number", run="{tab}"),
    predict_case("table-inf", {"x.csv": "alcohol,malic_acid,ash\n13,2,2\ninf,2,2\n"}, "{d}/x.csv", "x.csv",
                 "alcohol", "line 3", "finite", run="{tab}"),
    predict_case("table-1e308", {"x.csv": "alcohol,malic_acid,ash\n1e308,2,2\n"}, "{d}/x.csv", "x.csv", "alcohol",
                 "line 2", "too large", run="{tab}"),
    predict_case("table-overflows-the-model", {"x.csv": "alcohol,malic_acid,ash\n13,2,2\n13,2,9e37\n"}, "{d}/x.csv",
                 "x.csv", "ash", "line 3", "overflows this model's scaling", run="{tab}"),
    predict_case("table-empty-cell", {"x.csv": "alcohol,malic_acid,ash\n13,,2\n"}, "{d}/x.csv", "x.csv",
                 "malic_acid", "line 2", "empty", run="{tab}"),
    predict_case("table-latin1", {"x.csv": "alcohol,malic_acid,ash,note\n13,2,2,caf\u00e9\n".encode("latin-1")},
                 "{d}/x.csv", "x.csv", "UTF-8", "iconv", run="{tab}"),
    predict_case("table-input-is-a-folder", {"in/x.csv": wine()}, "{d}/in", "in", "a CSV file", run="{tab}"),
]


def remove(name: str):
    return lambda run: (run / "model" / name).unlink()


def rewrite(name: str, data: bytes | Callable[[bytes], bytes]):
    def apply(run: Path) -> None:
        path = run / "model" / name
        path.write_bytes(data(path.read_bytes()) if callable(data) else data)
    return apply


def edit_meta(change: Callable[[dict], object]):
    def apply(run: Path) -> None:
        path = run / "model" / "modelyard.json"
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))
    return apply


def edit_tensors(change: Callable[[dict], object]):
    def apply(run: Path) -> None:
        from safetensors.torch import load_file, save_file

        path = run / "model" / "model.safetensors"
        tensors = load_file(str(path))
        change(tensors)
        save_file(tensors, str(path))
    return apply


def symlink_weights_outside(run: Path) -> None:
    outside = run.parent / "outside.safetensors"
    shutil.copy(run / "model" / "model.safetensors", outside)
    (run / "model" / "model.safetensors").unlink()
    (run / "model" / "model.safetensors").symlink_to(outside)


def weights_beside_run(value: str):
    def apply(run: Path) -> None:
        shutil.copy(run / "model" / "model.safetensors", run.parent / "stolen.safetensors")
        edit_meta(lambda m: m.update(weights=value))(run)
    return apply


def replace_model_folder_with_a_file(run: Path) -> None:
    shutil.rmtree(run / "model")
    (run / "model").write_text("not a folder")


SEEN_AT = ("modelyard.json",)
MODEL_CASES = [
    tamper_case("weights-missing", remove("model.safetensors"), "model.safetensors", "missing", "retrain or restore"),
    tamper_case("weights-truncated", rewrite("model.safetensors", lambda b: b[: len(b) // 2]), "model.safetensors",
                "corrupt", "retrain or restore"),
    tamper_case("weights-zero-bytes", rewrite("model.safetensors", b""), "model.safetensors", "corrupt"),
    tamper_case("weights-garbage", rewrite("model.safetensors", os.urandom(256)), "model.safetensors", "corrupt"),
    tamper_case("weights-header-claims-huge-length", rewrite("model.safetensors", struct.pack("<Q", 2**60) + b"{}"),
                "model.safetensors", "corrupt"),
    tamper_case("weights-header-not-json", rewrite("model.safetensors", struct.pack("<Q", 4) + b"{{{{"),
                "model.safetensors", "corrupt"),
    tamper_case("tensor-wrong-shape", edit_tensors(lambda t: t.update({"head.weight": t["head.weight"][:5]})),
                "head.weight", "shape", "modelyard.json"),
    tamper_case("tensor-transposed", edit_tensors(lambda t: t.update({"head.weight": t["head.weight"].T.contiguous()})),
                "head.weight", "shape"),
    tamper_case("tensor-missing", edit_tensors(lambda t: t.pop("head.bias")), "head.bias", "missing"),
    tamper_case("tensor-extra", edit_tensors(lambda t: t.update({"extra.weight": t["head.bias"].clone()})),
                "extra.weight", "unexpected"),
    tamper_case("tensor-renamed", edit_tensors(lambda t: t.update({"head.w": t.pop("head.weight")})),
                "head.weight", "missing"),
    tamper_case("tensor-not-float", edit_tensors(lambda t: t.update({"head.bias": t["head.bias"].long()})),
                "head.bias", "I64", "floating-point"),
    tamper_case("tensor-holds-nan", edit_tensors(lambda t: t["head.bias"].fill_(float("nan"))), "head.bias",
                "not finite"),
    tamper_case("meta-missing", remove("modelyard.json"), "modelyard.json", "missing", "retrain or restore"),
    tamper_case("meta-invalid-json", rewrite("modelyard.json", lambda b: b[:-20]), "modelyard.json",
                "not valid JSON", "line"),
    tamper_case("meta-empty", rewrite("modelyard.json", b""), "modelyard.json", "not valid JSON"),
    tamper_case("meta-is-a-list", rewrite("modelyard.json", b"[1, 2]"), "modelyard.json", "object"),
    tamper_case("meta-latin1", rewrite("modelyard.json", '{"experiment": "caf\u00e9"}'.encode("latin-1")),
                "modelyard.json", "UTF-8"),
    tamper_case("meta-without-model", edit_meta(lambda m: m.pop("model")), "modelyard.json", "model",
                "missing"),
    tamper_case("meta-without-labels", edit_meta(lambda m: m.pop("labels")), "modelyard.json", "labels",
                "missing"),
    tamper_case("meta-without-experiment", edit_meta(lambda m: m.pop("experiment")), "modelyard.json", "experiment"),
    tamper_case("meta-labels-a-string", edit_meta(lambda m: m.update(labels="0123456789")), "modelyard.json",
                "labels", "list"),
    tamper_case("meta-one-label-more", edit_meta(lambda m: m["labels"].append("10")), "head.weight", "shape"),
    tamper_case("meta-labels-repeated", edit_meta(lambda m: m.update(labels=["1"] * 10)), "modelyard.json",
                "labels", "repeat"),
    tamper_case("meta-model-unknown", edit_meta(lambda m: m["model"].update(name="mlpp")), "modelyard.json",
                "model.name", "mlp"),
    tamper_case("meta-model-invalid-field", edit_meta(lambda m: m["model"].update(hidden_sizes=[-1])),
                "modelyard.json", "model.hidden_sizes", "greater than 0"),
    tamper_case("meta-model-unknown-field", edit_meta(lambda m: m["model"].update(width=3)), "modelyard.json",
                "model.width", "unknown key"),
    tamper_case("meta-model-a-list", edit_meta(lambda m: m.update(model=[1])), "modelyard.json", "model"),
    tamper_case("meta-input-shape-changed", edit_meta(lambda m: m.update(input_shape=[1, 9, 9])), "shape",
                "modelyard.json"),
    tamper_case("meta-input-shape-text", edit_meta(lambda m: m.update(input_shape="8x8")), "modelyard.json",
                "input_shape"),
    tamper_case("meta-input-shape-negative", edit_meta(lambda m: m.update(input_shape=[1, -8, 8])),
                "modelyard.json", "input_shape"),
    tamper_case("meta-weights-escape-relative", weights_beside_run("../../stolen.safetensors"), "modelyard.json",
                "weights", "outside the model folder"),
    tamper_case("meta-weights-escape-absolute", weights_beside_run("/etc/hostname"), "modelyard.json", "weights",
                "outside the model folder"),
    tamper_case("meta-weights-not-a-string", edit_meta(lambda m: m.update(weights=123)), "modelyard.json",
                "weights"),
    tamper_case("meta-weights-hf-without-folder", edit_meta(lambda m: m.update(weights="hf/model.safetensors")),
                "hf/model.safetensors", "missing"),
    tamper_case("weights-symlink-outside", symlink_weights_outside, "model.safetensors", "outside the model folder"),
    tamper_case("meta-without-preprocessing", edit_meta(lambda m: m.pop("preprocessing")), "modelyard.json",
                "preprocessing"),
    tamper_case("meta-preprocessing-unknown-kind", edit_meta(lambda m: m["preprocessing"].update(kind="audio")),
                "modelyard.json", "preprocessing", "'audio'", "image"),
    tamper_case("meta-preprocessing-missing-field", edit_meta(lambda m: m["preprocessing"].pop("mean")),
                "modelyard.json", "preprocessing", "mean"),
    tamper_case("meta-preprocessing-wrong-type", edit_meta(lambda m: m["preprocessing"].update(size="big")),
                "modelyard.json", "preprocessing", "size"),
    tamper_case("meta-preprocessing-mean-per-channel", edit_meta(lambda m: m["preprocessing"].update(mean=[0, 0])),
                "modelyard.json", "preprocessing", "mean"),
    tamper_case("meta-format-newer", edit_meta(lambda m: m.update(format_version=99)), "modelyard.json",
                "format_version 99", "upgrade modelyard"),
    tamper_case("meta-format-text", edit_meta(lambda m: m.update(format_version="one")), "modelyard.json",
                "format_version"),
    tamper_case("meta-format-zero", edit_meta(lambda m: m.update(format_version=0)), "modelyard.json",
                "format_version"),
    tamper_case("meta-task-unknown", edit_meta(lambda m: m.update(task="regression")), "modelyard.json", "task",
                "classification"),
    tamper_case("meta-model-inputs-unknown", edit_meta(lambda m: m.update(model_inputs={"foo": 1})),
                "modelyard.json", "model_inputs", "foo"),
    tamper_case("model-folder-is-a-file", replace_model_folder_with_a_file, "model", "not a folder"),
    tamper_case("evaluate-weights-missing", remove("model.safetensors"), "model.safetensors", "missing",
                command="evaluate"),
    tamper_case("evaluate-meta-invalid", rewrite("modelyard.json", b"{"), "modelyard.json", "not valid JSON",
                command="evaluate"),
    tamper_case("evaluate-tensor-wrong-shape", edit_tensors(lambda t: t.update({"head.bias": t["head.bias"][:3]})),
                "head.bias", "shape", command="evaluate"),
    tamper_case("evaluate-config-invalid-yaml", lambda run: (run / "config.yaml").write_text("name: [x\n"),
                "config.yaml", "not valid YAML", command="evaluate"),
    tamper_case("evaluate-config-latin1", lambda run: (run / "config.yaml").write_bytes(b"name: caf\xe9\n"),
                "config.yaml", "UTF-8", command="evaluate"),
    tamper_case("evaluate-config-edited-key", lambda run: (run / "config.yaml").write_text(
        (run / "config.yaml").read_text().replace("\n  epochs:", "\n  epochz:")), "config.yaml", "train.epochz",
        command="evaluate"),
]

SCENARIO = {"volume_per_month": 1000, "horizon_months": 1, "currency": "USD",
            "outcomes": {"correct": 0.1, "wrong": -0.2}, "serve": {"usd_per_hour": 0.2},
            "train": {"usd_per_hour": 0.2}}

CLI_CASES = [
    Case("no-such-command", ("trian",), ("no such command", "trian")),
    Case("no-such-option", ("train", "{d}/exp.yaml", "--sed", "1"), ("--sed", "--set"),
         files={"exp.yaml": experiment()}),
    Case("set-without-argument", ("train", "{d}/exp.yaml", "--set"), ("--set", "requires an argument"),
         files={"exp.yaml": experiment()}),
    Case("train-nothing-to-do", ("train",), ("give a CONFIG", "--resume")),
    Case("train-config-and-resume", ("train", "{d}/exp.yaml", "--resume", "{run}"), ("either CONFIG or --resume",),
         files={"exp.yaml": experiment()}),
    Case("train-config-missing", ("train", "{d}/nope.yaml"), ("nope.yaml", "not found", "examples/")),
    Case("train-config-is-a-folder", ("train", "{d}"), ("directory",)),
    Case("train-output-is-a-file", ("train", "{d}/exp.yaml", "--output", "{d}/exp.yaml"), ("--output", "file"),
         files={"exp.yaml": experiment()}),
    Case("train-output-unwritable", ("train", "{d}/exp.yaml", "--output", "/proc/modelyard-runs"),
         ("/proc/modelyard-runs", "cannot create", "--output"), files={"exp.yaml": experiment()}),
    Case("resume-missing-run", ("train", "--resume", "{d}/nope"), ("nope", "not found")),
    Case("resume-a-folder-without-config", ("train", "--resume", "{d}/r"), ("not a run directory", "config.yaml"),
         files={"r/.keep": ""}),
    Case("resume-a-file", ("train", "--resume", "{d}/exp.yaml"), ("--resume", "file"),
         files={"exp.yaml": experiment()}),
    Case("resume-config-invalid-yaml", ("train", "--resume", "{d}/run"), ("config.yaml", "line 1", "not valid YAML"),
         tamper=lambda run: (run / "config.yaml").write_text("name: [x\n")),
    Case("resume-config-latin1", ("train", "--resume", "{d}/run"), ("config.yaml", "UTF-8", "iconv"),
         tamper=lambda run: (run / "config.yaml").write_bytes(b"name: caf\xe9\n")),
    Case("resume-bad-set", ("train", "--resume", "{d}/run", "--set", "train.epochs=0"),
         ("config.yaml", "train.epochs", "from --set"), tamper=lambda run: None),
    Case("evaluate-without-run", ("evaluate",), ("missing argument", "RUN")),
    Case("evaluate-missing-run", ("evaluate", "{d}/nope"), ("nope", "not found", "modelyard train")),
    Case("evaluate-a-model-folder", ("evaluate", "{run}/model"), ("config.yaml", "run directory")),
    Case("evaluate-data-missing-file", ("evaluate", "{tab}", "--data", "csv:{d}/nope.csv"), ("nope.csv", "not found")),
    Case("evaluate-data-bad-scheme", ("evaluate", "{tab}", "--data", "nope"), ("'nope'", "csv:PATH")),
    Case("evaluate-data-empty-path", ("evaluate", "{tab}", "--data", "csv:"), ("csv:", "scheme:argument")),
    Case("evaluate-data-of-another-kind", ("evaluate", "{tab}", "--data", "imagefolder:{d}/imgs"),
         ("image", "tabular"), files={"imgs/a/0.png": png(8, 8)}),
    Case("evaluate-data-with-unknown-labels", ("evaluate", "{tab}", "--data", "csv:{d}/x.csv"),
         ("x.csv", "class_7", "never learnt"),
         files={"x.csv": wine([[13, 2, 2, "class_7"], [13, 2, 2, "class_0"]])}),
    Case("evaluate-data-with-inf", ("evaluate", "{tab}", "--data", "csv:{d}/x.csv"), ("x.csv", "ash", "finite"),
         files={"x.csv": wine([[13, 2, "inf", "class_1"], [13, 2, 2, "class_0"]])}),
    Case("evaluate-data-with-1e308", ("evaluate", "{tab}", "--data", "csv:{d}/x.csv"),
         ("x.csv", "alcohol", "too large"), files={"x.csv": wine([[1e308, 2, 2, "class_1"], [13, 2, 2, "class_0"]])}),
    Case("evaluate-output-unwritable", ("evaluate", "{tab}", "--output", "/proc/modelyard/m.json"),
         ("/proc/modelyard/m.json", "cannot write")),
    Case("predict-without-input", ("predict", "{run}"), ("missing argument", "INPUT")),
    Case("serve-port-out-of-range", ("serve", "{run}", "--port", "70000"), ("--port", "70000")),
    Case("serve-zero-workers", ("serve", "{run}", "--workers", "0"), ("--workers",)),
    Case("serve-batch-size-zero", ("serve", "{run}", "--max-batch-size", "0"), ("--max-batch-size",)),
    Case("serve-negative-wait", ("serve", "{run}", "--max-wait-ms", "-1"), ("--max-wait-ms",)),
    Case("serve-unknown-model", ("serve", "{d}/nope"), ("nope", "not found", "models register")),
    Case("serve-tampered-model", ("serve", "{d}/run", "--no-auth"), ("model.safetensors", "missing"),
         tamper=remove("model.safetensors")),
    Case("value-without-runs", ("value", "--scenario", "{d}/s.yaml"), ("missing argument",),
         files={"s.yaml": yaml.safe_dump(SCENARIO)}),
    Case("value-scenario-missing", ("value", "{run}", "--scenario", "{d}/nope.yaml"), ("nope.yaml", "not found")),
    Case("value-scenario-latin1", ("value", "{run}", "--scenario", "{d}/s.yaml"), ("s.yaml", "UTF-8"),
         files={"s.yaml": "currency: \u20ac\n".encode("cp1252")}),
    Case("value-scenario-invalid-yaml", ("value", "{run}", "--scenario", "{d}/s.yaml"), ("s.yaml", "not valid YAML"),
         files={"s.yaml": "outcomes: {correct: 1\n"}),
    Case("value-scenario-wrong-type", ("value", "{run}", "--scenario", "{d}/s.yaml"),
         ("s.yaml", "volume_per_month"), files={"s.yaml": yaml.safe_dump({**SCENARIO, "volume_per_month": "lots"})}),
    Case("value-budget-zero", ("value", "{run}", "--scenario", "{d}/s.yaml", "--budget", "0"), ("--budget",),
         files={"s.yaml": yaml.safe_dump(SCENARIO)}),
    Case("value-missing-run", ("value", "{d}/nope", "--scenario", "{d}/s.yaml"), ("nope",),
         files={"s.yaml": yaml.safe_dump(SCENARIO)}),
    Case("models-register-missing-run", ("models", "register", "{d}/nope", "--name", "m"), ("nope",)),
    Case("models-register-tampered", ("models", "register", "{d}/run", "--name", "m"),
         ("head.weight", "shape"), tamper=edit_tensors(lambda t: t.update({"head.weight": t["head.weight"][:5]}))),
    Case("models-register-without-name", ("models", "register", "{run}"), ("--name",)),
    Case("models-promote-bad-stage", ("models", "promote", "m:1", "--stage", "live"), ("--stage", "production")),
    Case("models-promote-unknown", ("models", "promote", "nobody:1", "--stage", "production"), ("nobody",)),
    Case("models-show-unknown", ("models", "show", "nobody"), ("nobody",)),
    Case("config-show-missing", ("config", "show", "{d}/nope.yaml"), ("nope.yaml", "not found")),
    Case("config-show-latin1", ("config", "show", "{d}/exp.yaml"), ("exp.yaml", "UTF-8"),
         files={"exp.yaml": b"name: caf\xe9\n"}),
    Case("config-show-bad-set", ("config", "show", "{d}/exp.yaml", "--set", "train.lrr=1"), ("train.lrr", "train.lr"),
         files={"exp.yaml": experiment()}),
    Case("config-unknown-subcommand", ("config", "validate", "{d}/exp.yaml"), ("no such command", "validate")),
    Case("generate-missing-run", ("generate", "{d}/nope", "--prompt", "hi"), ("nope", "not found")),
    Case("generate-with-a-classifier", ("generate", "{run}", "--prompt", "hi"), ("classifier", "modelyard predict")),
    Case("generate-without-prompt", ("generate", "{run}"), ("--prompt",)),
]

CASES = CONFIG_CASES + DATA_CASES + PREDICT_CASES + MODEL_CASES + CLI_CASES


def test_the_table_is_large_and_its_ids_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 150


# ---------------------------------------------------------------- running a case


@pytest.fixture(scope="module")
def shared(digits_run, tmp_path_factory):
    """Read-only copies of one tiny digits run and one tiny table run; a case copies before it tampers."""
    import modelyard

    root = tmp_path_factory.mktemp("bad-inputs")
    run = root / "digits"
    shutil.copytree(Path(digits_run.path) / "model", run / "model")
    for name in ("config.yaml", "run.json", "metrics.json"):
        shutil.copy(Path(digits_run.path) / name, run / name)
    table = root / "wine.csv"
    table.write_text(wine([[13.0 + i / 10, 1.5 + (i % 3) / 2, 2.0 + (i % 4) / 5, f"class_{i % 3}"] for i in range(30)]))
    cfg = tiny_config(name="table", data={"source": f"csv:{table}", "target": "cultivar"},
                      model={"hidden_sizes": [8]}, train={"epochs": 1, "batch_size": 16, "lr": 0.01})
    with pytest.MonkeyPatch.context() as mp:  # the report is most of a tiny run's time, and no case reads it
        mp.setattr("modelyard.report.html.write_report", lambda *a, **k: None)
        tab = modelyard.train(cfg, output=root / "runs", quiet=True).path
    return {"run": run, "tab": Path(tab)}


def fingerprint(*folders: Path) -> dict[str, str]:
    """The content hash of every file under `folders`: what the user had before the command ran."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def prepare(case: Case, d: Path, shared: dict) -> list[str]:
    for name, content in case.files.items():
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    if case.tamper is not None:
        shutil.copytree(shared["run"], d / "run")
        case.tamper(d / "run")
    return [a.format(d=d, run=shared["run"], tab=shared["tab"]) for a in case.argv]


def check_message(case: Case, code: int, err: str, d: Path) -> None:
    shown = f"modelyard {' '.join(case.argv)}\nexit {code}\nstderr:\n{err}"
    assert "Traceback" not in err, shown
    assert code == case.code, shown
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, f"one or two lines wanted:\n{shown}"
    assert lines[0].startswith("error: "), shown
    assert "internal error" not in err, shown
    text = err.lower()
    for piece in case.expect:
        assert piece.format(d=d).lower() in text, f"{piece!r} missing:\n{shown}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error(case, shared, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path / "home"))  # an empty registry of this test's own
    monkeypatch.chdir(tmp_path)
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server started on a bad input"))
    d = tmp_path / "case"
    d.mkdir()
    argv = prepare(case, d, shared)
    before = fingerprint(d, shared["run"], shared["tab"] / "model")
    code, _, err = cli_in_process(capsys, *argv)
    check_message(case, code, err, d)
    after = fingerprint(d, shared["run"], shared["tab"] / "model")
    lost = {p for p in before if before[p] != after.get(p)}
    assert not lost, f"files changed or removed: {sorted(lost)}"


# ---------------------------------------------------------------- --debug, torch-free config errors, subprocesses


def test_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "exp.yaml").write_text(experiment(train__lr=-1))
    code, _, err = cli_in_process(capsys, "--debug", "train", str(tmp_path / "exp.yaml"))
    assert code == 2 and "Traceback" in err and "train.lr" in err


def test_an_unexpected_exception_is_one_line_without_debug(monkeypatch, capsys):
    def broken(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("modelyard.config.load_config", broken)
    code, _, err = cli_in_process(capsys, "config", "show", "x.yaml")
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "internal error: ZeroDivisionError: a bug" in err and "--debug" in err
    code, _, err = cli_in_process(capsys, "--debug", "config", "show", "x.yaml")
    assert code == 1 and "Traceback" in err and "ZeroDivisionError" in err


SUBPROCESS_CASES = {c.id: c for c in CASES if c.id in {  # config errors cost a fraction of a second: no torch
    "yaml-latin1", "yaml-duplicate-key", "name-with-space", "seed-negative-from-set", "max-length-huge",
    "lr-infinite", "csv-inf-cell", "table-inf", "image-decompression-bomb", "weights-truncated"}}


@pytest.mark.parametrize("case_id", sorted(SUBPROCESS_CASES))
def test_bad_input_in_a_real_process(case_id, shared, tmp_path):
    case = SUBPROCESS_CASES[case_id]
    d = tmp_path / "case"
    d.mkdir()
    argv = prepare(case, d, shared)
    proc = run_cli(*argv, cwd=tmp_path, env={"MODELYARD_HOME": str(tmp_path / "home")})
    check_message(case, proc.returncode, proc.stderr, d)


def test_a_config_error_answers_before_torch_is_imported(tmp_path):
    (tmp_path / "exp.yaml").write_text(experiment(train__lrr=0.1))
    probe = ("import sys\nfrom modelyard.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
             "    print(e.code, 'torch' in sys.modules, 'pandas' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", probe, "train", str(tmp_path / "exp.yaml")], capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stdout + proc.stderr
    assert "train.lrr" in proc.stderr


@pytest.mark.parametrize("case_id", ["yaml-tab-indent", "meta-weights-escape-relative"])
def test_bad_input_in_a_terminal(case_id, shared, tmp_path):
    case = {c.id: c for c in CASES}[case_id]
    d = tmp_path / "case"
    d.mkdir()
    argv = prepare(case, d, shared)
    child = pexpect.spawn(sys.executable, ["-m", "modelyard", *argv], cwd=tmp_path, timeout=120, encoding="utf-8",
                          codec_errors="replace", dimensions=(40, 160),
                          env={"TERM": "xterm-256color", "PATH": "/usr/bin:/bin", "COLUMNS": "160",
                               "PYTHONPATH": os.pathsep.join(sys.path), "MODELYARD_HOME": str(tmp_path / "h")})
    out = child.read()
    child.close()
    assert child.exitstatus == 2, out
    assert "Traceback" not in out and out.strip().startswith("error: ")
    for piece in case.expect:
        assert piece.format(d=d).lower() in out.lower(), out


def test_probabilities_that_are_not_finite_are_an_error_not_an_empty_cell():
    import numpy as np

    from modelyard.errors import DataError
    from modelyard.inference import require_finite

    ok = np.array([[0.25, 0.75], [1.0, 0.0]])
    assert require_finite(ok) is ok
    with pytest.raises(DataError, match="input 2 .of 2. is not finite"):
        require_finite(np.array([[0.5, 0.5], [np.nan, np.nan]]))


def test_old_model_folder_without_format_version_still_loads(shared, tmp_path):
    import modelyard

    run = tmp_path / "run"
    shutil.copytree(shared["run"], run)
    edit_meta(lambda m: m.pop("format_version"))(run)
    model = modelyard.load(run)
    assert model.meta["format_version"] == 1
    (tmp_path / "seven.png").write_bytes(png(8, 8))
    assert model.predict(str(tmp_path / "seven.png"))[0] in model.labels


def test_saved_model_folder_says_the_oldest_format_that_reads_it(shared):
    """A torch model an older modelyard can load says format 1; only the families it cannot (onnx, torch-int8)
    say the current format, so that an older modelyard refuses them with "upgrade" instead of failing later."""
    from modelyard.artifact import FORMAT_VERSION

    meta = json.loads((shared["run"] / "model" / "modelyard.json").read_text())
    assert meta["format_version"] == 1 < FORMAT_VERSION



@pytest.mark.parametrize("inputs", [np.array([[object()] * 8] * 8, dtype=object)[None], np.zeros((1, 0, 0))],
                         ids=["object-array", "zero-size-image"])
def test_predict_refuses_inputs_no_preprocessor_check_foresaw(digits_run, inputs):
    import modelyard
    from modelyard.errors import DataError

    with pytest.raises(DataError, match="the model cannot take these inputs .*; pass image files, arrays"):
        modelyard.load(digits_run.path).predict(inputs)
