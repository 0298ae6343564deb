"""`modelyard runs list|rm|clean`: what is in a runs folder, and removing what is not wanted."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import click

from modelyard.errors import RunError
from modelyard.units import human_bytes

STALE_STATUSES = ("failed", "interrupted", "killed")
# What training writes beside config.yaml: a folder holding only a config.yaml (a user's project) is not a run.
RUN_FILES = ("run.json", "history.jsonl", "metrics.json", "checkpoints", "model")


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and any((path / name).exists() for name in RUN_FILES)


@click.group()
def runs() -> None:
    """List and remove run directories."""


def _run_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise RunError(f"runs folder {folder} not found; pass the --output folder you trained into (default: runs)")
    return sorted((p for p in folder.iterdir() if is_run_dir(p)), key=lambda p: p.stat().st_mtime)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_summary(path: Path) -> dict:
    """One row of `runs list`: status, experiment, best metric, age and size of a run directory, and for a derived
    run (`modelyard compress`) its parent's name and the method."""
    status = _read(path / "run.json")
    metrics = _read(path / "metrics.json")
    best = ""
    if "test" in metrics and "headline" in metrics["test"]:
        h = metrics["test"]["headline"]
        best = f"test {h['metric']} {h['value']:.4f}"
    elif "val" in metrics and "perplexity" in metrics["val"]:
        best = f"val perplexity {metrics['val']['perplexity']:.2f}"
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    age_s = datetime.now(timezone.utc).timestamp() - path.stat().st_mtime
    try:
        import yaml

        experiment = (yaml.safe_load((path / "config.yaml").read_text()) or {}).get("name", "")
    except (OSError, ValueError, AttributeError):
        experiment = ""
    from modelyard.runs import RunDir

    try:
        state = RunDir(path).current_status()
    except (OSError, ValueError):
        state = status.get("status", "unknown")
    lineage = status.get("lineage") if isinstance(status.get("lineage"), dict) else {}
    return {"run": path.name, "path": str(path), "status": state,
            "experiment": str(experiment), "best": best, "age_s": age_s, "bytes": size,
            "error": status.get("error"), "parent": lineage.get("parent_name"), "method": lineage.get("method")}


def made_from(row: dict) -> str:
    """"<- tiny-20261129T094135Z (bf16)" for a derived run (`modelyard compress`), "" for a trained one."""
    return f"<- {row['parent']} ({row['method']})" if row.get("method") else ""


def _age(seconds: float) -> str:
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit}"
    return f"{seconds:.0f} s"


@runs.command("list")
@click.argument("folder", default="runs", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def list_runs(folder: str, as_json: bool) -> None:
    """List the runs in FOLDER (default: runs), oldest first."""
    rows = [run_summary(p) for p in _run_dirs(Path(folder))]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no runs in {folder}")
        return
    from rich.console import Console
    from rich.table import Table

    derived = any(r["method"] for r in rows)  # the column only when a derived run is there to fill it
    table = Table(box=None, pad_edge=False)
    for column in ("run", "status", "experiment", *(("made from",) if derived else ()), "best metric", "age", "size"):
        table.add_column(column, justify="right" if column in ("age", "size") else "left", no_wrap=column == "run")
    for r in rows:
        style = {"completed": "green", "failed": "red", "killed": "red", "interrupted": "yellow"}.get(r["status"], "")
        status = f"[{style}]{r['status']}[/]" if style else r["status"]
        table.add_row(r["run"], status, r["experiment"], *((made_from(r),) if derived else ()), r["best"],
                      _age(r["age_s"]), human_bytes(r["bytes"]))
    console = Console()
    if not console.is_terminal:  # piped: never cut a run name that a script or `runs rm` needs whole
        console = Console(width=240)
    console.print(table)


@runs.command("rm")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False), metavar="RUN [RUN ...]")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def remove(run_dirs: tuple[str, ...], yes: bool) -> None:
    """Delete the run directories RUN (each must hold a config.yaml and what training wrote, so nothing else is
    deleted)."""
    paths = []
    for run in run_dirs:
        path = Path(run)
        if not is_run_dir(path):
            raise RunError(f"{run} is not a run directory (no config.yaml with run.json, history.jsonl, metrics.json, "
                           "checkpoints/ or model/ beside it); nothing was deleted")
        paths.append(path)
    _delete(paths, yes)


@runs.command("clean")
@click.argument("folder", default="runs", type=click.Path(file_okay=False))
@click.option("--failed", is_flag=True, help="Delete the failed, interrupted and killed runs (an interrupted one "
              "could still be resumed).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def clean(folder: str, failed: bool, yes: bool) -> None:
    """Delete the failed, interrupted and killed runs in FOLDER (default: runs)."""
    if not failed:
        raise click.UsageError("say what to clean: --failed deletes the failed, interrupted and killed runs")
    paths = [Path(r["path"]) for r in map(run_summary, _run_dirs(Path(folder))) if r["status"] in STALE_STATUSES]
    if not paths:
        click.echo(f"no failed, interrupted or killed runs in {folder}")
        return
    _delete(paths, yes)


def _delete(paths: list[Path], yes: bool) -> None:
    for p in paths:
        click.echo(f"  {p}")
    if not yes and not click.confirm(f"delete these {len(paths)} run(s)?", default=False):
        raise click.Abort()
    for p in paths:
        if p.is_symlink():  # as rm does: the link goes, the run it points to stays
            p.unlink()
            click.echo(f"removed the link {p}; the run it points to, {p.resolve()}, is kept")
        else:
            shutil.rmtree(p)
    click.echo(f"deleted {len(paths)} run(s)")
