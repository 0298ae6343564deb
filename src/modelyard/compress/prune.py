"""Pruning. Structured (the default): whole hidden neurons, conv channels or a Transformer's FFN neurons go, so
the model really is smaller and faster; then a short recovery fine-tune through the normal trainer.
Unstructured: single weights of least magnitude are zeroed (torch.nn.utils.prune), which makes the model
neither faster on dense kernels nor smaller on disk.

Structured is the default because it is the one that buys speed: on a CPU's dense kernels a zero costs as much
as any other weight.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, model_validator

from modelyard.compress.base import Compressed, MethodParams, refuse_split_changes, register_compressor
from modelyard.errors import ConfigError
from modelyard.runs import RunDir
from modelyard.training.callbacks import Callback

RECOVERY_LR_FACTOR = 0.1  # the recovery starts near a trained optimum: a tenth of the lr adjusts, not retrains
START_DIR = "pruned-start"  # in the recovery run: the pruned weights it started from (a resume rebuilds from them)


class PruneParams(MethodParams):
    amount: float = Field(0.5, gt=0, lt=1, description="Fraction of the weights, or of each layer's neurons, "
                          "channels or FFN neurons, to remove.")
    structured: bool = Field(True, description="Remove whole neurons/channels (smaller and faster) rather than "
                             "single weights (zeros that dense kernels still multiply).")
    recover_epochs: int | None = Field(None, ge=0, le=1000, description="Epochs of fine-tuning after pruning; "
                                       "default 1 when structured, 0 when unstructured.")
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE changes to the recovery's training "
                                 "config, e.g. train.lr=1e-4.")

    @model_validator(mode="after")
    def _recovery_default(self):
        if self.recover_epochs is None:
            self.recover_epochs = 1 if self.structured else 0
        return self


@dataclass
class Pruned:
    """A pruned copy of the parent's model, before any recovery."""

    adapter: object  # adapters.Adapter
    model_spec: dict  # the model section that builds it (smaller sizes when structured)
    notes: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)  # unstructured: parameter name -> 0/1 mask the recovery keeps


@register_compressor("prune", params=PruneParams, applies_to=("torch", "hf"),
                     summary="structured: remove whole neurons, channels or FFN neurons by L1 norm, then fine-tune "
                             "(smaller and faster); --unstructured: zero single weights (neither, on dense kernels)")
def prune(parent, params: PruneParams, *, output: Path, quiet: bool = True) -> Compressed | RunDir:
    refuse_split_changes("prune", params.overrides, allowed="train.* or evaluate.*")  # model.*: the cut's sizes
    if params.overrides and params.recover_epochs == 0:
        raise ConfigError(f"compress --method prune --set {' '.join(params.overrides)}: --set changes the recovery "
                          "fine-tune, and there is none (--recover-epochs 0, the default with --unstructured); pass "
                          "--recover-epochs N or drop --set")
    pruned = prune_structured(parent, params.amount) if params.structured else prune_unstructured(parent, params.amount)
    if params.recover_epochs == 0:
        meta = {} if pruned.model_spec == parent.predictor.meta["model"] else {"model": pruned.model_spec}
        notes = pruned.notes + ["no recovery fine-tune (--recover-epochs 0): accuracy is the pruned model's as cut"]
        return Compressed(pruned.adapter, meta=meta, notes=notes, facts={**pruned.facts, "recover_epochs": 0})
    return recover(parent, params, pruned, output=output, quiet=quiet)


# ---------------------------------------------------------------- unstructured: zeros inside the weights


