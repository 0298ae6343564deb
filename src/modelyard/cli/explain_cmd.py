"""`modelyard explain RUN INPUT...`: which pixels, tokens or columns moved RUN's predictions, and the methods and
the permutation importance behind them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from modelyard.errors import ConfigError

# Each method option as the CLI spells it, by the field of the method's params class it sets. An option is passed
# to the method only when given, so the method's own default holds otherwise, and one it does not take is named.
METHOD_OPTIONS = {"n_steps": "--steps", "internal_batch_size": "--internal-batch-size", "window": "--window",
                  "stride": "--stride", "max_tokens": "--max-tokens", "max_evals": "--max-evals",
                  "background": "--background"}

# What `Item.top` names, per kind of input, for the table's heading.
UNITS = {"image": "pixels (row, col)", "sequence": "positions", "text": "tokens", "tabular": "columns"}

MAX_ID_CHARS = 28
MAX_UNIT_CHARS = 16


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@click.option("--method", metavar="METHOD", help="An explanation method; default: the best for RUN's model "
                                                 "(`--methods` lists those that apply).")
@click.option("--target", metavar="LABEL", help="Explain this label for every input (default: each input's "
                                                "predicted label).")
@click.option("--output", type=click.Path(file_okay=False),
              help="Folder for index.html, the pictures and explanations.json (default: RUN/explanations/<UTC time>/).")
@click.option("--steps", "n_steps", type=click.IntRange(min=1), metavar="N",
              help="integrated-gradients: steps of the path integral (more: attributions that add up better, slower).")
@click.option("--internal-batch-size", "internal_batch_size", type=click.IntRange(min=1), metavar="N",
              help="integrated-gradients: inputs per forward pass inside the integral; bounds memory, not the result.")
@click.option("--window", type=click.IntRange(min=1), metavar="N",
              help="occlusion on images and sequences: side of the patch (pixels) or length of the window "
                   "(positions) replaced at a time.")
@click.option("--stride", type=click.IntRange(min=1), metavar="N",
              help="occlusion on images and sequences: step between patches (default: half the window).")
@click.option("--max-tokens", "max_tokens", type=click.IntRange(min=1), metavar="N",
              help="occlusion on text: tokens hidden one at a time, from the start (one forward pass each).")
@click.option("--max-evals", "max_evals", type=click.IntRange(min=1), metavar="N",
              help="kernel-shap, permutation-shap: model evaluations per row (cost grows with it).")
@click.option("--background", type=click.IntRange(min=1), metavar="N",
              help="kernel-shap, permutation-shap: training rows that stand for 'feature absent'.")
@click.option("--json", "as_json", is_flag=True, help="Print the explanations as JSON instead of the table.")
@click.option("--methods", "list_methods", is_flag=True, help="List the methods that apply to RUN's model, the "
                                                              "default first, and exit.")
@click.option("--importance", is_flag=True, help="Tables: each column's permutation importance on the test split "
                                                 "(also written to importance.csv).")
@click.option("--repeats", type=click.IntRange(min=1), metavar="N",
              help="--importance: shuffles per column (default 5).")
def explain(run: str, inputs: tuple[str, ...], method: str | None, target: str | None, output: str | None,
            as_json: bool, list_methods: bool, importance: bool, repeats: int | None, **options) -> None:
    """Explain RUN's predictions for INPUT: which pixels, tokens or table columns moved each one.

    INPUT is read as `modelyard predict` reads it (images or folders of them, a CSV, a .txt file of one text per
    line) or, for text models, is the text itself (unless it names an existing file). Prints a table (the strongest units per input and the
    method's quality figure) and writes index.html, to open in a browser, into --output.
    """
    given = {field: value for field, value in options.items() if value is not None}
    _check_combination(inputs, list_methods, importance, repeats, given, method, target)
    from modelyard.artifact import load

    predictor = load(run)
    if predictor.task != "classification":
        raise ConfigError(f"{run} holds a language model; explanations are for classifiers (images, sequences, "
                          "texts and tables)")
    from modelyard.explain.base import Subject

    subject = Subject(predictor)
    if list_methods:
        _print_methods(subject, as_json)
    elif importance:
        _print_importance(run, subject, output, repeats, as_json)
    else:
        _print_explanations(run, subject, list(inputs), method, target, given, output, as_json)


def _check_combination(inputs, list_methods, importance, repeats, given, method, target) -> None:
    """Options that cannot go together are answered before the model loads (seconds for a Transformer)."""
    if list_methods and importance:
        raise click.UsageError("--methods and --importance are two different questions: pass one of them")
    if repeats is not None and not importance:
        raise click.UsageError("--repeats counts the shuffles of --importance; pass --importance too")
    listing = "--methods" if list_methods else "--importance" if importance else None
    if listing:
        extra = ([f"INPUT {inputs[0]!r}"] if inputs else []) + [METHOD_OPTIONS[f] for f in given]
        extra += [name for name, value in (("--method", method), ("--target", target)) if value is not None]
        if extra:
            raise click.UsageError(f"{listing} takes no {', '.join(extra)}: those are for explaining inputs")
    elif not inputs:
        raise click.UsageError("give an INPUT to explain (an image, a folder of images, a CSV, a .txt file or, for "
                               "text models, the text itself), or --methods to list the methods, or --importance")


# ---------------------------------------------------------------- explaining inputs


def _print_explanations(run, subject, inputs, method, target, given, output, as_json) -> None:
    from modelyard.explain.base import check_method

    name, impl = check_method(subject, method)
    _check_options(name, impl.params, given)
    explanation = subject.predictor.explain(inputs, method=name, target=target, **given)
    index = explanation.save(Path(output) if output else default_folder(run))
    if as_json:
        click.echo(json.dumps(explanation.to_json(), indent=1))
    else:
        click.echo(explanation_table(explanation))
    for note in explanation.notes:
        click.echo(f"warning: {note}", err=True)
    click.echo(f"page: {index}", err=as_json)


def _check_options(method: str, params, given: dict) -> None:
    """The method options given, checked against the method's params class and named as the CLI spells them
    (base.check_params names the fields, for Python callers)."""
    from pydantic import ValidationError

    from modelyard.config import one_line_problem

    takes = ", ".join(METHOD_OPTIONS[f] for f in params.model_fields if f in METHOD_OPTIONS) or "no options"
    refused = [METHOD_OPTIONS[f] for f in given if f not in params.model_fields]
    if refused:
        raise ConfigError(f"{method} does not take {', '.join(refused)} (it takes {takes})")
    try:
        params.model_validate(given)
    except ValidationError as exc:
        problem = one_line_problem(exc, given, params, hints=False)
        field = problem.split(":", 1)[0]
        if field in METHOD_OPTIONS:
            problem = METHOD_OPTIONS[field] + problem[len(field):]
        raise ConfigError(f"{method}: {problem}") from None


def default_folder(run: str) -> Path:
    """RUN/explanations/<UTC time>/: the run owns what is derived from its model (as evaluations/ does), and a
    timestamp per call keeps earlier explanations. A bare model folder gets ./explanations/<UTC time>/ instead,
    so nothing is added to the folder a server or a registry reads."""
    from modelyard.runs import utc_stamp

    base = Path(run) if (Path(run) / "config.yaml").is_file() else Path(".")
    stamp = utc_stamp()
    folder, n = base / "explanations" / stamp, 1
    while folder.exists():  # two explanations in the same second keep both
        n += 1
        folder = folder.with_name(f"{stamp}-{n}")
    return folder


def explanation_table(explanation, top: int = 3) -> str:
    """One line per input: its id, prediction, target and the target's probability, the `top` strongest units
    with their attributions, and Integrated Gradients' completeness gap where the method has one."""
    from modelyard.explain.base import RELATIVE_DELTA_WARNING, unconverged

    quality = any("relative_delta" in it.quality for it in explanation)
    header = ["id", "predicted", "target", "p(target)", f"top {top} {UNITS.get(explanation.kind, 'units')}"]
    header += ["delta"] if quality else []
    rows = []
    for it in explanation:
        units = ", ".join(f"{_clip(u, MAX_UNIT_CHARS)} {v:+.3g}" for u, v in it.top(top))
        row = [_clip(it.id, MAX_ID_CHARS), it.predicted, it.target, f"{it.probability:.3f}", units]
        if quality:
            delta = it.quality.get("relative_delta")
            row.append("" if delta is None else f"{delta:.1%}" + (" !" if unconverged(it) else ""))
        rows.append(row)
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    settings = ", ".join(f"{k} {v}" for k, v in explanation.settings.items() if k != "baseline")
    baseline = explanation.settings.get("baseline")
    lines.insert(0, f"{explanation.method}" + (f" ({settings})" if settings else "")
                 + (f"; baseline: {baseline}" if baseline else ""))
    if quality:
        lines.append("delta: how far the attributions' sum is from f(x) - f(baseline), as a share of it; ! marks "
                     f"an unreliable one (over {RELATIVE_DELTA_WARNING:.0%} of it and of the attributions' own "
                     "sum of absolute values): raise --steps")
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())  # a token or id with a newline would break the row
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------- --methods and --importance


