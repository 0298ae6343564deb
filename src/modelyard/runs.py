"""The run directory: the one contract between training and everything downstream.

runs/<name>-<UTC timestamp>/
  config.yaml          the resolved experiment config
  run.json             status (running / failed / completed), timestamps, world size
  metrics.json         {"val": {...}, "test": {...}, "train_time_s": ..., "epochs": ...}
  history.jsonl        one line per epoch
  checkpoints/last/    model, optimiser, scheduler, RNG, epoch/step (what --resume reads)
  checkpoints/best/    model weights at the best `train.monitor` value
  model/               model.safetensors + modelyard.json: enough to predict without config or data
  predictions/         test.csv and val.csv: true label, predicted label, every class probability
  report.html, plots/  the report
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelyard.errors import RunError


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, output: str | Path, name: str) -> "RunDir":
        base = Path(output) / f"{name}-{utc_stamp()}"
        path, n = base, 1
        while path.exists():  # two runs started in the same second
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise RunError(f"cannot create the run directory {path}: {exc.strerror}; pass a writable --output folder") from None
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"run directory {run.path} not found; pass the path `modelyard train` printed")
        if not run.config_path.is_file():
            raise RunError(f"{run.path} is not a run directory (no config.yaml); pass the path `modelyard train` printed")
        return run

    # paths
    config_path = property(lambda self: self.path / "config.yaml")
    status_path = property(lambda self: self.path / "run.json")
    metrics_path = property(lambda self: self.path / "metrics.json")
    history_path = property(lambda self: self.path / "history.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    model_dir = property(lambda self: self.path / "model")
    predictions_dir = property(lambda self: self.path / "predictions")
    report_path = property(lambda self: self.path / "report.html")
    plots_dir = property(lambda self: self.path / "plots")

    def write_json(self, path: Path, data: Any) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
        tmp.replace(path)

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RunError(f"{path} is missing; the run may not have finished (see {self.status_path})") from None

    def status(self) -> dict:
        return json.loads(self.status_path.read_text()) if self.status_path.is_file() else {}

    def set_status(self, **fields: Any) -> None:
        self.write_json(self.status_path, {**self.status(), **fields})

    def append_history(self, row: dict) -> None:
        with self.history_path.open("a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")

    def history(self) -> list[dict]:
        if not self.history_path.is_file():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]

    def truncate_history(self, epochs: int) -> None:
        """Keep the first `epochs` epochs: what a resumed run redoes must not appear twice."""
        rows = [r for r in self.history() if r["epoch"] <= epochs]
        self.history_path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
