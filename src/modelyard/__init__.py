"""modelyard: take a model from data to a trained, evaluated, reported artifact, offline and reproducibly.

Example:
    >>> import modelyard
    >>> run = modelyard.train("examples/digits-lenet.yaml")
    >>> modelyard.load(run.path).predict(images)
"""

import os

# Nothing is downloaded at run time; Hugging Face libraries read only local files and the local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__version__ = "0.1.0"

from modelyard.errors import ConfigError, DataError, ModelError, ModelyardError, RunError  # noqa: E402


def train(config=None, **kwargs):
    """Train, evaluate and report one experiment; see `modelyard.pipeline.train`."""
    from modelyard.pipeline import train as _train

    return _train(config, **kwargs)


def __getattr__(name):
    # torch and friends load on first use, so `modelyard --help` and config errors stay fast.
    if name == "Run":
        from modelyard.pipeline import Run

        return Run
    if name in ("load", "Predictor"):
        from modelyard import artifact

        return getattr(artifact, name)
    if name == "load_config":
        from modelyard.config import load_config

        return load_config
    if name == "evaluate":
        from modelyard.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'modelyard' has no attribute {name!r}")


__all__ = ["train", "load", "load_config", "evaluate", "Run", "Predictor", "ModelyardError", "ConfigError",
           "DataError", "ModelError", "RunError", "__version__"]
