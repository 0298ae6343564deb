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
    """API keys for the server: create, limit, revoke, and usage for billing."""


def _limit_options(command):
    """--rate, --burst and --quota, checked by the registry (a bad value is a clear error, exit status 2)."""
    for option in reversed([
        click.option("--rate", type=float, metavar="PER_S",
                     help="Requests per second the key may make (each server process counts its own)."),
        click.option("--burst", type=int, metavar="N",
                     help="Requests allowed at once before --rate applies (default: one second's worth)."),
        click.option("--quota", type=int, metavar="N",
                     help="Predictions per calendar month (UTC), exact across workers and servers."),
    ]):
        command = option(command)
    return command


@keys.command("create")
@click.option("--name", required=True, help="The client the key is for.")
@_limit_options
def create_cmd(name: str, rate: float | None, burst: int | None, quota: int | None) -> None:
    """Create a key for client NAME, with optional limits. The key is printed once, alone on the last line; only
    its hash is kept.

    Over a limit the server answers 429 with Retry-After. Example: --rate 5 --burst 10 --quota 100000.
    """
    from modelyard.store.keys import Limits, create_key

    rec, key = create_key(name, limits=Limits.checked(rate, burst, quota))
    click.echo(f"created key {rec['prefix']}... for {rec['name']} ({rec['limits'].describe()}); store it now, it "
               "is not shown again:")
    click.echo(key)


@keys.command("limit")
@click.argument("name_or_prefix")
@_limit_options
@click.option("--no-rate", is_flag=True, help="Remove the rate limit (and its burst).")
@click.option("--no-quota", is_flag=True, help="Remove the monthly quota.")
def limit_cmd(name_or_prefix: str, rate: float | None, burst: int | None, quota: int | None, no_rate: bool,
              no_quota: bool) -> None:
    """Change the limits of every live key of a client name, or of one key by its prefix; limits not given stay
    as they are. Running servers apply the change within 10 s."""
    from modelyard.store.keys import KEEP, set_limits

    if no_rate and (rate is not None or burst is not None):
        raise click.UsageError("--no-rate removes the rate limit: give it without --rate and --burst")
    if no_quota and quota is not None:
        raise click.UsageError("--no-quota removes the quota: give it without --quota")
    if not (no_rate or no_quota) and rate is None and burst is None and quota is None:
        raise click.UsageError("give a limit to change: --rate, --burst, --quota, --no-rate or --no-quota")
    changed = set_limits(name_or_prefix, rate=None if no_rate else KEEP if rate is None else rate,
                         burst=None if no_rate else KEEP if burst is None else burst,
                         quota=None if no_quota else KEEP if quota is None else quota)
    for r in changed:
        click.echo(f"{r['name']} {r['prefix']}...: {r['limits'].describe()}")


@keys.command("revoke")
@click.argument("name_or_prefix")
def revoke_cmd(name_or_prefix: str) -> None:
    """Revoke every key of a client name, or one key by its prefix."""
    from modelyard.store.keys import revoke_key

    click.echo(f"revoked {revoke_key(name_or_prefix)} key(s)")


def _quota_text(r: dict) -> str:
    return "-" if r["monthly_quota"] is None else f"{r['quota_used']:,}/{r['monthly_quota']:,}"


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_keys_cmd(as_json: bool) -> None:
    """Every key: its client, prefix, limits, this month's predictions against its quota, and status."""
    from modelyard.store.keys import usage

    rows = usage()
    if as_json:
        click.echo(json.dumps([{k: r[k] for k in ("id", "name", "prefix", "created_at", "revoked_at", "rate_per_s",
                                                  "burst", "monthly_quota", "quota_used", "month")} for r in rows],
                              indent=2))
        return
    month = rows[0]["month"] if rows else ""
    click.echo(f"{'client':<16} {'key':<12} {'created':<26} {'rate/s':>8} {'burst':>6} "
               f"{'quota used ' + month:>22}  status")
    for r in rows:
        rate = "-" if r["rate_per_s"] is None else f"{r['rate_per_s']:g}"
        burst = "-" if r["burst"] is None else str(r["burst"])
        click.echo(f"{r['name']:<16} {r['prefix']:<12} {r['created_at']:<26} {rate:>8} {burst:>6} "
                   f"{_quota_text(r):>22}  {'revoked' if r['revoked_at'] else 'live'}")


@keys.command("usage")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def usage_cmd(as_json: bool) -> None:
    """Requests, predictions, inputs explained and compute milliseconds per key, and this month's predictions
    against its quota."""
    from modelyard.store.keys import usage

    rows = usage()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    month = rows[0]["month"] if rows else ""
    click.echo(f"{'client':<16} {'key':<12} {'requests':>10} {'predictions':>12} {'explained':>10} "
               f"{'compute ms':>12} {'quota used ' + month:>22}  status")
    for r in rows:
        click.echo(f"{r['name']:<16} {r['prefix']:<12} {r['requests']:>10} {r['predictions']:>12} "
                   f"{r['explanations']:>10} {r['compute_ms']:>12.1f} {_quota_text(r):>22}  "
                   f"{'revoked' if r['revoked_at'] else 'live'}")
