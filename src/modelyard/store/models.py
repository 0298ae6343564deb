"""Model versions in the registry: register a run, list, show, promote, and resolve what `serve` should load.

Registering checks that the model loads and predicts, then copies its files into the artifact store
(`store.artifacts`); a version is served from there, never from the run folder, after its hash is checked.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from modelyard.errors import ModelyardError
from modelyard.store import artifacts
from modelyard.store.db import RegistryError, connect

STAGES = ("production", "staging", "archived", "none")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _row(r) -> dict:
    d = dict(r._mapping)
    d["metrics"] = json.loads(d["metrics"])
    return d


def register(run: str | Path, name: str, *, url: str | None = None) -> dict:
    """Add the run's saved model as the next version of `name`. Returns the version's record.

    The model is loaded and predicts once on a sample input before anything is recorded; its files are copied into
    the artifact store, so the version keeps working whatever later happens to the run folder.

    Raises:
        RegistryError: a bad name, a model that does not load or predict, an artifact store that cannot be written.
        RunError: no saved model at `run`.
    """
    from modelyard.artifact import resolve_model_dir

    if not NAME.match(name):
        raise RegistryError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (up to 200)")
    model_dir = resolve_model_dir(run)
    run_path = model_dir.parent.resolve() if model_dir.name == "model" else model_dir.resolve()
    engine = connect(url)  # a registry that cannot be reached fails before the copy
    address, digest = artifacts.put(model_dir, lambda copy: check_predicts(copy, shown=model_dir))
    record = {"name": name, "run_path": str(run_path), "weights_sha256": digest, "artifact": address,
              "metrics": json.dumps(_metrics_summary(run_path)), "created_by": getpass.getuser(),
              "created_at": now()}
    for _ in range(10):  # PostgreSQL: a concurrent registration may take the same number; try the next
        try:
            with engine.begin() as conn:
                latest = conn.execute(text("SELECT MAX(version) FROM model_versions WHERE name = :n"),
                                      {"n": name}).scalar()
                version = (latest or 0) + 1
                conn.execute(text(
                    "INSERT INTO model_versions (name, version, run_path, weights_sha256, artifact, metrics, "
                    "created_by, created_at) VALUES (:name, :version, :run_path, :weights_sha256, :artifact, "
                    ":metrics, :created_by, :created_at)"), {**record, "version": version})
            return show(f"{name}:{version}", url=url)
        except IntegrityError:
            continue
    raise RegistryError(f"could not register {name}: too many concurrent registrations; try again")


def _metrics_summary(run_path: Path) -> dict:
    metrics_path = run_path / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError):
        metrics = {}  # the metrics are a summary for `models list`; the model itself was checked
    if not isinstance(metrics, dict):
        metrics = {}
    summary = {k: metrics[k] for k in ("train_time_s", "parameters") if k in metrics}
    for split in ("val", "test"):
        if isinstance(metrics.get(split), dict):
            summary[split] = {k: v for k, v in metrics[split].items() if isinstance(v, (int, float))}
    return summary


def sample_input(pre):
    """One item of raw input for a preprocessor, as `Predictor.transform` reads it: enough to show that a model
    loads and runs end to end."""
    import numpy as np
    import pandas as pd

    samples = {
        "image": lambda: np.zeros((1, *pre.size), dtype=np.float32),  # (N, H, W), in source pixel units
        "sequence": lambda: np.zeros((1, pre.length), dtype=np.float32),  # (N, L)
        "tabular": lambda: pd.DataFrame({c: [st["fill"]] for c, st in {**pre.numeric, **pre.categorical}.items()}),
        "text": lambda: ["a short sample text"],
    }
    if pre.kind not in samples:
        raise RegistryError(f"no sample input for preprocessor kind {pre.kind!r}; add one to "
                            "modelyard.store.models.sample_input")
    return samples[pre.kind]()


def check_predicts(model_dir: Path, *, shown: Path | None = None) -> None:
    """Load the model in `model_dir` and predict once on a sample input (one token for a language model).

    `shown` names the folder in messages when `model_dir` is a copy of it.

    Raises:
        RegistryError: it does not load, or the prediction fails or is not a finite probability per label.
    """
    import numpy as np

    import modelyard

    where = shown or model_dir
    try:
        model = modelyard.load(model_dir)
        if model.preprocessor.kind == "corpus":  # a language model: ask for one token
            list(model.generate("The", max_new_tokens=1, seed=0))
            return
        prob = np.asarray(model.predict_proba(sample_input(model.preprocessor)))
    except Exception as exc:  # noqa: BLE001  (anything a damaged model throws; the user needs the message)
        detail = str(exc) if isinstance(exc, ModelyardError) else f"{exc.__class__.__name__}: {str(exc)[:300]}"
        raise RegistryError(f"cannot register {where}: the model does not load or predict on a sample input: "
                            f"{detail.replace(str(model_dir), str(where))}. Nothing was recorded") from None
    if prob.shape != (1, len(model.labels)):
        raise RegistryError(f"cannot register {where}: on a sample input it answers values shaped {prob.shape}, not "
                            f"one probability for each of its {len(model.labels)} labels. Nothing was recorded")
    if not np.isfinite(prob).all():
        raise RegistryError(f"cannot register {where}: on a sample input it answers {prob.round(4).tolist()}, not "
                            "finite probabilities; check the preprocessing statistics in its modelyard.json, or "
                            "retrain. Nothing was recorded")


def list_versions(name: str | None = None, *, url: str | None = None) -> list[dict]:
    sql = "SELECT * FROM model_versions" + (" WHERE name = :n" if name else "") + " ORDER BY name, version"
    with connect(url).connect() as conn:
        return [_row(r) for r in conn.execute(text(sql), {"n": name})]


def parse_ref(ref: str) -> tuple[str, int | None]:
    name, sep, version = ref.partition(":")
    if sep:
        # ASCII digits only ("١" is a digit to str.isdigit), and few enough for a database integer
        if not (version.isascii() and version.isdigit()) or len(version) > 18:
            raise RegistryError(f"{ref!r}: the version after ':' must be a number, e.g. {name}:3")
        return name, int(version)
    return name, None


def show(ref: str, *, url: str | None = None) -> dict:
    """NAME:VERSION, or NAME for its production version (else its latest)."""
    name, version = parse_ref(ref)
    with connect(url).connect() as conn:
        if version is not None:
            r = conn.execute(text("SELECT * FROM model_versions WHERE name = :n AND version = :v"),
                             {"n": name, "v": version}).first()
        else:
            r = conn.execute(text(
                "SELECT * FROM model_versions WHERE name = :n ORDER BY (stage = 'production') DESC, version DESC"),
                {"n": name}).first()
    if r is None:
        known = sorted({v["name"] for v in list_versions(url=url)})
        hint = (f"; registered: {', '.join(known)}" if known
                else "; register one with `modelyard models register RUN --name NAME`")
        raise RegistryError(f"no model {ref!r} in the registry{hint}")
    return _row(r)


def promote(ref: str, stage: str, *, url: str | None = None) -> dict:
    """Move NAME:VERSION to a stage; a new production version sends the previous one to archived."""
    if stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}; use one of {', '.join(STAGES[:3])}")
    name, version = parse_ref(ref)
    if version is None:
        raise RegistryError(f"promote needs NAME:VERSION, e.g. {name}:1")
    show(ref, url=url)
    with connect(url).begin() as conn:
        if stage == "production":
            conn.execute(text("UPDATE model_versions SET stage = 'archived' WHERE name = :n AND stage = 'production'"),
                         {"n": name})
        conn.execute(text("UPDATE model_versions SET stage = :s WHERE name = :n AND version = :v"),
                     {"s": stage, "n": name, "v": version})
    return show(ref, url=url)


def is_path(model: str) -> bool:
    """Whether `serve MODEL` means a folder: written as a path (it holds a '/' or starts with '.'), never a bare
    name, so a folder that happens to share a registered model's name cannot stand in for it."""
    seps = {"/", os.sep, os.altsep} - {None}
    return model.startswith(".") or any(sep in model for sep in seps)


