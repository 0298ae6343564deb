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


class EnergyCallback(Callback):
    """Adds the energy used since the last step to `loop.state.energy`, so checkpoints and resumes carry it
    and metrics.json reports the total (joules, kWh, and whether it was measured or estimated)."""

    def on_train_start(self, loop) -> None:
        from modelyard.energy import EnergyMeter

        self.meter, self.seen = EnergyMeter(), 0.0
        loop.state.energy.setdefault("joules", 0.0)
        loop.state.energy.update(source=self.meter.source, method=self.meter.describe())

    def on_step_end(self, loop) -> None:
        now = self.meter.read()
        loop.state.energy["joules"] += now - self.seen
        self.seen = now

    on_train_end = on_step_end
