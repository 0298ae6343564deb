"""`modelyard config schema|show`."""

from __future__ import annotations

import json

import click


@click.group()
def config() -> None:
    """Inspect experiment configs."""


@config.command()
def schema() -> None:
    """Print the JSON schema of the experiment YAML."""
    from modelyard.config import ExperimentConfig

    click.echo(json.dumps(ExperimentConfig.model_json_schema(), indent=2))


@config.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key, e.g. train.lr=0.01.")
def show(file: str, overrides: tuple[str, ...]) -> None:
    """Print FILE fully resolved: overrides applied, every default filled in."""
    from modelyard.config import config_to_yaml, load_config

    click.echo(config_to_yaml(load_config(file, overrides)), nl=False)
