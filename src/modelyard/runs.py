"""The run directory: the one contract between training and everything downstream.

runs/<name>-<UTC timestamp>/
  config.yaml          the resolved experiment config
  splits.json          the indices of each split among the source's examples and the data's SHA-256
  run.json             format_version, status (running / interrupted / failed / completed), timestamps, the
                       error of a run that did not complete, world size
  metrics.json         {"val": {...}, "test": {...}, "train_time_s": ..., "epochs": ...}
  history.jsonl        one line per epoch
  checkpoints/         LATEST names the checkpoint in force: last-<step>/ (model, optimiser, scheduler, RNG,
                       epoch/step: what --resume reads) and best-<step>/ (weights at the best `train.monitor`
                       value); see training/checkpoint.py
  model/               model.safetensors + modelyard.json: enough to predict without config or data
  predictions/         test.csv and val.csv: true label, predicted label, every class probability
  report.html, plots/  the report
  evaluations/         one JSON per `modelyard evaluate` (the split or data it scored, and when)

A derived run (`modelyard compress`) has the same layout; its run.json's `lineage` names the parent run, the
method and its parameters, and its config.yaml and splits.json are the parent's, so it is scored on exactly
the parent's test split.

run.json's format_version says which layout a run has. 1 (no format_version): checkpoints/last/ and
checkpoints/best/ folders; still read, and a resumed one is continued in the current layout.
2: the LATEST pointer and versioned checkpoint folders.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelyard import __version__
from modelyard.errors import RunError

RUN_FORMAT = 2  # run.json's format_version; CHANGELOG.md says what each one changed
_OUTCOME = ("error", "finished", "failed", "checkpoint_step")  # what a run's last attempt ended with


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
        run = cls(path)
        run.write_json(run.status_path, {"format_version": RUN_FORMAT, "written_by": f"modelyard {__version__}",
                                         "created": utc_stamp()})
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"run directory {run.path} not found; pass the path `modelyard train` printed")
        if not run.config_path.is_file():
            raise RunError(f"{run.path} is not a run directory (no config.yaml); pass the path `modelyard train` printed")
        run.check_format()
        return run

    def check_format(self) -> int:
        """The run's format_version (1 for runs written before it existed).

        Raises:
            RunError: a newer modelyard wrote the run, so this one cannot know its layout.
        """
        status = self.status()
        version = status.get("format_version", 1)
        if not isinstance(version, int) or version < 1:
            raise RunError(f"{self.status_path} has format_version {version!r}, which no modelyard writes; "
                           f"the file was edited or damaged. Train the experiment anew")
        if version > RUN_FORMAT:
            writer = status.get("written_by", "a newer modelyard")
            raise RunError(f"{self.path} was written by {writer} (run format {version}); this modelyard "
                           f"{__version__} reads run formats 1 to {RUN_FORMAT}. Upgrade modelyard "
                           f"(pip install -U modelyard) to use this run")
        return version

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
    splits_path = property(lambda self: self.path / "splits.json")

    @classmethod
    def derive(cls, parent: "RunDir", method: str, params: dict, *, output: str | Path | None = None) -> "RunDir":
        """A new run made from `parent` by `method` (a compressed model, a student): the parent's config and
        split, and a lineage record (parent, method, parameters) in run.json.

        Args:
            output: folder under which it is created (default: the parent's own folder's parent).
        """
        import shutil

        folder = parent.path.resolve()  # `.` or `..` has no name of its own
        name = f"{folder.name.rsplit('-', 1)[0] if _stamped(folder.name) else folder.name}-{method}"
        run = cls.create(output if output is not None else folder.parent, name)
        shutil.copyfile(parent.config_path, run.config_path)
        if parent.splits_path.is_file():
            shutil.copyfile(parent.splits_path, run.splits_path)
        run.set_status(lineage={"parent": str(folder), "parent_name": folder.name,
                                "method": method, "params": dict(params), "created": utc_stamp()})
        return run

    def config(self):
        """The run's resolved experiment config (`config.ExperimentConfig`)."""
        from modelyard.config import load_config

        return load_config(self.config_path)

    def splits(self) -> dict | None:
        """splits.json (`data.base.split_record`), or None for a run written before it existed.

        Raises:
            RunError: the file is not a split record: not JSON, keys missing, or indices that are not distinct
                examples of the data (every later score would read other examples, or crash).
        """
        if not self.splits_path.is_file():
            return None
        damaged = "the file was edited or damaged: delete it to re-derive the split from config.yaml and seed"
        try:
            record = json.loads(self.splits_path.read_text())
        except ValueError:
            raise RunError(f"{self.splits_path} is not valid JSON; {damaged}") from None
        if not isinstance(record, dict) or not {"data_sha256", "examples", "splits"} <= record.keys():
            raise RunError(f"{self.splits_path} is not a split record (data_sha256, examples, splits); {damaged}")
        problem = _split_problem(record)
        if problem:
            raise RunError(f"{self.splits_path}: {problem}; {damaged}")
        return record

    def write_splits(self, record: dict) -> None:
        self.write_json(self.splits_path, record)

    def lineage(self) -> dict | None:
        """{parent, parent_name, method, params} for a derived run; None for a trained one.

        Raises:
            RunError: run.json's lineage is not the record `derive` writes.
        """
        lineage = self.status().get("lineage")
        if lineage is None:
            return None
        if not isinstance(lineage, dict) or not all(isinstance(lineage.get(k), str) and lineage[k]
                                                    for k in ("parent", "parent_name", "method")) \
                or not isinstance(lineage.get("params", {}), dict):
            raise RunError(f"{self.status_path}: lineage is {lineage!r}, not the record of a derived run (parent, "
                           "parent_name and method as text, params an object); the file was edited or damaged: "
                           "make the derived run again with `modelyard compress`")
        return lineage

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
        """run.json's content; {} when there is none (a run written before run.json was created with the folder)."""
        if not self.status_path.is_file():
            return {}
        try:
            status = json.loads(self.status_path.read_text())
        except ValueError:
            raise RunError(f"{self.status_path} is not valid JSON; the file was edited or damaged. "
                           f"Delete it to treat the run as format 1, or train the experiment anew") from None
        if not isinstance(status, dict):
            raise RunError(f"{self.status_path} is not a JSON object; the file was edited or damaged")
        return status

    def set_status(self, **fields: Any) -> None:
        self.write_json(self.status_path, {**self.status(), **fields})

    def mark_running(self, **fields: Any) -> None:
        """Record that training starts or resumes: status running, in the current format, without the outcome
        (error, finish time) of an earlier attempt."""
        status = {k: v for k, v in self.status().items() if k not in _OUTCOME}
        self.write_json(self.status_path, {**status, "format_version": RUN_FORMAT,
                                           "written_by": f"modelyard {__version__}", "status": "running",
                                           "pid": os.getpid(), "host": socket.gethostname(), **fields})

    def current_status(self) -> str:
        """run.json's status, except that a run whose process is gone says `killed`: a SIGKILL or a power cut
        leaves no chance to write `failed`, and the run would read `running` for ever."""
        status = self.status()
        if status.get("status") == "running" and status.get("host") == socket.gethostname() \
                and isinstance(status.get("pid"), int) and not _alive(status["pid"]):
            return "killed"
        return status.get("status", "unknown")

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


def _split_problem(record: dict) -> str | None:
    """What is wrong with a split record's indices, or None: each split a non-empty list of distinct example
    indices below `examples`, no example in two splits, train and val present."""
    n, parts = record["examples"], record["splits"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return f"examples is {n!r}, not a number of examples"
    if not isinstance(parts, dict) or not {"train", "val"} <= parts.keys():
        return "splits must map train, val (and test) to lists of example indices"
    seen: set[int] = set()
    for name, idx in parts.items():
        if not isinstance(idx, list) or not idx or any(type(i) is not int for i in idx):
            return f"splits.{name} is not a non-empty list of example indices (whole numbers)"
        outside = next((i for i in idx if not 0 <= i < n), None)
        if outside is not None:
            return f"splits.{name} holds index {outside}, outside the {n} examples (0 to {n - 1})"
        mine = set(idx)
        if len(mine) != len(idx) or mine & seen:
            return f"splits.{name} names an example twice, or one that another split holds too"
        seen |= mine
    return None


def _stamped(name: str) -> bool:
    """Whether a run folder's name ends in the UTC stamp `create` adds."""
    tail = name.rsplit("-", 1)[-1]
    return len(tail) == 16 and tail[8] == "T" and tail.endswith("Z")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
