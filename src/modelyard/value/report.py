"""value.html: one self-contained page that ends the question "which model, and is it worth it?"."""

from __future__ import annotations

import html

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from modelyard.machine import describe_machine
from modelyard.units import human_bytes
from modelyard.report.page import document, figure, figures_row, plt, png_bytes, table
from modelyard.value.compare import FACTORS

_CHART_IN = (5.2, 4.4)  # two to a row on the page
TITLES = {  # chart: (the question it answers, what it shows)
    "value_cost": ("Which candidate earns the most for what it costs?", "net value against serving cost"),
    "accuracy_latency": ("Which candidates are accurate and fast enough?", "accuracy against latency"),
    "sensitivity": ("What if the scenario's figures are off by half?", "sensitivity of the net value"),
}


def _title(name: str) -> str:
    return "{} ({})".format(*TITLES[name])


def _label_points(ax, points: list[tuple[float, float, str, bool]], color: str) -> None:
    """A point per candidate, named beside it; dominated ones grey crosses."""
    for x, y, name, dominated in points:
        ax.scatter(x, y, marker="x" if dominated else "o", s=60, color="#999" if dominated else color, zorder=3)
        ax.annotate(name + (" (dominated)" if dominated else ""), (x, y), fontsize=8, xytext=(5, 5),
                    textcoords="offset points")
    ax.margins(x=0.3, y=0.2)  # room for the names at the edges
    ax.grid(alpha=0.3)


def _tick(v: float, _pos=None) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def pareto_value_cost(result: dict) -> Figure:
    cur = result["scenario"]["currency"]
    fig, ax = plt.subplots(figsize=_CHART_IN)
    _label_points(ax, [(r["cost_per_1000"], r["horizon_total"], r["name"], r["dominated_value_cost"])
                       for r in result["candidates"]] + [(0.0, 0.0, "do nothing", False)], "#1f77b4")
    ax.axhline(0, color="#ccc", lw=1)
    for axis in (ax.xaxis, ax.yaxis):  # amounts in full, and no "1e-7" offset text colliding with the label
        axis.set_major_formatter(FuncFormatter(_tick))
    ax.set(xlabel=f"serving cost per 1,000 predictions ({cur})", ylabel=f"net value over the horizon ({cur})")
    ax.set_title("{}\n({})".format(*TITLES["value_cost"]), fontsize=11)
    fig.tight_layout()
    return fig


def pareto_accuracy_latency(result: dict, slo: float | None) -> Figure:
    fig, ax = plt.subplots(figsize=_CHART_IN)
    _label_points(ax, [(r["p95_ms"], r["accuracy"], r["name"], r["dominated_accuracy_latency"])
                       for r in result["candidates"]], "#2ca02c")
    if slo:
        ax.axvline(slo, color="#d62728", ls="--", lw=1, label=f"latency SLO {slo:g} ms")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set(xlabel="p95 latency at batch 1 (ms, log scale)", ylabel="test accuracy")
    ax.set_title("{}\n({})".format(*TITLES["accuracy_latency"]), fontsize=11)
    fig.tight_layout()
    return fig


def tornado(result: dict) -> Figure:
    sens, cur = result["sensitivity"], result["scenario"]["currency"]
    base = sens["base"]
    fig, ax = plt.subplots(figsize=(8.0, 3.2))
    names = list(sens["factors"])
    order = sorted(names, key=lambda f: abs(sens["factors"][f]["high"] - sens["factors"][f]["low"]))
    for i, f in enumerate(order):
        lo, hi = sens["factors"][f]["low"], sens["factors"][f]["high"]
        ax.barh(i, lo - base, left=base, color="#d62728", alpha=0.7, label="factor -50%" if i == 0 else None)
        ax.barh(i, hi - base, left=base, color="#2ca02c", alpha=0.7, label="factor +50%" if i == 0 else None)
    ax.axvline(base, color="#333", lw=1, label=f"as in the scenario: {base:,.0f} {cur}")
    ax.axvline(0, color="#999", lw=1, ls=":")
    ax.set_yticks(range(len(order)), [FACTORS[f] for f in order], fontsize=9)
    ax.set(xlabel=f"net value over the horizon ({cur})")
    ax.set_title(f"{TITLES['sensitivity'][0]}\n(sensitivity of {sens['candidate']}'s net value; the dotted line is "
                 "break-even)", fontsize=11)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)  # clear of every bar
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


