"""The `modelyard` command. Each command group lives in its own module; heavy imports happen inside commands."""

from __future__ import annotations

import sys

import click

from modelyard.cli.config_cmd import config
from modelyard.cli.reference_cmd import reference_demo
from modelyard.cli.run_cmds import evaluate, generate, predict, train
from modelyard.cli.runs_cmd import runs
from modelyard.cli.registry_cmds import keys, models
from modelyard.cli.serve_cmd import serve
from modelyard.cli.value_cmd import value
from modelyard.errors import ModelyardError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="modelyard")
def cli() -> None:
    """Train, evaluate and report deep-learning models, offline and reproducibly."""


cli.add_command(train)
cli.add_command(evaluate)
cli.add_command(predict)
cli.add_command(generate)
cli.add_command(value)
cli.add_command(runs)
cli.add_command(models)
cli.add_command(keys)
cli.add_command(serve)
cli.add_command(config)
cli.add_command(reference_demo)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one clear message (no traceback) and exit with status 2."""
    try:
        cli.main(args=argv, prog_name="modelyard", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ModelyardError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted; checkpoints are kept, continue with `modelyard train --resume RUN`", err=True)
        sys.exit(130)
