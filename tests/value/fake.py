"""A measurement made by hand, in the shape `modelyard.value.measure.measure` returns, so that `compare` can be
checked against figures worked out on paper. `test_value.py` checks that its keys are ones `measure` writes."""

import numpy as np


def fake_measurement(name: str, y: list[int], prob: list[list[float]], *, labels: list[str],
                     predictions_per_second: float, joules_per_prediction: float, train_s: float, train_kwh: float,
                     p95_ms: float = 5.0) -> dict:
    """One candidate whose val and test predictions are both (`y`, `prob`)."""
    y_arr, p_arr = np.asarray(y), np.asarray(prob, dtype=float)
    accuracy = float((p_arr.argmax(axis=1) == y_arr).mean())
    preds = [list(y), [list(map(float, row)) for row in prob]]
    return {
        "run": f"runs/{name}", "name": name, "model": "hand", "labels": labels,
        "machine": {"cpu": "hand", "cores": 1},
        "quality": {"accuracy": accuracy, "f1_macro": accuracy, "ece": 0.0},
        "predictions": {"val": preds, "test": preds},
        "size": {"parameters": 1, "bytes_on_disk": 1},
        "flops_per_example": None,
        "latency_ms_batch1": {"p50": p95_ms / 2, "p95": p95_ms, "p99": p95_ms},
        "predictions_per_second": predictions_per_second,
        "energy_per_prediction_j": joules_per_prediction,
        "training": {"time_s": train_s, "energy": {"kwh": train_kwh}, "processes": 1},
    }


def key_paths(d: dict, prefix: str = "") -> set[str]:
    """Dotted paths of every key in nested dicts: {"a": {"b": 1}} -> {"a", "a.b"}."""
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= key_paths(v, prefix + k + ".")
    return out
