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
from modelyard.runs import RunDir

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
    metrics: dict = field(default_factory=dict)  # its metrics.json, checked to hold its test figures
    # compress()'s speed_budget_s and speed_iterations, for a method that times its own run with finish_trained
    speed: dict = field(default_factory=dict)

    @cached_property
    def cfg(self):  # config.yaml, read and validated once however often a method asks
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
        lineage = rd.lineage()
        if status == "running":
            how = "wait for it to finish"
        elif isinstance(lineage, dict) and lineage.get("method"):  # a derived run has no checkpoint to resume from
            how = (f"make it again with `modelyard compress {lineage.get('parent', 'PARENT')} --method "
                   f"{lineage['method']}`")
        else:
            how = f"resume it with `modelyard train --resume {rd.path}`"
        raise RunError(f"{rd.path} is {status}, not completed: only a finished run's model can be compressed; {how}")
    predictor = load(rd.path)
    return Parent(run=rd, predictor=predictor, metrics=_figures(rd, test=predictor.task == "classification"))


def _figures(rd: RunDir, *, test: bool) -> dict:
    """The run's metrics.json, which the derived run's figures are shown beside.

    Raises:
        RunError: the file is missing, not JSON, or (`test`) holds no test figures.
    """
    import json

    damaged = "the file was edited or damaged: restore the run from a backup, or train the experiment anew"
    try:
        metrics = json.loads(rd.metrics_path.read_text())
    except FileNotFoundError:
        raise RunError(f"{rd.metrics_path} is missing; the run may not have finished (see {rd.status_path})") from None
    except ValueError:
        raise RunError(f"{rd.metrics_path} is not valid JSON; {damaged}") from None
    if not isinstance(metrics, dict) or (test and not isinstance(metrics.get("test"), dict)):
        raise RunError(f"{rd.metrics_path} holds no test figures (a `test` object); {damaged}")
    return metrics


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

    takes = ", ".join(map(_option, entry.config.model_fields)) or "no options"
    unknown = [_option(k) for k, v in params.items() if v is not None and k not in entry.config.model_fields]
    if unknown:
        raise ConfigError(f"compress --method {entry.name} does not take {', '.join(unknown)} (it takes {takes})")
    try:
        return entry.config.model_validate({k: v for k, v in params.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(f"compress --method {entry.name}: {one_line_problem(exc, params, entry.config, hints=False)} "
                          f"(it takes {takes})") from None


SPLIT_KEYS = ("data", "seed")  # what a method that trains must not change: its run is scored on the parent's split


def refuse_split_changes(method: str, overrides: list[str], *, allowed: str = "train.*, evaluate.* or model.*") -> None:
    """A trained derived run (a student, a pruned model's recovery) must train and be scored on the parent's
    split, so `--set` may not touch data.* or seed; refused before any work, not after the training.

    Raises:
        ConfigError: naming the override.
    """
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.split(".")[0] in SPLIT_KEYS:
            raise ConfigError(f"compress --method {method} --set {item}: the derived run trains on the parent's data "
                              f"and split, so data.* and seed cannot change; set {allowed} keys")


def _option(field_name: str) -> str:
    """The command-line option of a method's field (`overrides` is `--set KEY=VALUE`)."""
    return "--set" if field_name == "overrides" else f"--{field_name.replace('_', '-')}"


def check_arguments(run, method, output, speed_budget_s, speed_iterations) -> None:
    """compress()'s own arguments, before anything is read or written.

    Raises:
        TypeError: an argument of the wrong type (a programming error in the caller), naming it.
        ConfigError: a speed budget or iteration count that cannot be timed.
    """
    import numbers
    import os

    for name, value, optional in (("run", run, False), ("output", output, True)):
        if not isinstance(value, (str, os.PathLike)) and not (optional and value is None):
            raise TypeError(f"compress({name}=...) takes a folder path (str or pathlib.Path), not "
                            f"{type(value).__name__} {value!r}")
    if not isinstance(method, str):
        raise TypeError(f"compress(method=...) takes a method name (str), one of {', '.join(COMPRESSORS.names())}; "
                        f"not {type(method).__name__} {method!r}")
    if isinstance(speed_budget_s, bool) or not isinstance(speed_budget_s, numbers.Real):
        raise TypeError(f"compress(speed_budget_s=...) takes seconds as a number, not {type(speed_budget_s).__name__}")
    if not speed_budget_s > 0:
        raise ConfigError(f"compress: speed_budget_s must be more than 0 seconds, got {speed_budget_s!r}")
    if speed_iterations is not None:
        if isinstance(speed_iterations, bool) or not isinstance(speed_iterations, numbers.Integral):
            raise TypeError(f"compress(speed_iterations=...) takes a whole number of calls or None, not "
                            f"{type(speed_iterations).__name__} {speed_iterations!r}")
        if speed_iterations < 1:
            raise ConfigError(f"compress: speed_iterations must be at least 1, got {speed_iterations}")


def output_folder(parent: RunDir, output) -> Path:
    """Where the derived run goes: `output`, or the folder that holds the parent.

    Raises:
        ConfigError: `output` lies inside the parent run, which compress must leave as it was.
    """
    here = parent.path
    if output is None:  # `compress .` from inside the run: Path(".").parent is "." again
        inside = here.parent.resolve().is_relative_to(here.resolve())
        return here.resolve().parent if inside else here.parent
    out = Path(output)
    if out.resolve().is_relative_to(here.resolve()):
        raise ConfigError(f"--output {out} lies inside the parent run {here}, which compress only reads (a run inside "
                          "its model folder would be registered and served with it); pass a folder outside it, or "
                          "leave --output out to write beside the parent")
    return out


def run_compressor(run, method: str, params: dict, *, output=None, speed_budget_s: float = 4.0,
                   speed_iterations: int | None = None, quiet: bool = True):
    """Open and check the parent, run the method, write the derived run; see `compress.compress`."""
    from modelyard.compress.derived import outcome_recorded, write_derived
    from modelyard.pipeline import Run

    check_arguments(run, method, output, speed_budget_s, speed_iterations)
    if method not in COMPRESSORS:
        raise ConfigError(COMPRESSORS.unknown_message(method))
    parent = open_parent(run)
    entry = check_applies(parent, method)
    options = check_params(entry, params)
    parent.data  # noqa: B018  the parent's data must be what it was trained on (DataError), before anything is written
    out = output_folder(parent.run, output)
    parent.speed = {"speed_budget_s": speed_budget_s, "speed_iterations": speed_iterations}
    result = entry.obj(parent, options, output=out, quiet=quiet)
    if isinstance(result, RunDir):  # a method that trained through the normal trainer wrote its own run
        return Run(result.path, result.read_json(result.metrics_path))
    derived = RunDir.derive(parent.run, method, options.model_dump(mode="json"), output=out)
    with outcome_recorded(derived):
        metrics = write_derived(parent, derived, result, speed_budget_s=speed_budget_s,
                                speed_iterations=speed_iterations)
    return Run(derived.path, metrics)
