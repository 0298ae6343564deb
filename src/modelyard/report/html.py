"""report.html: one self-contained page (plots embedded) that a person can open and understand."""

from __future__ import annotations

import base64
import html

import numpy as np

from modelyard.config import config_to_yaml
from modelyard.report import plots

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .sub{color:#666;margin-top:0} table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ddd;padding:.3em .7em;text-align:right} th{background:#f4f4f4} td:first-child{text-align:left}
.headline{font-size:1.6em;margin:.4em 0} .grid{display:flex;flex-wrap:wrap;gap:1em} img{max-width:100%}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.85em}
"""

_SUMMARY_METRICS = ["accuracy", "balanced_accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted",
                    "roc_auc_ovr_macro", "pr_auc_macro", "log_loss", "ece"]


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


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
    rows = "".join(
        f"<tr><td>{html.escape(c['true'])}</td><td>{html.escape(c['predicted'])}</td><td>{c['count']}</td>"
        f"<td style='text-align:left'>{'<br>'.join(html.escape(t[:240]) for t in c['examples'])}</td></tr>"
        for c in pairs
    )
    return ("<h2>Most confused classes (test)</h2><table><tr><th>true</th><th>predicted</th><th>count</th>"
            f"<th>examples</th></tr>{rows}</table>")


def write_report(run, cfg, metrics: dict, history: list[dict], test_predictions, labels: list[str],
                 texts: list[str] | None = None) -> None:
    y, prob, _ = test_predictions
    test = metrics["test"]
    figures = {
        "learning_curves": plots.learning_curves(history) if history else None,
        "confusion_matrix": plots.confusion_matrix(test["confusion_matrix"], labels),
        "roc_curves": plots.roc_curves(y, prob, labels),
        "reliability": plots.reliability_diagram(y, prob, cfg.evaluate.ece_bins),
        "per_class_f1": plots.per_class_f1(test["per_class"]),
    }
    run.plots_dir.mkdir(exist_ok=True)
    for name, png in figures.items():
        if png:
            (run.plots_dir / f"{name}.png").write_bytes(png)
    h = test["headline"]
    ci = (f" (95% CI {h['low']:.4f} to {h['high']:.4f}, {h['resamples']} bootstrap resamples of the test set)"
          if h["low"] is not None else "")
    rows = "".join(
        f"<tr><td>{m}</td><td>{_fmt(metrics['val'].get(m))}</td><td>{_fmt(test.get(m))}</td></tr>"
        for m in _SUMMARY_METRICS
    )
    per_class = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td>"
        f"<td>{v['f1']:.3f}</td><td>{v['support']}</td></tr>"
        for k, v in test["per_class"].items()
    )
    stopped = " (stopped early)" if metrics["stopped_early"] else ""
    if metrics["monitor"] is None:  # an estimator: fitted in one call
        trained = f"Fitted in {metrics['train_time_s']:.1f} s (no epochs: a scikit-learn estimator)."
    else:
        trained = (f"Trained {metrics['epochs']} epochs{stopped} ({metrics['steps']} optimiser steps) in "
                   f"{metrics['train_time_s']:.1f} s on {metrics['processes']} process(es); best "
                   f"{html.escape(metrics['monitor'])} {_fmt(metrics['best_value'])} at epoch {metrics['best_epoch']}.")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(cfg.name)} - modelyard report</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(cfg.name)}</h1>
<p class="sub">{html.escape(cfg.model.name)} on {html.escape(cfg.data.source)} &middot; run {html.escape(run.path.name)}</p>
<p class="headline">Test {h['metric']}: <b>{h['value']:.4f}</b>{ci}</p>
<p>{trained} {metrics['parameters']:,} parameters ({metrics['trainable_parameters']:,} trainable).
Test set: {test['n']} examples; validation: {metrics['val']['n']}.</p>
<h2>Metrics</h2><table><tr><th>metric</th><th>validation</th><th>test</th></tr>{rows}</table>
<h2>Learning curves</h2>{_img(figures['learning_curves'], 'learning curves') if figures['learning_curves'] else ''}
<h2>Test set</h2><div class="grid">{_img(figures['confusion_matrix'], 'confusion matrix')}
{_img(figures['roc_curves'], 'ROC curves')}{_img(figures['reliability'], 'reliability diagram')}</div>
<p>Expected calibration error: {test['ece']:.4f} ({cfg.evaluate.ece_bins} equal-width bins). Bars above the diagonal:
the model is more often right than it claims; below: over-confident.</p>
{_img(figures['per_class_f1'], 'per-class F1')}
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_class}</table>
{_confusions_html(confused_pairs(y, prob, labels, texts)) if texts is not None else ''}
<h2>Configuration</h2><pre>{html.escape(config_to_yaml(cfg))}</pre>
</body></html>"""
    run.report_path.write_text(page, encoding="utf-8")
