"""`modelyard value`: which model is worth deploying in a business scenario."""

from __future__ import annotations

import click


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False), metavar="RUN [RUN ...]")
@click.option("--scenario", required=True, type=click.Path(dir_okay=False),
              help="Scenario YAML: volume, what outcomes are worth, prices (see examples/value-*.yaml).")
@click.option("--output", type=click.Path(file_okay=False), help="Folder for value.json and value.html "
              "(default: value-<UTC timestamp>/).")
@click.option("--budget", default=20.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds of speed measurement per run.")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Time exactly this many calls per speed measurement instead of using --budget.")
def value(runs: tuple[str, ...], scenario: str, output: str | None, budget: float, iterations: int | None) -> None:
    """Measure each RUN on this machine, price it in the scenario, and recommend one."""
    from modelyard.value import value as run_value

    result = run_value(list(runs), scenario, output=output, budget_s=budget, iterations=iterations)
    cur = result["scenario"]["currency"]
    for r in result["candidates"]:
        click.echo(f"{r['name']:24s} accuracy {r['accuracy']:.4f}  p95 {r['p95_ms']:8.2f} ms  "
                   f"{r['cost_per_1000']:.3g} {cur}/1,000  net {r['monthly_net']:>12,.0f} {cur}/month"
                   f"{'' if r['meets_slo'] else '  (breaks the latency SLO)'}")
    click.echo(result["recommendation"])
    click.echo(f"report: {result['output']}/value.html")
