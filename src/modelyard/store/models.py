"""Model versions in the registry: register a run, list, show, promote, and resolve what `serve` should load."""

from __future__ import annotations

import getpass
import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from modelyard.store.db import RegistryError, connect

STAGES = ("production", "staging", "archived", "none")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def content_hash(model_dir: Path) -> str:
    """SHA-256 over every file of a saved model (names and bytes), in a fixed order."""
    h = hashlib.sha256()
    for f in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(model_dir)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _row(r) -> dict:
    d = dict(r._mapping)
    d["metrics"] = json.loads(d["metrics"])
    return d


def register(run: str | Path, name: str, *, url: str | None = None) -> dict:
    """Add the run's saved model as the next version of `name`. Returns the version's record."""
    from modelyard.artifact import resolve_model_dir

    if not NAME.match(name):
        raise RegistryError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (up to 200)")
    model_dir = resolve_model_dir(run)
    run_path = model_dir.parent.resolve() if model_dir.name == "model" else model_dir.resolve()
    metrics_path = run_path / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    summary = {k: metrics[k] for k in ("train_time_s", "parameters") if k in metrics}
    for split in ("val", "test"):
        if isinstance(metrics.get(split), dict):
            summary[split] = {k: v for k, v in metrics[split].items() if isinstance(v, (int, float))}
    record = {"name": name, "run_path": str(run_path), "weights_sha256": content_hash(model_dir),
              "metrics": json.dumps(summary), "created_by": getpass.getuser(), "created_at": now()}
    engine = connect(url)
    for _ in range(10):  # PostgreSQL: a concurrent registration may take the same number; try the next
        try:
            with engine.begin() as conn:
                latest = conn.execute(text("SELECT MAX(version) FROM model_versions WHERE name = :n"),
                                      {"n": name}).scalar()
                version = (latest or 0) + 1
                conn.execute(text(
                    "INSERT INTO model_versions (name, version, run_path, weights_sha256, metrics, created_by, "
                    "created_at) VALUES (:name, :version, :run_path, :weights_sha256, :metrics, :created_by, "
                    ":created_at)"), {**record, "version": version})
            return show(f"{name}:{version}", url=url)
        except IntegrityError:
            continue
    raise RegistryError(f"could not register {name}: too many concurrent registrations; try again")


def list_versions(name: str | None = None, *, url: str | None = None) -> list[dict]:
    sql = "SELECT * FROM model_versions" + (" WHERE name = :n" if name else "") + " ORDER BY name, version"
    with connect(url).connect() as conn:
        return [_row(r) for r in conn.execute(text(sql), {"n": name})]


def parse_ref(ref: str) -> tuple[str, int | None]:
    name, sep, version = ref.partition(":")
    if sep:
        if not version.isdigit():
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
        raise RegistryError(f"no model {ref!r} in the registry" + (f"; registered: {', '.join(known)}" if known
                                                                   else "; register one with `modelyard models register RUN --name NAME`"))
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


def resolve(model: str, *, url: str | None = None) -> tuple[Path, dict | None]:
    """What `serve MODEL` loads: a run path (no registry record), or NAME / NAME:VERSION from the registry,
    whose weights must still hash to what was registered."""
    from modelyard.artifact import resolve_model_dir

    path = Path(model)
    if path.exists():
        return path, None
    record = show(model, url=url)
    model_dir = resolve_model_dir(record["run_path"])
    if content_hash(model_dir) != record["weights_sha256"]:
        raise RegistryError(f"{record['name']}:{record['version']}: the files in {model_dir} have changed since "
                            "they were registered (content hash mismatch); refusing to serve them. Register the "
                            "run again if the change is intended")
    return Path(record["run_path"]), record
