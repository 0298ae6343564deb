"""Hooks into the training loop. The loop calls them; they never reach into its internals beyond `loop`."""

from __future__ import annotations

from modelyard.metrics.directions import direction, improves


class Callback:
    """Override what you need. `loop` is the running `TrainingLoop`; `row` is the epoch's history line."""

    def on_train_start(self, loop) -> None: ...

    def on_step_end(self, loop) -> None: ...

    def on_epoch_end(self, loop, row: dict) -> None: ...

    def on_train_end(self, loop) -> None: ...


def monitor_mode(metric: str) -> str:
    """'max' or 'min': how `metric` improves, from the one table in `modelyard.metrics.directions`."""
    return direction(metric)


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """True when `value` beats `best` by more than `min_delta` in direction `mode` ('max' or 'min')."""
    return improves(value, best, mode, min_delta)


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
