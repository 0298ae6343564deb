"""What the user sees while training: a rich progress bar on a terminal, one line per epoch always."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainingProgress:
    def __init__(self, *, enabled: bool, total_epochs: int, steps_per_epoch: int, monitor: str) -> None:
        self.enabled, self.total_epochs, self.monitor = enabled, total_epochs, monitor
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

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
