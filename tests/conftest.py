import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**sections) -> dict:
    """A seconds-long digits experiment; pass sections to override, e.g. model={"name": "mlp"}."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "data": {"source": "builtin:digits"},
        "model": {"name": "mlp", "hidden_sizes": [32]},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.01},
        "evaluate": {"bootstrap": 50},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """One finished tiny run shared by the read-only tests of the run directory, predict and evaluate."""
    import modelyard

    return modelyard.train(tiny_config(), output=tmp_path_factory.mktemp("runs"), quiet=True)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    from modelyard.data.synthetic import write_shapes_folder

    return write_shapes_folder(tmp_path_factory.mktemp("shapes"), per_class=12, size=16)


@pytest.fixture(scope="session")
def wine_csv(tmp_path_factory):
    from modelyard.data.synthetic import write_wine_csv

    return write_wine_csv(tmp_path_factory.mktemp("wine") / "wine.csv")


def run_cli(*args, cwd=None, env=None, check=False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "modelyard", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"modelyard {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
