"""`compress()`: make a trained model cheaper and write the result as a derived run that evaluate, value,
register and serve take like any other. One file per method family, each registering its methods here.

    >>> from modelyard.compress import compress
    >>> run = compress("runs/debian-minilm-20261129T100000Z", "onnx-int8")
    >>> run.metrics["test"]["accuracy"], run.metrics["speed"]["ratio"]["throughput_batch32"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelyard.compress.base import COMPRESSORS, Parent, register_compressor

# The methods register on import; each module imports torch, onnx or friends only inside its functions.
from modelyard.compress import quantize, export, prune, distill  # noqa: E402,F401  isort: skip

__all__ = ["compress", "COMPRESSORS", "Parent", "register_compressor"]


def compress(run: str | Path, method: str, *, output: str | Path | None = None, speed_budget_s: float = 4.0,
             speed_iterations: int | None = None, quiet: bool = True, **params: Any):
    """Compress the model of `run` with `method` into a new derived run; the parent run is only read.

    Args:
        run: a completed run directory (trained, or itself derived).
        method: a registered method: int8-dynamic, bf16, onnx, onnx-int8, prune, distill.
        output: folder under which the derived run is created (default: beside the parent).
        speed_budget_s: seconds of speed measurement per model and batch size (the parent is timed in the same
            process, so the ratio compares like with like).
        speed_iterations: time exactly this many calls instead (tests).
        params: the method's options (see `modelyard compress --help`), checked against its config class.

    Returns:
        `pipeline.Run` of the derived run: its path and metrics (test metrics on the parent's test split, the
        parent's beside them, size, parameters, speed).

    Raises:
        ConfigError: an unknown method, an option it does not take, a method that does not apply to the model, or
            an output folder inside the run.
        RunError: the run is missing, unfinished or failed, or its files (splits.json, the model) are damaged.
        DataError: the run's data changed since it was trained.
        TypeError: an argument of the wrong type (run, method, output, speed_budget_s, speed_iterations).

    A run stopped half-way (Ctrl-C, an error) says `interrupted` or `failed` in its run.json and holds no model.
    """
    from modelyard.compress.base import run_compressor

    return run_compressor(run, method, params, output=output, speed_budget_s=speed_budget_s,
                          speed_iterations=speed_iterations, quiet=quiet)
