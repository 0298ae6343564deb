"""`modelyard models ...` and `modelyard keys ...`: the registry from the command line."""

from __future__ import annotations

import json

import click


@click.group()
def models() -> None:
    """Register runs as versioned models, list them, promote one to production."""


@models.command("register")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--name", required=True, help="Model name; each registration adds a version.")
def register_cmd(run: str, name: str) -> None:
    """Register RUN's saved model as the next version of NAME.

    The model must load and predict on a sample input; its files are then copied into the artifact store
    (MODELYARD_ARTIFACTS, default MODELYARD_HOME/artifacts), so the version outlives the run folder.
    """
    from modelyard.store import artifacts
    from modelyard.store.models import register

    rec = register(run, name)
    click.echo(f"registered {rec['name']}:{rec['version']} (sha256 {rec['weights_sha256'][:12]}) from "
               f"{rec['run_path']}; its files are kept in {artifacts.folder(rec['artifact'])}")


@models.command("list")
@click.argument("name", required=False)
def list_cmd(name: str | None) -> None:
    """Every registered version (of NAME)."""
    from modelyard.store.models import list_versions

    rows = list_versions(name)
    if not rows:
        click.echo("no models registered; `modelyard models register RUN --name NAME` adds one")
    for r in rows:
        acc = r["metrics"].get("test", {}).get("accuracy")
        click.echo(f"{r['name']}:{r['version']:<4} {r['stage']:<10} {r['created_at']}  {r['created_by']:<10} "
                   f"{'test accuracy %.4f' % acc if acc is not None else ''}  {r['run_path']}"
                   + ("" if r.get("artifact") else "  (no stored copy: registered before the artifact store)"))


@models.command("show")
@click.argument("ref", metavar="NAME[:VERSION]")
def show_cmd(ref: str) -> None:
    """One version as JSON (NAME alone: its production version, else the latest)."""
    from modelyard.store.models import show

    click.echo(json.dumps(show(ref), indent=2))


@models.command("promote")
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--stage", required=True, type=click.Choice(["production", "staging", "archived"]))
def promote_cmd(ref: str, stage: str) -> None:
    """Move a version to a stage; a new production version archives the previous one."""
    from modelyard.store.models import promote

    rec = promote(ref, stage)
    click.echo(f"{rec['name']}:{rec['version']} is now {rec['stage']}")


@click.group()
def keys() -> None:
    """API keys for the server: create, revoke, and usage for billing."""


@keys.command("create")
@click.option("--name", required=True, help="The client the key is for.")
def create_cmd(name: str) -> None:
    """Create a key for client NAME. The key is printed once, alone on the last line; only its hash is kept."""
    from modelyard.store.keys import create_key

    rec, key = create_key(name)
    click.echo(f"created key {rec['prefix']}... for {rec['name']}; store it now, it is not shown again:")
    click.echo(key)


@keys.command("revoke")
@click.argument("name_or_prefix")
def revoke_cmd(name_or_prefix: str) -> None:
    """Revoke every key of a client name, or one key by its prefix."""
    from modelyard.store.keys import revoke_key

    click.echo(f"revoked {revoke_key(name_or_prefix)} key(s)")


@keys.command("usage")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def usage_cmd(as_json: bool) -> None:
    """Requests, predictions and compute milliseconds per key."""
    from modelyard.store.keys import usage

    rows = usage()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'client':<16} {'key':<12} {'requests':>10} {'predictions':>12} {'compute ms':>12}  status")
    for r in rows:
        click.echo(f"{r['name']:<16} {r['prefix']:<12} {r['requests']:>10} {r['predictions']:>12} "
                   f"{r['compute_ms']:>12.1f}  {'revoked' if r['revoked_at'] else 'live'}")
