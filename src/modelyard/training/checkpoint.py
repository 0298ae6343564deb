"""Checkpoints a resumed run can trust: crash-safe at every moment, read without unpickling code.

checkpoints/
  LATEST               {"last": "last-00000040", "best": "best-00000020"}: the one file that says which
                       folders hold the checkpoint; replaced atomically (os.replace), so it names either the old
                       pair or the new one, never half of each.
  last-<step>/         model.safetensors, training_state.pt (optimiser, scheduler and RNG states: tensors and
                       numbers only, read with weights_only=True) and state.json (epoch, step, best value,
                       partial-epoch sums): what --resume reads.
  best-<step>/         model.safetensors: the weights at the best `train.monitor` value, taken at that step.

A folder of several files cannot be replaced atomically, so a save never rewrites one. It writes new versioned
folders, fsyncs them, then replaces LATEST, and only then deletes the folders LATEST no longer names. A kill at any
moment leaves LATEST naming a complete pair; folders it does not name are leftovers of an unfinished save,
ignored by readers and deleted by the next save or resume. `best` and `last` switch together, so the best
weights always match the best value recorded in `last`.

Runs written before this layout (format 1: checkpoints/last/ and checkpoints/best/, swapped by renames) are
still read.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_file, save_model

from modelyard.errors import RunError
from modelyard.filemode import as_umask_allows

POINTER = "LATEST"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"  # the weight average and its step count, with `train.ema_decay`
# What one save does, in order. `_reached(point)` follows each, so a test can fail the save right after any of them.
SAVE_POINTS = ("best-written", "model-written", "training-state-written", "state-json-written", "synced",
               "pointer-temp-written", "pointer-replaced", "old-last-removed", "old-best-removed")
_OURS = re.compile(r"^(last|best)(-\d+(\.\d+)?)?(\.tmp|\.old)?$")  # folders a save or a format-1 swap makes


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken
    batch_in_epoch: int = 0  # micro-batches already done in the epoch under way
    best_value: float | None = None
    best_epoch: int | None = None
    best_step: int | None = None  # the step whose weights are the best ones
    bad_epochs: int = 0
    stopped_early: bool = False
    train_time_s: float = 0.0
    energy: dict = field(default_factory=dict)  # joules so far and how they were measured (modelyard/energy.py)
    partial: dict = field(default_factory=lambda: {"loss_sum": 0.0, "correct": 0, "seen": 0})
    privacy_history: list = field(default_factory=list)  # Opacus' accountant: [[noise, sample rate, steps], ...]


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


def cpu_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's weights, keeping one name per tensor shared under several (as save_model does)."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)) if t.numel() else name
        if key not in seen:
            seen.add(key)
            out[name] = t.detach().to("cpu", copy=True).contiguous()
    return out


def save_checkpoint(checkpoints: Path, model, optimizer, scheduler, state: TrainState,
                    best_weights: dict[str, torch.Tensor] | None = None, ema: torch.nn.Module | None = None) -> None:
    """Write `last` (and `best`, when `best_weights` holds weights newer than the saved best) crash-safely.

    Args:
        checkpoints: the run's checkpoints folder.
        best_weights: `cpu_weights()` taken at `state.best_step`; None keeps the best already saved.
        ema: the weight average (`train.ema_decay`), saved beside the model so a resume continues it exactly.
    """
    checkpoints.mkdir(parents=True, exist_ok=True)
    old = read_pointer(checkpoints)
    best = old.get("best")
    if best_weights is not None:
        best = _fresh_folder(checkpoints, "best", state.best_step, old)
        save_file(best_weights, str(checkpoints / best / WEIGHTS))
        _sync_folder(checkpoints / best)
        _reached("best-written")
    last = _fresh_folder(checkpoints, "last", state.step, old)
    folder = checkpoints / last
    save_model(model, str(folder / WEIGHTS))
    if ema is not None:
        save_model(ema, str(folder / EMA_WEIGHTS))
    _reached("model-written")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
               folder / "training_state.pt")
    _reached("training-state-written")
    (folder / "state.json").write_text(json.dumps(asdict(state), indent=2))
    as_umask_allows(folder, *([checkpoints / best] if best_weights is not None else []))
    _reached("state-json-written")
    _sync_folder(folder)
    _fsync(checkpoints)
    _reached("synced")
    tmp = checkpoints / (POINTER + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps({"last": last, "best": best}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    _reached("pointer-temp-written")
    os.replace(tmp, checkpoints / POINTER)
    _fsync(checkpoints)
    _reached("pointer-replaced")
    if old.get("last") not in (None, last):
        shutil.rmtree(checkpoints / old["last"], ignore_errors=True)
    _reached("old-last-removed")
    if old.get("best") not in (None, best):
        shutil.rmtree(checkpoints / old["best"], ignore_errors=True)
    _reached("old-best-removed")
    remove_leftovers(checkpoints)


def read_pointer(checkpoints: Path) -> dict:
    """{"last": folder name or None, "best": folder name or None} of the checkpoint in force; {} if there is none."""
    pointer = checkpoints / POINTER
    if pointer.is_file():
        try:
            names = json.loads(pointer.read_text())
        except ValueError:
            raise RunError(f"{pointer} is corrupt (not JSON); the run's checkpoints cannot be trusted, "
                           f"so train the experiment anew") from None
        for kind in ("last", "best"):
            name = names.get(kind)
            if name is not None and not (checkpoints / name / WEIGHTS).is_file():
                raise RunError(f"{pointer} names {name}/, which has no {WEIGHTS}; the checkpoint was removed "
                               f"or damaged, so train the experiment anew")
        return {"last": names.get("last"), "best": names.get("best")}
    return _format1_pointer(checkpoints)


def latest_step(checkpoints: Path) -> int | None:
    """The optimiser step of the checkpoint `--resume` would continue from, or None if there is none."""
    try:
        last = read_pointer(checkpoints).get("last")
        return json.loads((checkpoints / last / "state.json").read_text())["step"] if last else None
    except (RunError, OSError, ValueError, KeyError):
        return None


def load_checkpoint(checkpoints: Path, model, optimizer, scheduler, ema: torch.nn.Module | None = None) -> TrainState:
    """Restore the model, optimiser, scheduler and RNG states from the checkpoint in force; returns the loop state.

    Raises:
        RunError: the run has no checkpoint yet, or it is damaged.
    """
    last = read_pointer(checkpoints).get("last") if checkpoints.is_dir() else None
    if last is None:
        raise RunError(f"no checkpoint in {checkpoints}; the run stopped before its first checkpoint, "
                       f"so start it anew")
    remove_leftovers(checkpoints)
    folder = checkpoints / last
    load_model(model, str(folder / WEIGHTS))
    if ema is not None:
        if not (folder / EMA_WEIGHTS).is_file():
            raise RunError(f"{folder} has no {EMA_WEIGHTS}: the run was trained without train.ema_decay, so resume "
                           f"it without that setting")
        load_model(ema, str(folder / EMA_WEIGHTS))
    saved = torch.load(folder / "training_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    raw = json.loads((folder / "state.json").read_text())
    known = {f.name for f in fields(TrainState)}
    return TrainState(**{k: v for k, v in raw.items() if k in known})


def load_best_weights(checkpoints: Path, model) -> bool:
    """Load the best checkpoint's weights into `model`; False (model untouched) if no epoch was ever best."""
    best = read_pointer(checkpoints).get("best") if checkpoints.is_dir() else None
    if best is None:
        return False
    load_model(model, str(checkpoints / best / WEIGHTS))
    return True


