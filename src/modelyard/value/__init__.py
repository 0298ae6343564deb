"""Value analysis: measure what candidate models cost and what they are worth in a business scenario, and
recommend one. `modelyard value RUN [RUN ...] --scenario FILE` on the command line.

    >>> from modelyard.value import value
    >>> result = value(["runs/debian-tfidf-...", "runs/debian-minilm-..."], "examples/value-debian.yaml")
    >>> result["recommendation"]
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["value", "load_scenario", "measure", "compare"]


def __getattr__(name):  # the submodules import torch and friends only when used
    if name == "load_scenario":
        from modelyard.value.scenario import load_scenario

        return load_scenario
    if name == "measure":
        from modelyard.value.measure import measure

        return measure
    if name == "compare":
        from modelyard.value.compare import compare

        return compare
    raise AttributeError(name)


def value(runs: list[str | Path], scenario, *, output: str | Path | None = None, budget_s: float = 20.0,
          iterations: int | None = None, isolated: bool = True, device: str = "cpu") -> dict:
    """Measure every run on this machine, compare them in `scenario`, and write value.json and value.html.

    Args:
        runs: finished run directories of the same task (same labels and test split), trained or derived
            (`modelyard compress`); a derived run is named by its model folder's experiment name (tiny-bf16),
            and two runs of one experiment by their run folders.
        scenario: a scenario YAML path, mapping, or `Scenario`.
        output: folder for value.json and value.html (default: value-<UTC timestamp>/ in the current folder).
        budget_s: seconds of speed measurement per candidate.
        iterations: time exactly this many calls per speed measurement instead of using `budget_s`.
        isolated: measure each run in its own process (so peak memory is the model's own).

    Raises:
        ConfigError: a bad scenario, or runs that cannot be compared.
        RunError: a run that is missing or unfinished.
    """
    from modelyard.artifact import resolve_model_dir
    from modelyard.errors import ConfigError
    from modelyard.runs import utc_stamp
    from modelyard.value.compare import compare, same_labels, unique_names
    from modelyard.value.measure import measure, measure_isolated
    from modelyard.value.report import write_value_report
    from modelyard.value.scenario import Scenario, load_scenario

    if not runs:
        raise ConfigError("give at least one run to value")
    s = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    labels = {}
    for run in runs:  # cheap checks first: a bad run or mismatched labels fail before minutes of measuring
        meta = json.loads((resolve_model_dir(run) / "modelyard.json").read_text())
        if meta.get("task") == "lm":
            raise ConfigError(f"{run} is a language model; `modelyard value` compares classifiers")
        labels[str(run)] = meta["labels"]
    s.outcomes.matrix(same_labels(labels))  # a value matrix that does not fit the labels fails now
    get = measure_isolated if isolated else measure
    measurements = unique_names([get(run, budget_s=budget_s, iterations=iterations, device=device) for run in runs])
    result = compare(measurements, s)
    out = Path(output) if output else Path(f"value-{utc_stamp()}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "value.json").write_text(json.dumps({**result, "measurements": measurements}, indent=2) + "\n")
    write_value_report(out / "value.html", result)
    result["output"] = str(out)
    return result
