"""report.html for a language model: loss curves, perplexity beside the unigram baseline, and samples."""

from __future__ import annotations

import html

from modelyard.config import config_to_yaml
from modelyard.report import plots
from modelyard.report.html import _STYLE, _img


def write_lm_report(run, cfg, metrics: dict, history: list[dict]) -> None:
    val = metrics["val"]
    curves = plots.learning_curves(history) if history else None
    run.plots_dir.mkdir(exist_ok=True)
    if curves:
        (run.plots_dir / "learning_curves.png").write_bytes(curves)
    samples = "".join(
        f"<tr><td>{html.escape(s['prompt'])}</td><td style='text-align:left'>{html.escape(s['completion'])}</td></tr>"
        for s in metrics["samples"]
    )
    ratio = val["unigram_perplexity"] / val["perplexity"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(cfg.name)} - modelyard report</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(cfg.name)}</h1>
<p class="sub">{html.escape(cfg.model.name)} language model on {html.escape(cfg.data.source)} &middot; run {html.escape(run.path.name)}</p>
<p class="headline">Validation perplexity: <b>{val['perplexity']:.2f}</b> (unigram baseline on the same tokens:
{val['unigram_perplexity']:.2f}, {ratio:.1f}x higher)</p>
<p>Trained {metrics['epochs']} epochs ({metrics['steps']} optimiser steps) in {metrics['train_time_s']:.1f} s on
{metrics['processes']} process(es). {metrics['parameters']:,} parameters ({metrics['trainable_parameters']:,} trainable).
Validation: {val['tokens']:,} tokens, loss {val['loss']:.4f} nats/token, next-token accuracy {val['token_accuracy']:.3f}.
The unigram baseline predicts every token by its frequency in the training split (add-one smoothed).</p>
<h2>Learning curves</h2>{_img(curves, 'learning curves') if curves else ''}
<h2>Samples</h2><p>temperature 0.8, top-k 50, seed {cfg.seed}</p>
<table><tr><th>prompt</th><th>continuation</th></tr>{samples}</table>
<h2>Configuration</h2><pre>{html.escape(config_to_yaml(cfg))}</pre>
</body></html>"""
    run.report_path.write_text(page, encoding="utf-8")
