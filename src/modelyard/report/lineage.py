"""The part of a derived run's report.html that says where the model came from: its parent (linked), the
method and its parameters, and its figures beside the parent's, read from the run's own metrics.json."""

from __future__ import annotations

import html
import os
from pathlib import Path

from modelyard.machine import describe_machine
from modelyard.report.page import table
from modelyard.units import human_bytes


def is_derived(metrics: dict) -> bool:
    """Whether metrics.json is a derived run's (`modelyard compress` writes its method and parent)."""
    return bool(metrics.get("method")) and bool(metrics.get("parent"))


def trained(metrics: dict) -> bool:
    """Whether the run itself ran epochs: a derived run made in one pass (quantised, exported) did not."""
    return (metrics.get("epochs") or 0) > 0


def params_text(params: dict | None) -> str:
    """"amount=0.5, structured=True", or "defaults" when the method took none."""
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items()) or "defaults"


def derived_sentence(metrics: dict) -> str:
    """The report's line about how a derived run's model was made, in place of a training sentence."""
    seconds = metrics.get("compress_time_s")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    return (f"Not trained: made from its parent by {html.escape(metrics['method'])}{took}, so there are no "
            "learning curves.")


def parent_link(run_path: Path, metrics: dict) -> str:
    """The parent's name, linked to its report.html by a path relative to this run's, so the two runs can be
    moved or copied together."""
    parent = Path(metrics["parent"])
    href = os.path.relpath(parent / "report.html", Path(run_path).resolve())
    return f'<a href="{html.escape(Path(href).as_posix())}">{html.escape(parent.name)}</a>'


def _points(this: float | None, parent: float | None) -> str:
    if this is None or parent is None:
        return "n/a"
    return f"{100 * (this - parent):+.2f} points"


def _times(ratio: float | None, *, above_one: str, below_one: str) -> str:
    """A ratio above 1 in words that say which way: "2.40x faster", "119x slower"."""
    if not ratio:
        return "n/a"
    if abs(ratio - 1) < 0.005:
        return "the same"
    value = ratio if ratio > 1 else 1 / ratio
    figure = f"{value:.3g}" if value < 100 else f"{value:,.0f}"
    return f"{figure}x {above_one if ratio > 1 else below_one}"


def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def figures_table(metrics: dict) -> str:
    """This run's figures beside the parent's: quality on the same test split, size, speed."""
    mine, theirs = metrics.get("test", {}), (metrics.get("parent_figures") or {})
    theirs_test = theirs.get("test") or {}
    speed = metrics.get("speed") or {}
    p, t, r = speed.get("parent") or {}, speed.get("this") or {}, speed.get("ratio") or {}
    rows = [["test accuracy", _num(theirs_test.get("accuracy"), ".4f"), _num(mine.get("accuracy"), ".4f"),
             _points(mine.get("accuracy"), theirs_test.get("accuracy"))]]
    for key, name in (("f1_macro", "test macro-F1"), ("log_loss", "test log loss"), ("ece", "test ECE")):
        if theirs_test.get(key) is not None and mine.get(key) is not None:
            rows.append([name, f"{theirs_test[key]:.4f}", f"{mine[key]:.4f}", f"{mine[key] - theirs_test[key]:+.4f}"])
    size_p, size_t = theirs.get("bytes_on_disk"), metrics.get("bytes_on_disk")
    rows.append(["size on disk", human_bytes(size_p) if size_p else "n/a", human_bytes(size_t) if size_t else "n/a",
                 _times(size_p / size_t if size_p and size_t else None, above_one="smaller", below_one="larger")])
    par_p, par_t = theirs.get("parameters"), metrics.get("parameters")
    rows.append(["parameters", _num(par_p, ","), _num(par_t, ","),
                 _times(par_p / par_t if par_p and par_t else None, above_one="fewer", below_one="more")])
    rows.append(["latency, batch 1 (ms, median)", _num(p.get("latency_ms_batch1"), ".3g"),
                 _num(t.get("latency_ms_batch1"), ".3g"), _times(r.get("latency_batch1"), above_one="faster",
                                                                   below_one="slower")])
    rows.append(["throughput, batch 32 (examples/s)", _num(p.get("throughput_batch32"), ",.0f"),
                 _num(t.get("throughput_batch32"), ",.0f"), _times(r.get("throughput_batch32"), above_one="faster",
                                                                     below_one="slower")])
    return table(["figure", "parent", "this run", "change"], rows)


def _machine_sentence(speed: dict) -> str:
    if not speed.get("machine"):
        return "The speed of the two models was not measured."
    how = (f"{speed['iterations']} timed calls each" if speed.get("iterations")
           else f"until the median settled, at most {speed.get('budget_s', 0):g} s each")
    return (f"Both models timed side by side in one process, from raw inputs to probabilities ({how}), on "
            f"{html.escape(describe_machine(speed['machine']))}. Speed ratios hold for this machine only.")


def lineage_html(run_path: Path, metrics: dict) -> str:
    """The "Where does this model come from?" section of a derived run's report."""
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in metrics.get("notes") or [])
    return f"""<h2>Where does this model come from?</h2>
<p>Made from {parent_link(run_path, metrics)} by <b>{html.escape(metrics['method'])}</b>
(parameters: {html.escape(params_text(metrics.get('params')))}), and scored on the parent's own test split.</p>
{figures_table(metrics)}
<p class="note">{_machine_sentence(metrics.get('speed') or {})}</p>
{f"<h3>Notes on {html.escape(metrics['method'])}</h3><ul>{notes}</ul>" if notes else ""}"""
