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
@click.option("--all", "show_all", is_flag=True, help="Also show the keys that do not apply to this model, data and "
              "optimiser.")
def show(file: str, overrides: tuple[str, ...], show_all: bool) -> None:
    """Print FILE fully resolved: overrides applied, every default that applies filled in."""
    import yaml

    from modelyard.config import config_to_yaml, load_config

    cfg = load_config(file, overrides)
    if show_all:
        click.echo(config_to_yaml(cfg), nl=False)
    else:
        click.echo(yaml.safe_dump(applicable(cfg), sort_keys=False), nl=False)


def applicable(cfg) -> dict:
    """The resolved config without the keys this experiment never reads (momentum under AdamW, the image section
    for a CSV, a step schedule's gamma under one-cycle, ...): what `config show` prints."""
    from modelyard.data import source_entry
    from modelyard.models import MODELS

    out = cfg.model_dump(mode="json")
    data, train = out["data"], out["train"]
    kinds = set(source_entry(cfg.data.source)[0].meta["kinds"])
    if "csv" != cfg.data.source.partition(":")[0]:
        for key in ("target", "text", "features", "categorical", "split_column", "nan_policy"):
            data.pop(key, None)
    elif cfg.data.text:
        kinds = {"text"}
        for key in ("features", "categorical"):
            data.pop(key, None)
    else:
        kinds = {"tabular"}
        data.pop("text", None)
    if "image" not in kinds:
        data.pop("image", None)
    if not kinds & {"text", "corpus"}:
        data.pop("tokenizer", None)
    if "corpus" not in kinds:
        data.pop("block_size", None)
    if cfg.train.optimizer != "sgd":
        train.pop("momentum", None)
    if cfg.train.schedule != "step":
        train.pop("step_size", None)
        train.pop("gamma", None)
    if cfg.train.schedule == "onecycle" and not cfg.train.warmup_epochs:
        train.pop("warmup_epochs", None)  # one-cycle has its own rise
    if not cfg.train.early_stopping.patience:
        train["early_stopping"].pop("min_delta", None)
    if not out["model"].get("pretrained"):  # freezing applies to pre-trained weights only
        out["model"].pop("pretrained", None)
        out["model"].pop("freeze_backbone", None)
    if MODELS.get(cfg.model.name).meta.get("tokenizer") and "tokenizer" in data:  # the pre-trained model's own
        data["tokenizer"] = {"max_length": data["tokenizer"]["max_length"]}
    if out["model"].get("finetune") not in (None, "lora"):
        out["model"].pop("lora", None)
    if MODELS.get(cfg.model.name).meta.get("estimator"):  # fitted in one call, with its own vectoriser
        out.pop("train")
        data.pop("tokenizer", None)
    return out
