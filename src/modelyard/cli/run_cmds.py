"""`modelyard train`, `evaluate` and `predict`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from modelyard.errors import ConfigError


@click.command()
@click.argument("config_file", required=False, type=click.Path(dir_okay=False), metavar="CONFIG")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.lr=0.01.")
@click.option("--output", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Folder under which the run directory is created.")
@click.option("--resume", type=click.Path(file_okay=False), metavar="RUN", help="Continue a stopped run from its last checkpoint.")
def train(config_file: str | None, overrides: tuple[str, ...], output: str, resume: str | None) -> None:
    """Train, evaluate and report the experiment in CONFIG. Prints the run directory last."""
    from modelyard.config import load_config

    if not config_file and not resume:
        raise ConfigError("give a CONFIG file to train, or --resume RUN to continue a run (see examples/)")
    if config_file and resume:
        raise ConfigError("give either CONFIG or --resume RUN, not both: a resumed run keeps its saved config")
    # The config is validated before torch and the data libraries load, so a typo answers in a fraction of a second.
    cfg = load_config(config_file, overrides) if config_file else None
    if resume:  # a resumed run's own config.yaml, damaged or edited, is named with its line the same way
        from modelyard.runs import RunDir

        load_config(RunDir.open(resume).config_path, overrides)
    from modelyard.pipeline import train as run_training

    run = run_training(cfg, output=output, overrides=overrides if resume else (), resume=resume)
    if run.metrics and "test" in run.metrics:  # only the main process reports
        h = run.metrics["test"]["headline"]
        method = f", {h['interval']}" if h.get("interval") else ""
        ci = f" (95% CI {h['low']:.4f}-{h['high']:.4f}{method})" if h["low"] is not None else ""
        click.echo(f"test {h['metric']}: {h['value']:.4f}{ci}")
    elif run.metrics:  # a language model
        v = run.metrics["val"]
        click.echo(f"val perplexity: {v['perplexity']:.2f} (unigram baseline: {v['unigram_perplexity']:.2f})")
    if run.metrics:
        click.echo(f"report: {run.report_path}")
        click.echo(str(run.path))


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", "source", metavar="SOURCE", help="Score every example of this data.source instead, e.g. csv:new.csv.")
@click.option("--output", type=click.Path(dir_okay=False), help="Where to write the metrics JSON "
              "(default: RUN/evaluations/<source or split>-<time>.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the full metrics JSON instead of the table, for scripts.")
def evaluate(run: str, source: str | None, output: str | None, as_json: bool) -> None:
    """Evaluate the saved model of RUN on its test split, or on another dataset with --data."""
    from modelyard.evaluation import evaluate as run_evaluation
    from modelyard.runs import utc_stamp

    report = run_evaluation(run, data=source)
    text = json.dumps(report, indent=2)
    if output is None:
        slug = "".join(c if c.isalnum() else "-" for c in (source or report["split"]))[-60:].strip("-")
        stamp = utc_stamp()
        path, n = Path(run) / "evaluations" / f"{slug}-{stamp}.json", 1
        while path.exists():  # two evaluations in the same second keep both, as run directories do
            n += 1
            path = path.with_name(f"{slug}-{stamp}-{n}.json")
        output = str(path)
    write_output(Path(output), lambda path: path.write_text(text + "\n"))
    click.echo(text if as_json else metrics_table(report))
    click.echo(f"metrics written to {output}", err=True)


# The scalar metrics a person reads first; the JSON has everything (per class, confusion matrix, ...).
TABLE_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc_ovr_macro",
                 "pr_auc_macro", "log_loss", "ece", "perplexity", "loss")


def metrics_table(report: dict) -> str:
    """`evaluate`'s table: metric, value, and the headline's interval with the method that gave it."""
    h = report.get("headline") or {}
    lines = [f"{report.get('source', '')} ({report.get('split', '')}, n={report.get('n', report.get('documents', '?'))})",
             f"{'metric':20s} {'value':>8s}  interval"]
    for name in TABLE_METRICS:
        value = report.get(name)
        if not isinstance(value, (int, float)) or value is None:
            continue
        interval = ""
        if h.get("metric") == name and h.get("low") is not None:
            method = h.get("interval", "bootstrap")
            interval = f"{h['low']:.4f}-{h['high']:.4f} ({h.get('level', 0.95):.0%}, {method})"
        lines.append(f"{name:20s} {value:8.4f}  {interval}")
    return "\n".join(lines)


def write_output(path: Path, write) -> None:
    """Write an --output file through a temporary sibling, so a failed write leaves no half file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; pass an --output path in a folder you can "
                          "write to") from None


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("inputs", type=click.Path(), metavar="INPUT")
@click.option("--output", type=click.Path(dir_okay=False), help="CSV to write (default: print to stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records with full-precision probabilities.")
def predict(run: str, inputs: str, output: str | None, as_json: bool) -> None:
    """Predict INPUT (a folder of images, an image, a CSV, or a .txt file of one text per line) with RUN's model."""
    from modelyard.artifact import load

    if as_json and output:
        raise click.UsageError("--json prints the predictions and --output writes them as CSV: pass one of them")
    model = load(run)
    if model.task == "lm":
        raise ConfigError(f"{run} holds a language model, which predicts no labels; use `modelyard generate {run} "
                          "--prompt TEXT`")
    frame = model.predict_frame(inputs)
    if as_json:
        # json, not DataFrame.to_json: that rounds to 10 decimals, which turns a probability of 3e-11 into 0
        click.echo(json.dumps(frame.to_dict(orient="records"), indent=2, default=str))
        return
    if output:
        write_output(Path(output), lambda path: frame.to_csv(path, index=False))
        click.echo(f"{len(frame)} predictions written to {output}", err=True)
    else:
        click.echo(frame.to_csv(index=False, float_format="%.4f"), nl=False)  # a person reads 4 digits


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--prompt", required=True, help="Text to continue; an empty prompt starts a new document.")
@click.option("--max-new-tokens", default=50, show_default=True, type=int, help="0: print the prompt only.")
@click.option("--temperature", default=0.8, show_default=True, type=float,
              help="0: always the most likely token; higher: more varied.")
@click.option("--top-k", default=50, show_default=True, type=int,
              help="Sample from the k most likely tokens only (0: all).")
@click.option("--seed", type=int, help="Seed for sampling, 0 to 2**64-1; the same seed gives the same text.")
def generate(run: str, prompt: str, max_new_tokens: int, temperature: float, top_k: int, seed: int | None) -> None:
    """Continue PROMPT with the language model of RUN, printing tokens as they are sampled."""
    from modelyard.generation import check_prompt, check_sampling

    # Before loading the model (seconds): a bad argument is answered at once.
    check_prompt(prompt)
    check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
    from modelyard.artifact import load

    model = load(run)
    if model.task != "lm":
        raise ConfigError(f"{run} holds a classifier, which does not generate text; use `modelyard predict {run} "
                          "INPUT`, or train a gpt or causal hf model on a text:PATH corpus")
    pieces = model.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
    click.echo(prompt, nl=False)
    for piece in pieces:
        click.echo(piece, nl=False)
    click.echo()
