"""Checkpoints a resumed run can trust: written atomically, read without unpickling code.

checkpoints/last/: model.safetensors, training_state.pt (optimiser, scheduler and RNG states: tensors and
numbers only, read with weights_only=True) and state.json (epoch, step, best value, partial-epoch sums).
checkpoints/best/: model.safetensors at the best `train.monitor` value.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from modelyard.errors import RunError


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken
    batch_in_epoch: int = 0  # micro-batches already done in the epoch under way
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    train_time_s: float = 0.0
    energy: dict = field(default_factory=dict)  # joules so far and how they were measured (training/energy.py)
    partial: dict = field(default_factory=lambda: {"loss_sum": 0.0, "correct": 0, "seen": 0})


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_meta": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_state[4]], dtype=torch.float64),
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(state["numpy_meta"][0]),
                         int(state["numpy_meta"][1]), float(state["numpy_gauss"][0])))
    random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: TrainState) -> None:
    """Write to a sibling temp folder, then swap it in, so a kill mid-write leaves the old checkpoint whole."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
               tmp / "training_state.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state), indent=2))
    _swap_in(tmp, folder)


def link_best(last: Path, best: Path) -> None:
    """Make `best` hold the weights just written to `last`, by hard link rather than a second write."""
    tmp = best.with_name(best.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        os.link(last / "model.safetensors", tmp / "model.safetensors")
    except OSError:  # a file system without hard links
        shutil.copy2(last / "model.safetensors", tmp / "model.safetensors")
    _swap_in(tmp, best)


def _swap_in(tmp: Path, folder: Path) -> None:
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_folder(folder: Path) -> Path:
    """The folder to read: `folder`, or its `.old` twin when a kill fell between the two renames."""
    if (folder / "state.json").is_file() or (folder / "model.safetensors").is_file():
        return folder
    old = folder.with_name(folder.name + ".old")
    if (old / "model.safetensors").is_file():
        return old
    raise RunError(f"no checkpoint in {folder}; the run stopped before its first checkpoint, so start it anew")


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> TrainState:
    folder = checkpoint_folder(folder)
    load_model(model, str(folder / "model.safetensors"))
    saved = torch.load(folder / "training_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    return TrainState(**json.loads((folder / "state.json").read_text()))
