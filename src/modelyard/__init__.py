"""modelyard: take a model from data to a trained, evaluated, reported artifact, offline and reproducibly.

Example:
    >>> import modelyard
    >>> run = modelyard.train("examples/digits-lenet.yaml")
    >>> modelyard.load(run.path).predict(images)
"""

__version__ = "0.1.0"

# Importing modelyard changes nothing in the process (no HF_HUB_OFFLINE): nothing is downloaded at run time
# because each of modelyard's own Hugging Face calls passes local_files_only=True (see models/hf.py).
from modelyard.errors import ConfigError, DataError, ModelError, ModelyardError, RunError


def train(config=None, **kwargs):
    """Train, evaluate and report one experiment; see `modelyard.pipeline.train`."""
    from modelyard.pipeline import train as _train

    return _train(config, **kwargs)


def __getattr__(name):
    # The modules behind these names import torch: loading them on first use keeps `import modelyard` and
    # `modelyard --help` free of it.
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
