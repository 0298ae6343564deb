"""What the user sees while training: a rich progress bar on a terminal, one line per epoch always."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainingProgress:
    def __init__(self, *, enabled: bool, total_epochs: int, steps_per_epoch: int, monitor: str) -> None:
        self.enabled, self.total_epochs, self.monitor = enabled, total_epochs, monitor
        self.steps_per_epoch = steps_per_epoch
        self.console = Console(stderr=True, soft_wrap=True)
        self.bar = None
        if enabled and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[watch]}"), TimeRemainingColumn(),
                console=self.console, transient=True,
            )
            self.task = self.bar.add_task("train", total=steps_per_epoch, epoch=0, epochs=total_epochs, loss=0.0,
                                          watch="")
            self.bar.start()

    def start_epoch(self, epoch: int, done: int = 0) -> None:
        if self.bar:
            # reset() with keyword fields replaces all of the task's fields (the columns then raise KeyError),
            # so the epoch is set with update(), which merges them.
            self.bar.reset(self.task, completed=done)
            self.bar.update(self.task, epoch=epoch + 1)

    def step(self, loss: float) -> None:
        if self.bar:
            self.bar.update(self.task, advance=1, loss=loss)

    def end_epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        watch = f"{self.monitor} {row.get(self.monitor, float('nan')):.4f}"
        if self.bar:
            self.bar.update(self.task, watch=watch)
        self.console.print(
            f"epoch {row['epoch']:>3}/{self.total_epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_accuracy {row['val_accuracy']:.4f}  lr {row['lr']:.2e}  "
            f"{row['epoch_time_s']:.1f}s"
        )

    def summary(self, *, cfg, bundle, parameters: dict, device, run_path, resumed_at: int = 0) -> None:
        """One block before the first step: what will be trained, on what, where, and where it is written."""
        if not self.enabled:
            return
        sizes = ", ".join(f"{name} {len(ds):,}" for name, ds in (("train", bundle.train), ("val", bundle.val),
                                                                  ("test", bundle.test)) if ds is not None)
        unit = "blocks of tokens" if bundle.task == "lm" else "examples"
        classes = f"{len(bundle.labels)} classes" if bundle.labels else "language model"
        trainable = parameters.get("trainable_parameters", parameters["parameters"])
        share = "" if trainable == parameters["parameters"] else f" ({trainable:,} trainable)"
        tc = cfg.train
        lines = [
            f"data     {cfg.data.source}: {sizes} {unit}; {classes}",
            f"model    {cfg.model.name}: {parameters['parameters']:,} parameters{share}",
            f"training {tc.epochs} epochs of {self.steps_per_epoch} steps, batch {tc.batch_size}, {tc.optimizer} "
            f"lr {tc.lr:g} ({tc.schedule}), on {device}; best by {tc.monitor}"
            + (f"; resuming after epoch {resumed_at}" if resumed_at else ""),
            f"run      {run_path}",
        ]
        self.console.print("\n".join(lines), highlight=False, markup=False)

    def kept(self, *, best_epoch: int | None, epochs_run: int, best_value: float | None) -> None:
        """After training: which epoch's weights were kept, and why."""
        if not self.enabled:
            return
        if best_epoch is None:
            self.console.print(f"kept the last weights (epoch {epochs_run}): {self.monitor} never had a finite value")
        else:
            self.console.print(f"kept epoch {best_epoch} of {epochs_run}: it had the best {self.monitor} "
                               f"({best_value:.4f})", highlight=False)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
