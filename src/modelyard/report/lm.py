"""report.html for a language model: loss curves, perplexity beside the unigram baseline, and samples."""

from __future__ import annotations

import html

from modelyard.config import config_to_yaml
from modelyard.report import plots
from modelyard.report.page import document, figure, png_bytes, table


def write_lm_report(run, cfg, metrics: dict, history: list[dict]) -> None:
    val = metrics["val"]
    curves = png_bytes(plots.learning_curves(history, best_epoch=metrics.get("best_epoch"),
                                             monitor=metrics.get("monitor"))) if history else None
    run.plots_dir.mkdir(exist_ok=True)
    if curves:
        (run.plots_dir / "learning_curves.png").write_bytes(curves)
    samples = [[html.escape(s["prompt"]), f"<td class='text'>{html.escape(s['completion'])}</td>"]
               for s in metrics["samples"]]
    ratio = val["unigram_perplexity"] / val["perplexity"]
    body = f"""<h1>{html.escape(cfg.name)}</h1>
<p class="sub">{html.escape(cfg.model.name)} language model on {html.escape(cfg.data.source)} &middot; run {html.escape(run.path.name)}</p>
<p class="headline">Validation perplexity: <b>{val['perplexity']:.2f}</b> (unigram baseline on the same tokens:
{val['unigram_perplexity']:.2f}, {ratio:.1f}x higher)</p>
<p>Trained {metrics['epochs']} epochs ({metrics['steps']} optimiser steps) in {metrics['train_time_s']:.1f} s on
{metrics['processes']} process(es). {metrics['parameters']:,} parameters ({metrics['trainable_parameters']:,} trainable).
Validation: {val['tokens']:,} tokens, loss {val['loss']:.4f} nats/token, next-token accuracy {val['token_accuracy']:.3f}.
The unigram baseline predicts every token by its frequency in the training split (add-one smoothed).</p>
<h2>Learning curves</h2>{figure(curves, plots.title('learning_curves'), 'A marker per epoch; the star marks the epoch kept.')}
<h2>Samples</h2><p>temperature 0.8, top-k 50, seed {cfg.seed}</p>
{table(["prompt", "<th class='text'>continuation</th>"], samples)}
<h2>Configuration</h2><pre>{html.escape(config_to_yaml(cfg))}</pre>"""
    run.report_path.write_text(document(f"{cfg.name} - modelyard report", body), encoding="utf-8")