def resolve(model: str, *, url: str | None = None) -> tuple[Path, dict | None]:
    """What `serve MODEL` loads: a path (no registry record) when MODEL is written as one (see `is_path`), else
    NAME / NAME:VERSION from the registry, whose files must still hash to what was registered.

    Returns:
        The model folder to load (for a version: its copy in the artifact store) and the registry record, if any.

    Raises:
        RegistryError: an unknown name, files missing from the artifact store, or files that changed.
        RunError: a path with no saved model.
    """
    from modelyard.artifact import resolve_model_dir

    if is_path(model):
        return resolve_model_dir(model), None
    try:
        record = show(model, url=url)
    except RegistryError as exc:
        if Path(model).exists():
            raise RegistryError(f"{exc}. A folder {model!r} is here, but a bare name means the registry: to serve "
                                f"the folder, write it as a path: ./{model}") from None
        raise
    what = f"{record['name']}:{record['version']}"
    if record.get("artifact"):
        return artifacts.verified(record["artifact"], record["weights_sha256"], what), record
    return _legacy_run_folder(record, what), record


def _legacy_run_folder(record: dict, what: str) -> Path:
    """A version registered before the artifact store: its files are wherever the run still is."""
    from modelyard.artifact import resolve_model_dir
    from modelyard.errors import RunError

    again = f"`modelyard models register RUN --name {record['name']}` from a copy of the run"
    try:
        model_dir = resolve_model_dir(record["run_path"])
    except RunError as exc:
        raise RegistryError(f"{what} was registered before modelyard kept a copy of each version, and its run "
                            f"folder is gone or incomplete ({exc}). Register it again with {again}") from None
    if artifacts.legacy_content_hash(model_dir) != record["weights_sha256"]:
        raise RegistryError(f"{what}: the files in {model_dir} have changed since they were registered (content "
                            f"hash mismatch); refusing to use them. Register the run again with {again}")
    return model_dir
