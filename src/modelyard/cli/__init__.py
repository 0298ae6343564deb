"""The `modelyard` command. Each command group lives in its own module; heavy imports happen inside commands."""

from __future__ import annotations

import os
import sys
import traceback

import click

from modelyard.cli.audit_cmd import audit
from modelyard.cli.compress_cmd import compress
from modelyard.cli.config_cmd import config
from modelyard.cli.explain_cmd import explain
from modelyard.cli.reference_cmd import reference_demo
from modelyard.cli.run_cmds import evaluate, generate, predict, train
from modelyard.cli.runs_cmd import runs
from modelyard.cli.registry_cmds import keys, models
from modelyard.cli.report_cmd import report
from modelyard.cli.serve_cmd import serve
from modelyard.cli.value_cmd import value
from modelyard.errors import ModelyardError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="On an error, show the full traceback (also: MODELYARD_DEBUG=1).")
@click.version_option(package_name="modelyard")
def cli(debug: bool) -> None:
    """Train, evaluate and report deep-learning models, offline and reproducibly."""
    _state["debug"] = debug or _state["debug"]


_state = {"debug": False}


cli.add_command(train)
cli.add_command(evaluate)
cli.add_command(predict)
cli.add_command(generate)
cli.add_command(compress)
cli.add_command(explain)
cli.add_command(report)
cli.add_command(value)
cli.add_command(runs)
cli.add_command(models)
cli.add_command(keys)
cli.add_command(serve)
cli.add_command(config)
cli.add_command(reference_demo)
cli.add_command(audit)


def main(argv: list[str] | None = None) -> None:
    """Entry point. An error the user can fix is one message, what/where/how, and exit status 2 (no traceback
    unless --debug); anything else is a one-line internal error, exit status 1."""
    _state["debug"] = os.environ.get("MODELYARD_DEBUG", "") not in ("", "0")
    try:
        cli.main(args=argv, prog_name="modelyard", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
        sys.exit(2)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "modelyard"
        _fail(exc, f"{exc.format_message()} (see `{command} --help`)", 2)
    except click.exceptions.Abort as exc:  # click turns a KeyboardInterrupt into Abort: say what it said
        if isinstance(exc.__cause__, KeyboardInterrupt):
            _interrupted(exc.__cause__)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _fail(exc, exc.format_message(), exc.exit_code)
    except ModelyardError as exc:
        _fail(exc, str(exc), 2)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    except Exception as exc:  # a bug, not the user's doing
        first = (str(exc).strip().splitlines() or [""])[0]
        _fail(exc, f"internal error: {type(exc).__name__}: {first}. Rerun with --debug for the traceback and "
              "report it", 1)


def _interrupted(exc: KeyboardInterrupt) -> None:
    """Ctrl-C or SIGTERM: one line, with what `train` said about its checkpoint when it said anything."""
    click.echo(f"interrupted: {exc}" if str(exc) else "interrupted", err=True)
    sys.exit(130)


def _fail(exc: BaseException, message: str, status: int) -> None:
    if _state["debug"]:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"error: {message}", err=True)
    sys.exit(status)
