"""`modelyard audit privacy RUN`: how much a run's model gives away about which examples it was trained on."""

from __future__ import annotations

import click


@click.group()
def audit() -> None:
    """Audit a trained run."""


@audit.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--n", "n", type=click.IntRange(min=1), metavar="N",
              help="Training members and held-out non-members to score, each (default: as many as both splits "
                   "allow, at most 1,000).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Draws the audited examples.")
@click.option("--reference-models", "reference_models", type=click.IntRange(min=0), default=2, show_default=True,
              metavar="K", help="Reference models for the calibrated attacks, trained with RUN's config on every "
                                "example but the audited ones (0: the loss-threshold attack only).")
@click.option("--reference-epochs", "reference_epochs", type=click.IntRange(min=1), metavar="N",
              help="Train the reference models N epochs (default: RUN's train.epochs).")
@click.option("--work", type=click.Path(file_okay=False),
              help="Folder for the reference models (default: RUN/audit/reference/); ones found complete are reused.")
@click.option("--json", "as_json", is_flag=True, help="Print privacy.json instead of the table.")
def privacy(run: str, n: int | None, seed: int, reference_models: int, reference_epochs: int | None,
            work: str | None, as_json: bool) -> None:
    """Membership inference on RUN: can an attacker tell its training examples from held-out ones by their loss?

    Prints each attack's ROC-AUC (0.5: no better than chance) and its true-positive rate at 1% false positives,
    and writes RUN/audit/privacy.json. The loss-threshold attack uses each example's loss alone (Yeom et al.,
    2018); the calibrated ones subtract its mean loss, or mean logit-scaled confidence (LiRA's statistic, Carlini
    et al., 2022), under K reference models that never saw it (Watson et al., 2022).
    """
    import json

    from modelyard.privacy.audit import audit_privacy, format_table

    report = audit_privacy(run, n=n, seed=seed, reference_models=reference_models,
                           reference_epochs=reference_epochs, work=work,
                           log=lambda line: click.echo(line, err=True))
    click.echo(json.dumps(report, indent=1) if as_json else format_table(report))
    from modelyard.errors import ModelyardError
    from modelyard.report.html import render_run

    try:  # the figures belong in the run's report too; the audit itself is done and written whatever happens here
        click.echo(f"report: {render_run(run).report}", err=True)
    except ModelyardError as exc:
        click.echo(f"warning: the report was not redrawn ({exc}); `modelyard report {run}` adds the audit to it",
                   err=True)