def prune_unstructured(parent, amount: float) -> Pruned:
    """Each Linear and Conv weight loses the `amount` of its entries of least magnitude (L1)."""
    import torch.nn.utils.prune as torch_prune
    from torch import nn

    module = copy.deepcopy(parent.adapter.module).eval()
    layers = {name: m for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
    for m in layers.values():
        torch_prune.l1_unstructured(m, "weight", amount=amount)
        torch_prune.remove(m, "weight")  # the mask folded into a plain weight tensor: saved like any model
    masks = {f"{name}.weight": (m.weight != 0).to(m.weight.dtype) for name, m in layers.items()}
    notes = [f"{amount:.0%} of each Linear/Conv weight set to zero by magnitude (L1, unstructured): dense CPU kernels "
             "multiply zeros as fast as any number, so expect no speed-up (the speed below is measured anyway), and "
             "model.safetensors is as large as the parent's: it stores the zeros (only a compressed archive of it is smaller)"]
    adapter = type(parent.adapter)(module, parent.predictor.meta)
    facts = {"structured": False, **sparsity_facts(module, masks)}
    return Pruned(adapter, dict(parent.predictor.meta["model"]), notes, facts, masks)


def sparsity_facts(module, masks: dict) -> dict:
    """Zeros among the pruned weights (`sparsity`) and among all parameters, counted in the weights themselves."""
    params = dict(module.named_parameters())
    pruned = [params[name] for name in masks]
    zeros, total = sum(int((p == 0).sum()) for p in pruned), sum(p.numel() for p in pruned)
    zeros_all = sum(int((p == 0).sum()) for p in params.values())
    return {"sparsity": zeros / total, "pruned_weights": total, "zero_weights": zeros,
            "sparsity_all_parameters": zeros_all / sum(p.numel() for p in params.values())}


# ---------------------------------------------------------------- structured: fewer neurons and channels


def kept_count(width: int, amount: float, what: str, run) -> int:
    """Units left of `width` after removing `amount` of them, rounded as torch.nn.utils.prune rounds; at least one
    must stay."""
    keep = width - round(amount * width)
    if keep < 1:
        raise ConfigError(f"prune --amount {amount} would remove all {width} units of {what} in {run}; use an amount "
                          f"under {(width - 0.5) / width:.3f}")
    return keep


def prune_structured(parent, amount: float) -> Pruned:
    return prune_ffn(parent, amount) if parent.family == "hf" else prune_widths(parent, amount)


def _hidden(spec: dict) -> list[tuple[str, int]]:
    return [("hidden_sizes", i) for i in range(len(spec.get("hidden_sizes", [])))]


# The config field whose width each Linear/Conv makes, in forward order; the last Linear (the head) makes classes.
WIDTH_FIELDS = {
    "mlp": _hidden,
    "lenet5": lambda spec: [("channels", 0), ("channels", 1)] + _hidden(spec),
    # each cifar-cnn block has two convs of its width: both lose the same count, each its own weakest channels
    "cifar-cnn": lambda spec: [("channels", i) for i in range(len(spec["channels"])) for _ in (0, 1)] + _hidden(spec),
    "mnist1d-cnn": lambda spec: [("channels", i) for i in range(len(spec["channels"]))],
}
POOLED_SIDE_BY_SIDE = {"mnist1d-cnn"}  # its head reads [mean over time, max over time] of the last channels


@dataclass
class Width:
    """One prunable width: the units (neurons, channels) that layer `producer` outputs, the BatchNorm over them
    if any, and the layer that reads them."""

    config_key: tuple[str, int]  # where the model config holds it: ("hidden_sizes", 0)
    producer: str
    norm: str | None
    consumer: str


def model_widths(module, name: str, spec: dict) -> list[Width]:
    from torch import nn

    layers: list[list] = []  # [name, norm name or None], in forward order (the order the modules are defined)
    for path, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            layers.append([path, None])
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and layers:
            layers[-1][1] = path
    fields = WIDTH_FIELDS[name](spec)
    if len(layers) != len(fields) + 1:
        raise RuntimeError(f"prune: {name} has {len(layers)} Linear/Conv layers, but its config names "
                           f"{len(fields)} widths and a head; WIDTH_FIELDS no longer matches models/{name}")
    return [Width(f, p, norm, consumer) for f, (p, norm), (consumer, _) in zip(fields, layers, layers[1:])]


def prune_widths(parent, amount: float) -> Pruned:
    """Hidden neurons and conv channels of the smallest L1 norm go (|gamma| where a BatchNorm follows: it rescales
    each channel, so the filter's own norm says little); the model is rebuilt at the smaller sizes."""
    from modelyard.models import MODELS, create_model

    meta = parent.predictor.meta
    spec = copy.deepcopy(meta["model"])  # modelyard.json's, not config.yaml's: the parent may itself be pruned
    name = spec["name"]
    if name not in WIDTH_FIELDS:
        raise ConfigError(f"structured prune knows {', '.join(sorted(WIDTH_FIELDS))} and hf models; "
                          f"{parent.run.path} is a {name}. Use --unstructured")
    module = parent.adapter.module
    widths = model_widths(module, name, spec)
    if not widths:
        raise ConfigError(f"{parent.run.path}'s {name} has no hidden layer or channel to remove (only its head); "
                          "use --unstructured")
    counts = {(key, i): kept_count(spec[key][i], amount, f"model.{key}[{i}]", parent.run.path)
              for key, i in (w.config_key for w in widths)}
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    for w in widths:
        cut_units(state, w, unit_scores(state, w).topk(counts[w.config_key]).indices.sort().values,
                  side_by_side=name in POOLED_SIDE_BY_SIDE)
    new_spec = {**copy.deepcopy(spec), "pretrained": None, "freeze_backbone": False}
    for (key, i), n in counts.items():
        new_spec[key][i] = n
    cfg = MODELS.get(name).config.model_validate(new_spec)
    model = create_model(cfg, input_shape=tuple(meta["input_shape"]), num_classes=len(meta["labels"]),
                         **meta["model_inputs"])
    model.load_state_dict(state)  # strict: every tensor must have the shape the smaller config builds
    model.to(dtype=next(module.parameters()).dtype).eval()
    before, after = sum(p.numel() for p in module.parameters()), sum(p.numel() for p in model.parameters())
    changed = {key: {"parent": spec[key], "this": new_spec[key]} for key, _ in counts}
    notes = ["whole units by L1 norm: " + ", ".join(f"{k} {v['parent']} -> {v['this']}" for k, v in changed.items())
             + f"; parameters {before:,} -> {after:,}"]
    facts = {"structured": True, "sizes": changed, "parameters_removed_fraction": 1 - after / before}
    return Pruned(type(parent.adapter)(model, meta), cfg.model_dump(mode="json"), notes, facts)


def unit_scores(state: dict, w: Width):
    if w.norm is not None:
        return state[f"{w.norm}.weight"].abs().float()
    return state[f"{w.producer}.weight"].flatten(1).abs().sum(dim=1).float()


def cut_units(state: dict, w: Width, keep, *, side_by_side: bool) -> None:
    """Keep units `keep` of `w` in the state dict: rows of the producer (and its BatchNorm), and the consumer's
    input columns that read them."""
    import torch

    units = state[f"{w.producer}.weight"].shape[0]
    for key in (f"{w.producer}.weight", f"{w.producer}.bias") + tuple(
            f"{w.norm}.{k}" for k in ("weight", "bias", "running_mean", "running_var") if w.norm):
        if key in state:
            state[key] = state[key].index_select(0, keep)
    consumed = state[f"{w.consumer}.weight"]
    per_unit = consumed.shape[1] // units  # >1: a flattened feature map (H*W per channel), or pooled copies
    if side_by_side:  # [unit 0..C-1 pooled one way, then the other way]
        columns = torch.cat([keep + r * units for r in range(per_unit)])
    else:  # channel-major flattening: unit k owns columns k*per_unit .. (k+1)*per_unit - 1
        columns = (keep[:, None] * per_unit + torch.arange(per_unit)[None, :]).flatten()
    state[f"{w.consumer}.weight"] = consumed.index_select(1, columns)


def prune_ffn(parent, amount: float) -> Pruned:
    """Each encoder layer keeps the same number of FFN neurons (BERT's config has one intermediate_size), chosen
    per layer by the L1 norm of their input weights (rows of intermediate.dense, columns of output.dense)."""
    import torch

    wrapper = copy.deepcopy(parent.adapter.module).eval()
    conf = wrapper.hf.config
    layers = list(getattr(getattr(wrapper.hf.base_model, "encoder", None), "layer", None) or [])
    if not layers or not hasattr(conf, "intermediate_size") or not all(
            hasattr(getattr(layer, "intermediate", None), "dense") and hasattr(getattr(layer, "output", None), "dense")
            for layer in layers):
        raise ConfigError(f"structured prune knows BERT-style encoders (config.intermediate_size, each layer's "
                          f"intermediate.dense and output.dense); {parent.run.path}'s model is "
                          f"{type(wrapper.hf).__name__}. Use --unstructured")
    width = conf.intermediate_size
    keep_n = kept_count(width, amount, "the FFN (intermediate_size)", parent.run.path)
    before = sum(p.numel() for p in wrapper.parameters())
    with torch.no_grad():
        for layer in layers:
            keep = layer.intermediate.dense.weight.abs().sum(dim=1).topk(keep_n).indices.sort().values
            layer.intermediate.dense = linear_subset(layer.intermediate.dense, keep, dim=0)
            layer.output.dense = linear_subset(layer.output.dense, keep, dim=1)
    conf.intermediate_size = keep_n  # save_pretrained then writes a plain HF model of the smaller size
    after = sum(p.numel() for p in wrapper.parameters())
    notes = [f"FFN neurons by L1 norm: intermediate_size {width} -> {keep_n} in each of {len(layers)} layers; "
             f"parameters {before:,} -> {after:,} (embeddings and attention unchanged)"]
    facts = {"structured": True, "sizes": {"intermediate_size": {"parent": width, "this": keep_n}},
             "parameters_removed_fraction": 1 - after / before}
    return Pruned(type(parent.adapter)(wrapper, parent.predictor.meta), dict(parent.predictor.meta["model"]),
                  notes, facts)


def linear_subset(layer, index, *, dim: int):
    """A new Linear holding the output rows (dim 0) or input columns (dim 1) `index` of `layer`."""
    from torch import nn

    weight = layer.weight.index_select(dim, index)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None, dtype=weight.dtype,
                    device=weight.device)
    new.weight.copy_(weight)
    if layer.bias is not None:
        new.bias.copy_(layer.bias if dim == 1 else layer.bias.index_select(0, index))
    return new


# ---------------------------------------------------------------- recovery through the normal trainer


def recover(parent, params: PruneParams, pruned: Pruned, *, output: Path, quiet: bool) -> RunDir:
    """Fine-tune the pruned model for `recover_epochs` with the parent's data, split and training config (lr
    lowered), then make the trained run a derived run with `finish_trained`."""
    from modelyard.compress.derived import finish_trained
    from modelyard.config import load_config
    from modelyard.pipeline import train

    accuracy_cut = accuracy_on_test(parent, pruned.adapter.proba_raw(parent.split("test"), parent.predictor.preprocessor))
    with tempfile.TemporaryDirectory(prefix="modelyard-prune-") as tmp:
        start = write_start(pruned, Path(tmp))
        raw = recovery_config(parent, params, pruned, start)
        cfg = load_config(raw, params.overrides)
        callbacks = [KeepStartInRun(start)] + ([KeepZeros(pruned.masks)] if pruned.masks else [])
        run = RunDir(train(cfg, output=output, callbacks=callbacks, quiet=quiet).path)
    facts = {**pruned.facts, "recover_epochs": params.recover_epochs, "recovery_lr": cfg.train.lr,
             "test_accuracy_before_recovery": accuracy_cut}
    if pruned.masks:
        from modelyard.artifact import load

        facts.update(sparsity_facts(load(run.path).adapter.module, pruned.masks))
    notes = pruned.notes + [f"recovered by {cfg.train.epochs} epoch(s) of fine-tuning at lr {cfg.train.lr:g} (the "
                            f"parent's x{RECOVERY_LR_FACTOR:g}); test accuracy right after pruning: {accuracy_cut:.4f}"]
    finish_trained(parent, run, "prune", params.model_dump(mode="json"), notes=notes, facts=facts, **parent.speed)
    return run