def remove_leftovers(checkpoints: Path) -> None:
    """Delete the checkpoint folders LATEST does not name: what an unfinished save or an older layout left."""
    names = read_pointer(checkpoints)
    if not (checkpoints / POINTER).is_file():
        return  # format 1: its folders are the checkpoint until a save writes LATEST
    keep = {names.get("last"), names.get("best")}
    for entry in checkpoints.iterdir():
        if entry.name == POINTER + ".tmp":
            entry.unlink(missing_ok=True)
        elif entry.is_dir() and entry.name not in keep and _OURS.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)


def _reached(point: str) -> None:
    """Called after each step of a save (see SAVE_POINTS); the crash-safety tests replace it to fail there."""


def _fresh_folder(checkpoints: Path, kind: str, step: int | None, pointer: dict) -> str:
    """Create an empty folder `<kind>-<step>` (a suffix if LATEST already names that one) and return its name."""
    name = base = f"{kind}-{step or 0:08d}"
    n = 0
    while name in pointer.values():
        n += 1
        name = f"{base}.{n}"
    shutil.rmtree(checkpoints / name, ignore_errors=True)  # a leftover of an unfinished save
    (checkpoints / name).mkdir()
    return name


def _sync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    _fsync(folder)


def _fsync(folder: Path) -> None:
    """Make the folder's entries (created, renamed files) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _format1_pointer(checkpoints: Path) -> dict:
    """The pointer equivalent of a format-1 run: last/ (or last.old/, when a kill fell between the two renames of
    its swap) and best/ (or best.old/)."""
    def pick(kind: str, marker: str) -> str | None:
        for name in (kind, kind + ".old"):
            if (checkpoints / name / marker).is_file():
                return name
        return None

    last = pick("last", "state.json")
    return {"last": last, "best": pick("best", WEIGHTS)} if last else {}
