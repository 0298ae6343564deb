"""report.html: one self-contained page (plots embedded) that a person can open and understand."""

from __future__ import annotations

import html
from pathlib import Path
from typing import NamedTuple

import numpy as np

from modelyard.config import config_to_yaml
from modelyard.report import plots
from modelyard.report.lineage import derived_sentence, is_derived, lineage_html, trained
from modelyard.report.page import document, figure, figures_row, png_bytes, table

_SUMMARY_METRICS = ["accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted",
                    "roc_auc_ovr_macro", "pr_auc_macro", "log_loss", "ece"]

_INTERVAL_METHODS = {
    "bootstrap": "percentile bootstrap",
    "percentile-bootstrap": "percentile bootstrap",
    "wilson": "Wilson score interval",
    "clopper-pearson": "exact binomial (Clopper-Pearson) interval",
    "exact": "exact binomial (Clopper-Pearson) interval",
}


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def interval_method(headline: dict) -> str:
    """How the headline's interval was computed, in words. A headline written before intervals were named (no
    "interval" key) came from the percentile bootstrap."""
    method = headline.get("interval", "bootstrap")
    if isinstance(method, dict):
        method = method.get("method") or method.get("name") or "bootstrap"
    key = str(method).lower().replace("_", "-").replace(" ", "-")
    words = _INTERVAL_METHODS.get(key, str(method))
    if "bootstrap" in key and headline.get("resamples"):
        words += f", {headline['resamples']} resamples of the test set"
    return words


def headline_html(headline: dict) -> str:
    """"Test accuracy: 0.9852 (95% CI 0.97 to 0.99, Wilson score interval)"."""
    ci = ""
    if headline.get("low") is not None:
        level = headline.get("level", 0.95)
        ci = (f" ({level:.0%} CI {headline['low']:.4f} to {headline['high']:.4f}, "
              f"{html.escape(interval_method(headline))})")
    return f"Test {html.escape(headline['metric'])}: <b>{headline['value']:.4f}</b>{ci}"


def confused_pairs(y, prob, labels: list[str], texts: list[str], *, top: int = 5, examples: int = 2) -> list[dict]:
    """The most frequent (true, predicted) mistakes, each with a few of the texts it was made on."""
    pred = prob.argmax(axis=1)
    wrong = y != pred
    pairs = {}
    for i in np.flatnonzero(wrong):
        pairs.setdefault((int(y[i]), int(pred[i])), []).append(i)
    ranked = sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    return [{"true": labels[t], "predicted": labels[p], "count": len(idx),
             "examples": [texts[i] for i in idx[:examples]]} for (t, p), idx in ranked]


def _confusions_html(pairs: list[dict]) -> str:
    if not pairs:
        return ""
    rows = [[html.escape(c["true"]), html.escape(c["predicted"]), str(c["count"]),
             "<td class='text'>" + "<br>".join(html.escape(t[:240]) for t in c["examples"]) + "</td>"]
            for c in pairs]
    header = ["true", "predicted", "count", "<th class='text'>examples</th>"]
    return "<h2>Most confused classes (test)</h2>" + table(header, rows)


def _per_class_table(per_class: dict, aucs: dict) -> str:
    rows = [[html.escape(k), f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}",
             _fmt(aucs[k]["roc_auc"]), _fmt(aucs[k]["average_precision"]), str(v["support"])]
            for k, v in per_class.items()]
    return table(["class", "precision", "recall", "F1", "ROC AUC", "average precision", "support"], rows)


def _training_sentence(metrics: dict) -> str:
    if is_derived(metrics) and not trained(metrics):  # quantised or exported: its train_time_s is the parent's
        return derived_sentence(metrics)
    if metrics["monitor"] is None:  # an estimator: fitted in one call
        return f"Fitted in {metrics['train_time_s']:.1f} s (no epochs: a scikit-learn estimator)."
    stopped = " (stopped early)" if metrics["stopped_early"] else ""
    return (f"Trained {metrics['epochs']} epochs{stopped} ({metrics['steps']} optimiser steps) in "
            f"{metrics['train_time_s']:.1f} s on {metrics['processes']} process(es). Kept the weights of epoch "
            f"{metrics['best_epoch']}, the best {html.escape(metrics['monitor'])} "
            f"({_fmt(metrics['best_value'])}).")


_CAPTIONS = {  # how to read each figure
    "learning_curves": "A marker per epoch. The dashed line and the star mark the epoch whose weights were kept. "
                       "A validation loss that rises while the training loss falls is over-fitting.",
    "roc_curves": "Up and to the left is better; AUC 1 is perfect, 0.5 is chance.",
    "pr_curves": "Up and to the right is better; AP (average precision) is the area under the curve.",
    "confusion_matrix": "Rows: true class; columns: predicted. Off the diagonal: mistakes.",
    "per_class_f1": "",
    "reliability": "Points above the diagonal: the model is right more often than it claims; below: over-confident. "
                   "The bars below count the examples per bin: a point resting on few examples means little.",
}


def _figure(figures: dict, name: str) -> tuple[bytes | None, str, str]:
    return figures.get(name), plots.title(name), _CAPTIONS[name]


def write_report(run, cfg, metrics: dict, history: list[dict], test_predictions, labels: list[str],
                 texts: list[str] | None = None, model=None) -> None:
    """Write run/report.html and every figure as run/plots/<name>.png.

    Args:
        model: the run's loaded `Predictor`, for the explanations, when it is not yet in the run's model/ folder.
    """
    from modelyard.report.explain import explain_section
    from modelyard.report.privacy import privacy_section

    y, prob, _ = test_predictions
    test = metrics["test"]
    figures = {
        "learning_curves": plots.learning_curves(history, best_epoch=metrics.get("best_epoch"),
                                                 monitor=metrics.get("monitor")) if history else None,
        "confusion_matrix": plots.confusion_matrix(test["confusion_matrix"], labels),
        "roc_curves": plots.roc_curves(y, prob, labels),
        "pr_curves": plots.pr_curves(y, prob, labels),
        "reliability": plots.reliability_diagram(y, prob, cfg.evaluate.ece_bins),
        "per_class_f1": plots.per_class_f1(test["per_class"]),
    }
    figures = {name: png_bytes(fig) for name, fig in figures.items() if fig is not None}
    run.plots_dir.mkdir(exist_ok=True)
    for name, png in figures.items():
        (run.plots_dir / f"{name}.png").write_bytes(png)
    summary = table(["metric", "validation", "test"],
                    [[m, _fmt(metrics["val"].get(m)), _fmt(test.get(m))] for m in _SUMMARY_METRICS])
    averages = (f" Beyond {plots.MAX_CURVES} classes the plots show micro- and macro-averaged curves over faint "
                "per-class ones; every class's AUC is in the table below." if len(labels) > plots.MAX_CURVES else "")
    ece = (f"Expected calibration error: {test['ece']:.4f} ({cfg.evaluate.ece_bins} equal-width bins). "
           + _CAPTIONS["reliability"])
    learning = ("<h2>Learning curves</h2>" + figure(*_figure(figures, "learning_curves"))
                if "learning_curves" in figures else "")
    derived = is_derived(metrics)
    title = f"{html.escape(cfg.name)} &middot; {html.escape(metrics['method'])}" if derived else html.escape(cfg.name)
    config_heading = "Configuration (the parent's)" if derived else "Configuration"
    body = f"""<h1>{title}</h1>
<p class="sub">{html.escape(cfg.model.name)} on {html.escape(cfg.data.source)} &middot; run {html.escape(run.path.name)}</p>
<p class="headline">{headline_html(test['headline'])}</p>
<p>{_training_sentence(metrics)} {metrics['parameters']:,} parameters ({metrics['trainable_parameters']:,} trainable).
Test set: {test['n']} examples; validation: {metrics['val']['n']}.</p>
{lineage_html(run.path, metrics) if derived else ""}
<h2>Metrics</h2>{summary}
{learning}
<h2>How well does it separate the classes? (test)</h2>
{figures_row(_figure(figures, 'roc_curves'), _figure(figures, 'pr_curves'))}
<p class="note">One-vs-rest: each class against all the others.{averages}</p>
{_per_class_table(test['per_class'], plots.per_class_auc(y, prob, labels))}
<h2>Where does it go wrong? (test)</h2>
{figures_row(_figure(figures, 'confusion_matrix'), _figure(figures, 'per_class_f1'))}
{_confusions_html(confused_pairs(y, prob, labels, texts)) if texts is not None else ''}
<h2>Can its confidence be trusted? (test)</h2>
{figure(figures['reliability'], plots.title('reliability'), ece)}
{explain_section(run, cfg, test_predictions, labels, model=model)}
{privacy_section(run, metrics)}
<h2>{config_heading}</h2><pre>{html.escape(config_to_yaml(cfg))}</pre>"""
    name = f"{cfg.name} ({metrics['method']})" if derived else cfg.name
    run.report_path.write_text(document(f"{name} - modelyard report", body), encoding="utf-8")


def render_run(path) -> Path:
    """Write RUN/report.html (and plots/) anew from what the run directory holds: metrics.json, history.jsonl,
    predictions/test.csv and model/modelyard.json. Works for a trained run, a derived one and a language model.

    The confused-pairs table of a text classifier quotes test texts, which only the data holds: when the data
    cannot be read here, the page is written without them and the reason is returned in `Rendered.missing`.

    Raises:
        RunError: the run is missing, unfinished (no metrics.json or predictions/test.csv) or damaged.
    """
    from modelyard.artifact import read_meta, resolve_model_dir
    from modelyard.errors import ModelyardError
    from modelyard.runs import RunDir
    from modelyard.value.measure import read_predictions

    run = RunDir.open(path)
    cfg, metrics = run.config(), run.read_json(run.metrics_path)
    meta = read_meta(resolve_model_dir(run.path))
    if meta.get("task") == "lm":
        from modelyard.report.lm import write_lm_report

        write_lm_report(run, cfg, metrics, run.history())
        return Rendered(run.report_path, None)
    labels = list(meta["labels"])
    y, prob = read_predictions(run.predictions_dir / "test.csv", labels)
    texts, missing = None, None
    if (meta.get("preprocessing") or {}).get("kind") == "text":
        from modelyard.data import read_run_splits

        try:
            raw, parts, _ = read_run_splits(run)
            texts = [raw.x[i] for i in parts["test"]]
        except ModelyardError as exc:
            missing = f"no example texts in the confused-pairs table: {exc}"
    write_report(run, cfg, metrics, run.history(), (y, prob, None), labels, texts=texts)
    return Rendered(run.report_path, missing)


class Rendered(NamedTuple):
    report: Path
    missing: str | None  # what the page lacks and why
