"""Hooks into the training loop. The loop calls them; they never reach into its internals beyond `loop`."""

from __future__ import annotations


class Callback:
    """Override what you need. `loop` is the running `TrainingLoop`; `row` is the epoch's history line."""

    def on_train_start(self, loop) -> None: ...

    def on_step_end(self, loop) -> None: ...

    def on_epoch_end(self, loop, row: dict) -> None: ...

    def on_train_end(self, loop) -> None: ...


def monitor_mode(metric: str) -> str:
    """'min' for losses and errors, 'max' for everything else (accuracy, F1, AUC)."""
    return "min" if metric.endswith(("_loss", "_error")) else "max"


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta
