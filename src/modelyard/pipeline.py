"""`train()`: config -> data -> model -> training loop -> run directory, evaluated and reported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from modelyard.config import ExperimentConfig, config_to_yaml, load_config
from modelyard.runs import RunDir, utc_stamp


@dataclass
class Run:
    """A finished run: its directory and its metrics."""

    path: Path
    metrics: dict

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"


def train(config: ExperimentConfig | str | Path | dict | None = None, *, output: str | Path = "runs",
          overrides: tuple[str, ...] = (), resume: str | Path | None = None, callbacks=(), quiet: bool = False) -> Run:
    """Train, evaluate and report one experiment; returns the run.

    Args:
        config: an `ExperimentConfig`, a YAML path, or a mapping. Not needed with `resume`.
        output: folder under which the run directory is created.
        overrides: dotted assignments such as ``"train.lr=0.01"``.
        resume: a run directory whose last checkpoint to continue from.
        callbacks: `modelyard.training.Callback` instances.

    Raises:
        ModelyardError: an invalid config, bad data or a model that cannot be built, before any step.

    Example:
        >>> run = modelyard.train("examples/digits-lenet.yaml")
        >>> run.metrics["test"]["accuracy"]
    """
    from accelerate.utils import broadcast_object_list, set_seed

    from modelyard.data import build_data
    from modelyard.models import MODELS, count_parameters, create_model, model_tokenizer
    from modelyard.training.loop import TrainingLoop, make_accelerator

    if resume is not None:
        run = RunDir.open(resume)
        cfg = load_config(yaml.safe_load(run.config_path.read_text()), overrides)
        if overrides:
            _refuse_changes_a_resume_cannot_take(run, cfg)
    else:
        if config is None:
            raise ValueError("pass a config, or resume=RUN_DIR")
        cfg = config if isinstance(config, ExperimentConfig) else load_config(config, overrides)
    acc = make_accelerator(cfg.train)
    if resume is None:
        holder = [str(RunDir.create(output, cfg.name).path) if acc.is_main_process else None]
        broadcast_object_list(holder)  # every process writes into the directory rank 0 made
        run = RunDir(holder[0])
    if acc.is_main_process:
        run.config_path.write_text(config_to_yaml(cfg))
        run.mark_running(**{"resumed" if resume is not None else "started": utc_stamp()},
                         processes=acc.num_processes, device=str(acc.device), precision=acc.mixed_precision)
    try:
        set_seed(cfg.seed)
        if MODELS.get(cfg.model.name).meta.get("estimator"):
            from modelyard.training.privacy import refuse_estimator

            refuse_estimator(cfg)
            return _fit_estimator(cfg, run, acc)
        bundle = build_data(cfg.data, cfg.seed, pretrained=model_tokenizer(cfg.model))
        if acc.is_main_process:
            run.write_splits(bundle.splits)
        model = create_model(cfg.model, input_shape=bundle.input_shape, num_classes=len(bundle.labels),
                             kind=bundle.preprocessor.kind, **bundle.model_inputs)
        from modelyard.training.callbacks import EnergyCallback

        loop = TrainingLoop(cfg, bundle, model, run, acc, callbacks=[EnergyCallback(), *callbacks],
                            resume=resume is not None, quiet=quiet)
        if resume is not None and acc.is_main_process:
            run.truncate_history(loop.state.epoch)  # epochs past the checkpoint are redone; don't list them twice
        loop.progress.summary(cfg=cfg, bundle=bundle, parameters=count_parameters(loop.module), device=acc.device,
                              run_path=run.path, resumed_at=loop.state.epoch)
        for note in bundle.notes:
            loop.progress.note(note)
        state = loop.fit()
        loop.progress.kept(best_epoch=state.best_epoch, epochs_run=state.epoch, best_value=state.best_value)
        if not acc.is_main_process:
            return Run(run.path, {})
        if bundle.task == "lm":
            return _finish_lm(cfg, run, bundle, loop, state, count_parameters(loop.module))
        return _finish(cfg, run, bundle, loop, state, count_parameters(loop.module))
    except BaseException as exc:  # Ctrl-C and SIGTERM included: run.json must never stay "running"
        if acc.is_main_process:
            _record_failure(run, exc)
            if isinstance(exc, KeyboardInterrupt):  # the CLI prints this: what stopped, and how to go on
                raise KeyboardInterrupt(_how_to_go_on(run, exc)) from exc
        raise


def _refuse_changes_a_resume_cannot_take(run: RunDir, cfg: ExperimentConfig) -> None:
    """A resume continues the run's own model on its own split: --set may extend or retune training, but a new
    seed or data section would re-draw the split (the model has seen part of the new test split) and a new model
    section cannot load the checkpoint. Checked before config.yaml is rewritten, so the run is left as it was."""
    from modelyard.errors import ConfigError

    stored = load_config(yaml.safe_load(run.config_path.read_text()))
    changed = [key for key in ("name", "seed", "data", "model") if getattr(stored, key) != getattr(cfg, key)]
    if changed:
        raise ConfigError(f"--resume {run.path} cannot change {', '.join(changed)} (the checkpoint was trained with "
                          f"the run's own model and split); only train.* and evaluate.* may change on a resume. Train "
                          f"anew instead: modelyard train {run.config_path} --set ...")


def _how_to_go_on(run: RunDir, exc: KeyboardInterrupt) -> str:
    from modelyard.training.checkpoint import latest_step

    what = str(exc) or "Ctrl-C"
    if latest_step(run.checkpoints) is None:
        return f"{what}; {run.path} has no checkpoint yet: train the experiment anew"
    return f"{what}; continue with `modelyard train --resume {run.path}`"


def _record_failure(run: RunDir, exc: BaseException) -> None:
    """run.json: `interrupted` (Ctrl-C, SIGTERM) or `failed`, with the error, the time and the step to resume from."""
    from modelyard.training.checkpoint import latest_step

    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    run.set_status(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", error=error,
                   finished=utc_stamp(), checkpoint_step=latest_step(run.checkpoints))


def _finish(cfg: ExperimentConfig, run: RunDir, bundle, loop, state, sizes: dict) -> Run:
    from modelyard.inference import predict_dataset

    model = _best_model(run, loop)
    device = loop.acc.device
    predictions = {}
    for split, dataset, names in (("val", bundle.val, bundle.val_names), ("test", bundle.test, bundle.test_names)):
        y, prob, _ = predict_dataset(model, dataset, device=device)
        predictions[split] = (y, prob, names)
    return _score_and_save(cfg, run, bundle, model, predictions, _training_facts(cfg, loop, state, sizes))


def _training_facts(cfg: ExperimentConfig, loop, state, sizes: dict) -> dict:
    """What metrics.json says about the training itself."""
    return dict(train_time_s=state.train_time_s, epochs=state.epoch, steps=state.step, best_epoch=state.best_epoch,
                monitor=cfg.train.monitor, best_value=state.best_value, stopped_early=state.stopped_early,
                processes=loop.world, energy=energy_summary(state.energy), **sizes,
                **({"privacy": loop.private.facts()} if loop.private is not None else {}))


def _best_model(run: RunDir, loop):
    """The trained module with the best checkpoint's weights (the last ones if no epoch was ever best)."""
    from modelyard.training.checkpoint import load_best_weights

    model = loop.module
    if not load_best_weights(run.checkpoints, model) and loop.ema is not None:
        model.load_state_dict(loop.ema.module.state_dict())
    return model


def _fit_estimator(cfg: ExperimentConfig, run: RunDir, acc) -> Run:
    """Fit a scikit-learn based model (tfidf-linear) in one call and write the same run directory."""
    import time

    from modelyard.data import read_splits
    from modelyard.data.base import DataBundle, label_indices, split_record
    from modelyard.data.text import TextPreprocessor
    from modelyard.energy import EnergyMeter
    from modelyard.models import count_parameters, create_model

    raw, parts, labels = read_splits(cfg.data, cfg.seed)
    model = create_model(cfg.model, input_shape=(), num_classes=len(labels), kind=raw.kind)
    if not acc.is_main_process:
        return Run(run.path, {})
    run.write_splits(split_record(raw, parts, cfg.data.source))
    texts = {name: [raw.x[i] for i in idx] for name, idx in parts.items()}
    y = {name: label_indices(raw.y[idx], labels, where=f"the {name} split") for name, idx in parts.items()}
    meter, t0 = EnergyMeter(), time.perf_counter()
    model.fit(texts["train"], y["train"], texts["val"], y["val"])
    seconds = time.perf_counter() - t0
    energy = energy_summary({"joules": meter.read(), "source": meter.source, "method": meter.describe()})
    bundle = DataBundle(train=None, val=None, test=None, labels=labels, input_shape=(),
                        preprocessor=TextPreprocessor(tokenizer=None, max_length=0, text_column=cfg.data.text),
                        test_names=[raw.names[i] for i in parts["test"]],
                        val_names=[raw.names[i] for i in parts["val"]], texts=texts)
    predictions = {split: (y[split], model.predict_proba(texts[split]), names)
                   for split, names in (("val", bundle.val_names), ("test", bundle.test_names))}
    facts = dict(train_time_s=seconds, epochs=1, steps=0, best_epoch=1, monitor=None, best_value=None,
                 stopped_early=False, processes=1, temperature=model.temperature, energy=energy,
                 **count_parameters(model))
    return _score_and_save(cfg, run, bundle, model, predictions, facts)


def _score_and_save(cfg: ExperimentConfig, run: RunDir, bundle, model, predictions: dict, facts: dict) -> Run:
    """Metrics, predictions/*.csv, the model artifact and the report, from val and test probabilities."""
    from modelyard.artifact import save_artifact
    from modelyard.explain.reference import save_reference
    from modelyard.metrics import classification_report, headline_interval
    from modelyard.report.html import write_report

    metrics: dict = {split: classification_report(y, prob, bundle.labels, ece_bins=cfg.evaluate.ece_bins)
                     for split, (y, prob, _) in predictions.items()}
    y, prob, _ = predictions["test"]
    metrics["test"]["headline"] = headline_interval(cfg.evaluate.metric, y, prob, resamples=cfg.evaluate.bootstrap,
                                                    seed=cfg.seed)
    metrics.update(facts)
    run.write_json(run.metrics_path, metrics)
    run.predictions_dir.mkdir(exist_ok=True)
    for split, (y, prob, names) in predictions.items():
        write_predictions(run.predictions_dir / f"{split}.csv", names, y, prob, bundle.labels)
    save_artifact(run.model_dir, model, model_cfg=cfg.model, input_shape=bundle.input_shape, labels=bundle.labels,
                  preprocessor=bundle.preprocessor, experiment=cfg.name, model_inputs=bundle.model_inputs,
                  extra={"private_layers": True} if cfg.train.privacy is not None else None)
    save_reference(run.model_dir, run.path, bundle.preprocessor)
    write_report(run, cfg, metrics, run.history(), predictions["test"], bundle.labels, texts=bundle.test_texts)
    run.set_status(status="completed", finished=utc_stamp())
    return Run(run.path, metrics)


def _finish_lm(cfg: ExperimentConfig, run: RunDir, bundle, loop, state, sizes: dict) -> Run:
    """A language model: validation loss and perplexity beside the unigram baseline's, a few samples."""
    import math

    from modelyard.artifact import save_artifact
    from modelyard.generation import LanguageModel
    from modelyard.inference import lm_eval
    from modelyard.report.lm import write_lm_report

    model = _best_model(run, loop)
    pre = bundle.preprocessor
    loss, accuracy, tokens = lm_eval(model, bundle.val, device=loop.acc.device)
    log_p = pre.unigram_log_probs(bundle.texts["train"])
    unigram_loss = float(-log_p[bundle.val.y.flatten().numpy()].mean())
    lm = LanguageModel(run.model_dir, model, {"experiment": cfg.name}, pre)
    prompts = [" ".join(doc.split()[:3]) for doc in bundle.texts["val"][:3]]
    samples = [{"prompt": p, "completion": lm.complete(p, max_new_tokens=40, temperature=0.8, top_k=50, seed=cfg.seed)}
               for p in prompts]
    metrics = {
        "val": {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "token_accuracy": accuracy, "tokens": tokens,
                "unigram_loss": unigram_loss, "unigram_perplexity": math.exp(unigram_loss)},
        "samples": samples, **_training_facts(cfg, loop, state, sizes),
    }
    run.write_json(run.metrics_path, metrics)
    save_artifact(run.model_dir, model, model_cfg=cfg.model, input_shape=bundle.input_shape, labels=[],
                  preprocessor=pre, experiment=cfg.name, model_inputs=bundle.model_inputs, task="lm")
    write_lm_report(run, cfg, metrics, run.history())
    run.set_status(status="completed", finished=utc_stamp())
    return Run(run.path, metrics)


def energy_summary(energy: dict) -> dict:
    """metrics.json's `energy`: joules, kWh, and whether they were measured or estimated (and how)."""
    joules = float(energy.get("joules", 0.0))
    return {"joules": joules, "kwh": joules / 3.6e6, "source": energy.get("source", "estimated"),
            "method": energy.get("method", "")}


def write_predictions(path: Path, ids, y: np.ndarray, prob: np.ndarray, labels: list[str]) -> None:
    from modelyard.inference import add_probability_columns, predicted_labels

    frame = pd.DataFrame({"id": ids, "true": np.asarray(labels, dtype=object)[y],
                          "predicted": predicted_labels(prob, labels)})
    add_probability_columns(frame, prob, labels).to_csv(path, index=False)
