"""value.html: one self-contained page that ends the question "which model, and is it worth it?"."""

from __future__ import annotations

import html

from modelyard.machine import describe_machine
from modelyard.report.html import _STYLE, _img
from modelyard.report.plots import _png, plt
from modelyard.value.compare import FACTORS


def pareto_value_cost(result: dict) -> bytes:
    cur = result["scenario"]["currency"]
    fig, ax = plt.subplots(figsize=(5.6, 4))
    for r in result["candidates"]:
        dom = r["dominated_value_cost"]
        ax.scatter(r["cost_per_1000"], r["horizon_total"], marker="x" if dom else "o", s=60,
                   color="#999" if dom else "#1f77b4")
        ax.annotate(r["name"] + (" (dominated)" if dom else ""), (r["cost_per_1000"], r["horizon_total"]),
                    fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.scatter(0, 0, marker="s", color="#444")
    ax.annotate("do nothing", (0, 0), fontsize=8, xytext=(4, -10), textcoords="offset points")
    ax.axhline(0, color="#ccc", lw=1)
    ax.set(xlabel=f"serving cost per 1,000 predictions ({cur})", ylabel=f"net value over the horizon ({cur})",
           title="Value against cost")
    ax.grid(alpha=0.3)
    return _png(fig)


def pareto_accuracy_latency(result: dict, slo: float | None) -> bytes:
    fig, ax = plt.subplots(figsize=(5.6, 4))
    for r in result["candidates"]:
        dom = r["dominated_accuracy_latency"]
        ax.scatter(r["p95_ms"], r["accuracy"], marker="x" if dom else "o", s=60, color="#999" if dom else "#2ca02c")
        ax.annotate(r["name"] + (" (dominated)" if dom else ""), (r["p95_ms"], r["accuracy"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    if slo:
        ax.axvline(slo, color="#d62728", ls="--", lw=1, label=f"latency SLO {slo:g} ms")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="p95 latency at batch 1 (ms, log scale)", ylabel="test accuracy", title="Accuracy against latency")
    ax.grid(alpha=0.3)
    return _png(fig)


def tornado(result: dict) -> bytes:
    sens, cur = result["sensitivity"], result["scenario"]["currency"]
    base = sens["base"]
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    names = list(sens["factors"])
    order = sorted(names, key=lambda f: abs(sens["factors"][f]["high"] - sens["factors"][f]["low"]))
    for i, f in enumerate(order):
        lo, hi = sens["factors"][f]["low"], sens["factors"][f]["high"]
        ax.barh(i, lo - base, left=base, color="#d62728", alpha=0.7, label="-50%" if i == 0 else None)
        ax.barh(i, hi - base, left=base, color="#2ca02c", alpha=0.7, label="+50%" if i == 0 else None)
    ax.axvline(base, color="#333", lw=1)
    ax.set_yticks(range(len(order)), [FACTORS[f] for f in order], fontsize=8)
    ax.set(xlabel=f"net value over the horizon ({cur})", title=f"Sensitivity of {sens['candidate']}")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def _g(x) -> str:
    """Small amounts (a fraction of a cent per prediction) with 3 significant digits."""
    return "n/a" if x is None else f"{x:.3g}"


def _f(x, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def write_value_report(path, result: dict) -> None:
    s, cur = result["scenario"], result["scenario"]["currency"]
    rows = []
    for r in result["candidates"] + [result["do_nothing"]]:
        model = r["kind"] == "model"
        ev = r["value_per_prediction"]
        ci = f" ({_g(ev['low'])} to {_g(ev['high'])})" if model and ev.get("low") is not None else ""
        mark = "" if not model else ("" if r["meets_slo"] else " (breaks the SLO)") + \
            (" (dominated)" if r["dominated_value_cost"] else "")
        rows.append(
            f"<tr><td>{html.escape(r['name'])}{mark}</td>"
            f"<td>{_f(r.get('accuracy'), 4) if model else '-'}</td><td>{_f(r.get('f1_macro'), 4) if model else '-'}</td>"
            f"<td>{_f(r.get('p95_ms')) if model else '-'}</td>"
            f"<td>{_f(r.get('predictions_per_second'), 0) if model else '-'}</td>"
            f"<td>{_f(r['parameters'], 0) if model and r.get('parameters') else '-'}</td>"
            f"<td>{_f(r['bytes_on_disk'] / 2**20, 1) if model else '-'}</td>"
            f"<td>{_g(ev['value'])}{ci}</td><td>{_g(r['cost_per_1000'])}</td>"
            f"<td>{_f(r['monthly_net'], 0)}</td><td>{_f(r['horizon_total'], 0)}</td>"
            f"<td>{_f(r['roi']) if r['roi'] is not None else '-'}</td>"
            f"<td>{r['payback_month'] if r['payback_month'] is not None else 'never'}</td>"
            f"<td>{_f(r['break_even_volume'], 0) if r['break_even_volume'] is not None else 'never'}</td>"
            f"<td>{_f(r.get('break_even_accuracy'), 4) if model and r.get('break_even_accuracy') is not None else '-'}</td></tr>"
        )
    rules = "".join(
        f"<tr><td>{html.escape(r['name'])}</td>"
        + "".join(f"<td>{_g(r['decision_rules']['rules'].get(k, {}).get('test'))}</td>"
                  for k in ("argmax", "value_optimal", "value_optimal_abstain"))
        + f"<td>{html.escape(r['decision_rules']['chosen'])}</td></tr>"
        for r in result["candidates"]
    )
    speed = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{_f(r['p50_ms'])}</td><td>{_f(r['p95_ms'])}</td>"
        f"<td>{_f(r['p99_ms'])}</td><td>{_f(r['flops_per_example'] / 1e6, 1) if r['flops_per_example'] else 'not measured'}"
        f"</td><td>{_f(r['one_off']['total'])}</td></tr>"
        for r in result["candidates"]
    )
    slo = s.get("latency_slo_ms")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>modelyard value</title>
<style>{_STYLE}</style></head><body>
<h1>Which model is worth deploying</h1>
<p class="headline">{html.escape(result['recommendation'])}</p>
<p class="sub">{s['volume_per_month']:,.0f} predictions/month over {s['horizon_months']} months; serving hardware
{s['serve']['usd_per_hour']:g} {cur}/hour{f"; latency SLO p95 &le; {slo:g} ms" if slo else ""}. Measured on
{html.escape(describe_machine(result['machine']))}.</p>
<h2>Candidates</h2>
<table><tr><th>candidate</th><th>accuracy</th><th>macro-F1</th><th>p95 ms</th><th>pred/s</th><th>parameters</th>
<th>MiB on disk</th><th>value/prediction (95% CI)</th><th>{cur} per 1,000</th><th>net/month</th><th>net over horizon</th>
<th>ROI</th><th>payback month</th><th>break-even volume/month</th><th>break-even accuracy</th></tr>{''.join(rows)}</table>
<p>Value per prediction uses each model's decision rule chosen on the validation split and is measured on the
test split. Costs: serving hardware at the best measured batch size, plus energy; one-off: training hardware, training
energy and engineering. "Dominated": another candidate (or doing nothing) has at least as much value for no more cost.</p>
<div class="grid">{_img(pareto_value_cost(result), 'value against cost')}{_img(pareto_accuracy_latency(result, slo), 'accuracy against latency')}</div>
<h2>Sensitivity</h2>{_img(tornado(result), 'tornado chart')}
<h2>Decision rules (test value per prediction)</h2>
<table><tr><th>candidate</th><th>argmax</th><th>value-optimal</th><th>value-optimal + abstain</th><th>chosen on val</th></tr>{rules}</table>
<h2>Speed and compute</h2>
<table><tr><th>candidate</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>MFLOPs/example</th><th>one-off cost ({cur})</th></tr>{speed}</table>
</body></html>"""
    path.write_text(page, encoding="utf-8")