_RULES = {"argmax": "argmax", "value_optimal": "value-optimal", "value_optimal_abstain": "value-optimal + abstain"}



def _g(x) -> str:
    """Small amounts (a fraction of a cent per prediction) with 3 significant digits."""
    return "n/a" if x is None else f"{x:.3g}"


def _f(x, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def _name_cell(r: dict, recommended: str | None) -> str:
    name = html.escape(r["name"])
    if r["kind"] != "model":
        return name
    marks = [m for m, on in (("recommended", r["name"] == recommended), ("breaks the SLO", not r["meets_slo"]),
                             ("dominated", r["dominated_value_cost"])) if on]
    name = f"<b>{name}</b>" if r["name"] == recommended else name
    return name + (f"<br><small>{', '.join(marks)}</small>" if marks else "")


def _quality_table(result: dict) -> str:
    rows = [[_name_cell(r, result["recommended"]), _f(r["accuracy"], 4), _f(r["f1_macro"], 4), _f(r["p95_ms"]),
             _f(r["predictions_per_second"], 0), _f(r["parameters"], 0) if r.get("parameters") else "-",
             human_bytes(r["bytes_on_disk"])]
            for r in result["candidates"]]
    return table(["candidate", "accuracy", "macro-F1", "p95 ms", "predictions/s", "parameters", "size on disk"], rows)


def _payback(r: dict) -> list[str]:
    """ROI, payback month, break-even volume and accuracy: figures that only a model has."""
    return [_f(r["roi"]) if r["roi"] is not None else "-",
            str(r["payback_month"]) if r["payback_month"] is not None else "never",
            _f(r["break_even_volume"], 0) if r["break_even_volume"] is not None else "never",
            _f(r["break_even_accuracy"], 4) if r.get("break_even_accuracy") is not None else "-"]


def _money_table(result: dict) -> str:
    cur, rows = result["scenario"]["currency"], []
    for r in result["candidates"] + [result["do_nothing"]]:
        model = r["kind"] == "model"
        ev = r["value_per_prediction"]
        ci = f"<br><small>{_g(ev['low'])} to {_g(ev['high'])}</small>" if model and ev.get("low") is not None else ""
        rows.append([
            _name_cell(r, result["recommended"]), f"{_g(ev['value'])}{ci}", _g(r["cost_per_1000"]),
            _f(r["monthly_net"], 0), _f(r["horizon_total"], 0), *(_payback(r) if model else ["-"] * 4)])
    return table(["candidate", "value per prediction (95% CI)", f"cost per 1,000 ({cur})", f"net per month ({cur})",
                  f"net over horizon ({cur})", "ROI", "payback month", "break-even volume per month",
                  "break-even accuracy"], rows)


def _amount(x: float | None) -> str:
    """Money: whole units when it is large, cents when it is small (a tiny scenario's net can be 3.57)."""
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def made_from(r: dict) -> str:
    """"bf16 of tiny-20261129T094135Z" for a derived run, "" for a trained one or doing nothing."""
    lineage = r.get("lineage") or {}
    return f"{lineage['method']} of {lineage['parent_name']}" if lineage.get("method") else ""


def ranking_rows(result: dict) -> list[dict]:
    """The ranking, best first, one row of display strings per candidate and one for doing nothing: what both
    the command line and value.html show."""
    by_name = {r["name"]: r for r in [*result["candidates"], result["do_nothing"]]}
    names = result.get("ranking") or list(by_name)  # a value.json written before the ranking existed
    rows = []
    for rank, name in enumerate(names, 1):
        r = by_name[name]
        ci = r.get("monthly_net_interval")
        model = r["kind"] == "model"
        rows.append({
            "rank": str(rank), "candidate": name, "made_from": made_from(r),
            "net_per_month": _amount(r["monthly_net"]),
            "interval": f"[{_amount(ci['low'])}, {_amount(ci['high'])}]" if model and ci else "",
            "net_over_horizon": _amount(r["horizon_total"]),
            "cost_per_1000": _g(r["cost_per_1000"]),
            "p95_ms": _f(r["p95_ms"]) if model else "-",
            "accuracy": _f(r["accuracy"], 4) if model else "-",
            "note": "" if r["meets_slo"] else "breaks the latency SLO",
        })
    return rows


def _ranking_table(result: dict) -> str:
    cur = result["scenario"]["currency"]
    rows = []
    for r in ranking_rows(result):
        name = html.escape(r["candidate"])
        name = f"<b>{name}</b>" if r["candidate"] == result["recommended"] else name
        sub = [html.escape(x) for x in (r["made_from"], r["note"]) if x]
        rows.append([r["rank"], "<td class='text'>" + name + (f"<br><small>{'; '.join(sub)}</small>" if sub else "")
                     + "</td>",
                     r["net_per_month"] + (f"<br><small>{r['interval']}</small>" if r["interval"] else ""),
                     r["net_over_horizon"], r["cost_per_1000"], r["p95_ms"], r["accuracy"]])
    return table(["rank", "<th class='text'>candidate</th>", f"net per month ({cur}, 95% CI)",
                  f"net over {result['scenario']['horizon_months']} months ({cur})", f"cost per 1,000 ({cur})",
                  "p95 ms", "accuracy"], rows)


def one_off_note(result: dict) -> str:
    """How a derived run's one-off cost was counted, in words (empty when every candidate was trained)."""
    derived = [r for r in result["candidates"] if made_from(r)]
    if not derived:
        return ""
    parts = "; ".join(f"{r['name']}: {r.get('one_off_basis') or 'not recorded'}" for r in derived)
    return ("One-off cost of a derived run: its parent's training (and the parent's own making, if it is derived "
            f"too) plus its own step, priced as training hardware. {parts}.")


def write_value_report(path, result: dict) -> None:
    s, cur = result["scenario"], result["scenario"]["currency"]
    rules = table(
        ["candidate", *_RULES.values(), "chosen on val"],
        [[html.escape(r["name"])] + [_g(r["decision_rules"]["rules"].get(k, {}).get("test")) for k in _RULES]
         + [_RULES.get(r["decision_rules"]["chosen"], html.escape(r["decision_rules"]["chosen"]))]
         for r in result["candidates"]])
    speed = table(
        ["candidate", "p50 ms", "p95 ms", "p99 ms", "MFLOPs/example", f"one-off cost ({cur})"],
        [[html.escape(r["name"]), _f(r["p50_ms"]), _f(r["p95_ms"]), _f(r["p99_ms"]),
          _g(r["flops_per_example"] / 1e6) if r["flops_per_example"] else "not measured",
          _f(r["one_off"]["total"])] for r in result["candidates"]])
    slo = s.get("latency_slo_ms")
    latency_caption = "Up and to the left is better: more accurate and faster." + (
        " Right of the red line breaks the SLO." if slo else "")
    body = f"""<h1>Which model is worth deploying</h1>
<p class="headline">{html.escape(result['recommendation'])}</p>
<p class="sub">{s['volume_per_month']:,.0f} predictions/month over {s['horizon_months']} months; serving hardware
{s['serve']['usd_per_hour']:g} {cur}/hour{f"; latency SLO p95 &le; {slo:g} ms" if slo else ""}. Measured on
{html.escape(describe_machine(result['machine']))}.</p>
<h2>How do the candidates rank?</h2>{_ranking_table(result)}
<p class="note">Ranked by net value over the horizon (one-off costs included); the interval of the net per month
is the 95% bootstrap interval of the value per prediction on the test split, times the volume. Candidates that
break the latency SLO rank last. {html.escape(one_off_note(result))}</p>
<h2>How good and how fast is each candidate?</h2>{_quality_table(result)}
<h2>What is each worth?</h2>{_money_table(result)}
<p class="note">Value per prediction uses each model's decision rule chosen on the validation split and is measured on
the test split. Costs: serving hardware at the best measured batch size, plus energy; one-off: training hardware,
training energy and engineering. "Dominated": another candidate (or doing nothing) has at least as much value for no
more cost.</p>
{figures_row((png_bytes(pareto_value_cost(result)), _title('value_cost'),
              'Up and to the left is better: more net value for less serving cost.'),
             (png_bytes(pareto_accuracy_latency(result, slo)), _title('accuracy_latency'), latency_caption))}
<h2>How sure is the recommendation?</h2>
{figure(png_bytes(tornado(result)), _title('sensitivity'),
        'Each bar moves one figure of the scenario by half down (red) and half up (green), the others held. '
        'A bar that crosses the dotted line would turn a profit into a loss.')}
<h2>Decision rules (test value per prediction)</h2>{rules}
<h2>Speed and compute</h2>{speed}"""
    path.write_text(document("modelyard value", body), encoding="utf-8")