def _print_methods(subject, as_json: bool) -> None:
    from modelyard.explain.base import EXPLAINERS, check_method, methods_for, why_not

    default, _ = check_method(subject, None)
    fits = sorted(methods_for(subject), key=lambda name: (name != default, name))
    rows = [{"name": name, "default": name == default,
             "summary": EXPLAINERS.get(name).obj.impls[subject.kind].summary} for name in fits]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"methods for {subject.model_name} ({subject.family} model, {subject.kind} inputs):")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"  {r['name'].ljust(width)}  {'default' if r['default'] else '       '}  {r['summary']}")
    others = [(e.name, why_not(e.obj, subject)) for e in EXPLAINERS if e.name not in fits]
    for name, reason in others:
        click.echo(f"  not {name}: {reason}")


def _print_importance(run, subject, output, repeats, as_json) -> None:
    if subject.kind != "tabular":
        raise ConfigError(f"--importance ranks a table's columns, and {subject.model_name} reads {subject.kind} "
                          f"inputs; explain inputs instead: `modelyard explain {run} INPUT`")
    from modelyard.cli.run_cmds import write_output
    from modelyard.explain.table import permutation_importance

    frame = permutation_importance(subject.predictor, split="test", n_repeats=repeats or 5, seed=0)
    path = (Path(output) if output else default_folder(run)) / "importance.csv"
    write_output(path, lambda tmp: frame.to_csv(tmp, index=False))
    if as_json:
        click.echo(json.dumps(frame.to_dict(orient="records"), indent=1, default=str))
    else:
        facts = frame.attrs
        click.echo(f"permutation importance: the drop in test accuracy when a column is shuffled among the "
                   f"{facts.get('rows', '?')} test rows ({facts.get('n_repeats', '?')} shuffles each, seed 0)")
        click.echo(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    click.echo(f"importance written to {path}", err=True)
