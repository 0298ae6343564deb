"""Reading local weight files safely: safetensors, or torch.load with weights_only=True (never a pickle)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from modelyard.errors import ModelError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(
            f"pretrained weights not found at {path}. Nothing is downloaded at run time: put a state dict there "
            "(.safetensors, or .pt/.pth saved with torch.save(model.state_dict())) and point model.pretrained at it"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the file is the user's: say which one and why it failed
        raise ModelError(f"cannot read weights from {path}: {exc}. Expected a safetensors file or a "
                         "torch state dict saved with torch.save(state_dict)") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state


def load_pretrained(model: nn.Module, path: str | Path, *, head: str) -> list[str]:
    """Load weights into `model`; only the head (prefix `head`) may be missing or differently shaped.

    Returns the names of the head parameters that were left at their fresh initialisation.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    in_head = lambda k: k == head or k.startswith(head + ".")  # noqa: E731
    skipped_head = [k for k in own if in_head(k) and (k not in state or state[k].shape != own[k].shape)]
    missing = [k for k in own if not in_head(k) and k not in state]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if not in_head(k) and k in state and state[k].shape != own[k].shape
    ]
    if missing or mismatched:
        detail = "; ".join(mismatched[:5] + [f"missing {k}" for k in missing[:5]])
        raise ModelError(
            f"weights in {path} do not fit this model outside its head ({len(missing)} missing, "
            f"{len(mismatched)} differently shaped: {detail}). Check model.name and its size fields match "
            "the model the weights were saved from"
        )
    usable = {k: v for k, v in state.items() if k in own and not (k in skipped_head)}
    model.load_state_dict(usable, strict=False)
    return skipped_head
