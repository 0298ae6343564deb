"""`modelyard report RUN`: write a run's report.html anew from its run directory."""

from __future__ import annotations

import click


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
def report(run: str) -> None:
    """Write RUN/report.html and RUN/plots/ anew from RUN's metrics.json, history.jsonl and predictions/test.csv
    (a trained run, a derived one from `modelyard compress`, or a language model). Prints the report's path."""
    from modelyard.report.html import render_run

    rendered = render_run(run)
    if rendered.missing:
        click.echo(f"note: {rendered.missing}", err=True)
    click.echo(str(rendered.report))
