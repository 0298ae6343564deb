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
    click.echo(ranked_table(result))
    click.echo()
    click.echo(result["recommendation"])
    from modelyard.value.report import one_off_note

    if one_off_note(result):
        click.echo(one_off_note(result))
    click.echo(f"report: {result['output']}/value.html")


COLUMNS = (("rank", "rank"), ("candidate", "candidate"), ("made_from", "made from"),
           ("net_per_month", "net/month"), ("interval", "95% CI"), ("net_over_horizon", "net/{months} months"),
           ("cost_per_1000", "cost/1,000"), ("p95_ms", "p95 ms"), ("accuracy", "accuracy"), ("note", ""))
LEFT = ("candidate", "made_from", "note")


def ranked_table(result: dict) -> str:
    """Every candidate and doing nothing, best first, in aligned columns; amounts in the scenario's currency."""
    from modelyard.value.report import ranking_rows

    rows = ranking_rows(result)
    keys = [k for k, _ in COLUMNS if k in ("rank", "candidate") or any(r[k] for r in rows)]
    titles = {k: t.format(months=result["scenario"]["horizon_months"]) for k, t in COLUMNS}
    width = {k: max(len(titles[k]), *(len(r[k]) for r in rows)) for k in keys}

    def line(cells: dict) -> str:
        return "  ".join(cells[k].ljust(width[k]) if k in LEFT else cells[k].rjust(width[k]) for k in keys).rstrip()

    return "\n".join([f"amounts in {result['scenario']['currency']}", line(titles), *map(line, rows)])
