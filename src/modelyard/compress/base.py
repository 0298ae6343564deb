"""The compressor registry and what every method shares: opening the parent, checking the method applies, and
writing the derived run (model, predictions and metrics on the parent's own split, size, speed, report).

A method is a function `(parent: Parent, params) -> Compressed` registered with its pydantic params class:

    @register_compressor("int8-dynamic", params=Int8Params, applies_to=("torch", "hf", "onnx"))
    def int8_dynamic(parent, params): ...

A method that trains (distill) writes its run through the normal trainer instead and returns the `RunDir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from modelyard.errors import ConfigError, RunError
from modelyard.registry import Registry
from modelyard.runs import RunDir, utc_stamp

COMPRESSORS: Registry = Registry("compression method")


class MethodParams(BaseModel):
    """Base of every method's options: unknown keys are an error naming the method's own."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def register_compressor(name: str, *, params: type[MethodParams] = MethodParams, applies_to: tuple[str, ...],
                        tasks: tuple[str, ...] = ("classification",), summary: str = ""):
    """Register compression method `name` for the model families in `applies_to`."""
    def decorator(fn):
        COMPRESSORS.register(name, config=params, applies_to=applies_to, tasks=tasks, summary=summary)(fn)
        return fn

    return decorator


@dataclass
class Parent:
    """The completed run being compressed, read once: its run directory, config, loaded model and data."""

    run: RunDir
    predictor: Any  # artifact.Predictor
    # compress()'s speed_budget_s and speed_iterations, for a method that times its own run with finish_trained
    speed: dict = field(default_factory=dict)

    @property
    def cfg(self):
        return self.run.config()

    @property
    def adapter(self):
        return self.predictor.adapter

    @property
    def family(self) -> str:
        return self.predictor.meta["family"]  # a LanguageModel has no adapter; modelyard.json always names it

    @cached_property
    def data(self):
        """(raw examples, split indices, labels) exactly as the parent was trained and scored."""
        from modelyard.data import read_run_splits

        return read_run_splits(self.run)

    def split(self, name: str):
        """The raw examples of one split (`data.RawData`)."""
        raw, parts, _ = self.data
        return raw.take(parts[name])

    def dataset(self, name: str, *, train: bool = False):
        """One split through the parent's preprocessor, as a torch dataset of (x, class index)."""
        from modelyard.data.base import label_indices

        part = self.split(name)
        y = label_indices(part.y, self.predictor.labels, where=f"the {name} split")
        return self.predictor.preprocessor.dataset(part, y, train=train)


@dataclass
class Compressed:
    """What a method hands back: the new model's adapter, and what modelyard.json and the report should say."""

    adapter: Any  # adapters.Adapter
    meta: dict = field(default_factory=dict)  # extra modelyard.json fields (opset, sparsity, quantised ops)
    notes: list[str] = field(default_factory=list)  # honest remarks for the summary and the report
    facts: dict = field(default_factory=dict)  # extra metrics.json fields (sparsity, recovery epochs)


def open_parent(run: str | Path) -> Parent:
    """The parent run, which must have completed.

    Raises:
        RunError: the run is missing, not a run, or did not complete (naming its status and how to go on).
    """
    from modelyard.artifact import load

    rd = RunDir.open(run)
    status = rd.current_status()
    if status != "completed":
        how = (f"resume it with `modelyard train --resume {rd.path}`" if status in ("interrupted", "killed", "failed")
               else "wait for it to finish")
        raise RunError(f"{rd.path} is {status}, not completed: only a finished run's model can be compressed; {how}")
    return Parent(run=rd, predictor=load(rd.path))


def check_applies(parent: Parent, method: str) -> Any:
    """The registry entry of `method`, after checking it applies to the parent's model family and task."""
    entry = COMPRESSORS.get(method)
    if parent.family not in entry.meta["applies_to"] or parent.predictor.task not in entry.meta["tasks"]:
        fits = sorted(e.name for e in COMPRESSORS if parent.family in e.meta["applies_to"]
                      and parent.predictor.task in e.meta["tasks"])
        what = "a language model" if parent.predictor.task == "lm" else \
            f"{'an' if parent.family[0] in 'aeiou' else 'a'} {parent.family} model"
        raise ConfigError(f"{method} does not apply to {parent.run.path}, {what} "
                          f"({parent.predictor.meta['model']['name']}); methods that do: {', '.join(fits) or 'none'}")
    return entry


def check_params(entry, params: dict):
    """The method's options, validated by its params class; an option it does not take is named."""
    from modelyard.config import one_line_problem

    takes = ", ".join(f"--{k.replace('_', '-')}" for k in entry.config.model_fields) or "no options"
    unknown = [f"--{k.replace('_', '-')}" for k, v in params.items() if v is not None and k not in entry.config.model_fields]
    if unknown:
        raise ConfigError(f"compress --method {entry.name} does not take {', '.join(unknown)} (it takes {takes})")
    try:
        return entry.config.model_validate({k: v for k, v in params.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(f"compress --method {entry.name}: {one_line_problem(exc, params, entry.config, hints=False)} "
                          f"(it takes {takes})") from None


def run_compressor(run, method: str, params: dict, *, output=None, speed_budget_s: float = 4.0,
                   speed_iterations: int | None = None, quiet: bool = True):
    """Open and check the parent, run the method, write the derived run; see `compress.compress`."""
    from modelyard.compress.derived import write_derived
    from modelyard.pipeline import Run

    if method not in COMPRESSORS:
        raise ConfigError(COMPRESSORS.unknown_message(method))
    parent = open_parent(run)
    entry = check_applies(parent, method)
    options = check_params(entry, params)
    out = Path(output) if output is not None else parent.run.path.parent
    parent.speed = {"speed_budget_s": speed_budget_s, "speed_iterations": speed_iterations}
    result = entry.obj(parent, options, output=out, quiet=quiet)
    if isinstance(result, RunDir):  # a method that trained through the normal trainer wrote its own run
        return Run(result.path, result.read_json(result.metrics_path))
    derived = RunDir.derive(parent.run, method, options.model_dump(mode="json"), output=out)
    try:
        metrics = write_derived(parent, derived, result, speed_budget_s=speed_budget_s,
                                speed_iterations=speed_iterations)
    except BaseException as exc:
        derived.set_status(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                           error=f"{type(exc).__name__}: {exc}", finished=utc_stamp())
        raise
    return Run(derived.path, metrics)