def accuracy_on_test(parent, prob) -> float:
    from modelyard.data.base import label_indices

    y = label_indices(parent.split("test").y, parent.predictor.labels, where="the parent's test split")
    return float((prob.argmax(axis=1) == y).mean())


def write_start(pruned: Pruned, folder: Path) -> Path:
    """The pruned weights where `model.pretrained` can read them: a safetensors file, or for hf a
    save_pretrained folder (config with the smaller sizes, weights, tokenizer)."""
    if pruned.adapter.family == "hf":
        pruned.adapter.module.save_pretrained(folder / "hf", pruned.adapter.meta["labels"])
        return folder / "hf"
    from safetensors.torch import save_model

    save_model(pruned.adapter.module, str(folder / "model.safetensors"))
    return folder / "model.safetensors"


def recovery_config(parent, params: PruneParams, pruned: Pruned, start: Path) -> dict:
    """The parent's experiment with the pruned model section, starting from `start`, trained briefly at a lower lr."""
    raw = parent.cfg.model_dump(mode="json")
    model = {**pruned.model_spec, "pretrained": str(start)}
    if model["name"] == "hf":
        model["finetune"] = "full"  # the cut went through the encoder: a head-only or LoRA recovery could not mend it
    else:
        model["freeze_backbone"] = False
    raw.update(name=f"{parent.predictor.meta['experiment']}-prune"[:200], model=model)
    raw["train"].update(epochs=params.recover_epochs, lr=raw["train"]["lr"] * RECOVERY_LR_FACTOR, warmup_epochs=0.0)
    return raw


class KeepStartInRun(Callback):
    """Copies the pruned starting weights into the run and points its config.yaml at them, so that
    `modelyard train --resume` can rebuild the model after the temporary folder is gone."""

    def __init__(self, start: Path) -> None:
        self.start = start

    def on_train_start(self, loop) -> None:
        if not loop.acc.is_main_process:
            return
        from modelyard.config import config_to_yaml

        target = loop.run_dir.path / START_DIR / self.start.name
        if self.start.is_dir():
            shutil.copytree(self.start, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(self.start, target)
        loop.cfg.model.pretrained = str(target.resolve())  # modelyard.json records the same source
        loop.run_dir.config_path.write_text(config_to_yaml(loop.cfg))


class KeepZeros(Callback):
    """Unstructured recovery: the pruned weights are zeroed again after every optimizer step (and in the weight
    average), so fine-tuning cannot grow them back."""

    def __init__(self, masks: dict) -> None:
        self.masks = masks

    def on_step_end(self, loop) -> None:
        import torch

        models = [loop.module] + ([loop.ema.module] if loop.ema is not None else [])
        with torch.no_grad():
            for model in models:
                params = dict(model.named_parameters())
                for name, mask in self.masks.items():
                    if mask.device != params[name].device:
                        self.masks[name] = mask = mask.to(params[name].device)
                    params[name].mul_(mask)

    on_train_start = on_step_end
