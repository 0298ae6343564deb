"""`modelyard compress RUN --method M`: a cheaper copy of RUN's model, written as a derived run."""

from __future__ import annotations

import click

from modelyard.units import human_bytes


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--method", required=True, metavar="METHOD",
              help="int8-dynamic, bf16, onnx, onnx-int8, prune or distill (see docs/compression.md).")
@click.option("--output", type=click.Path(file_okay=False), help="Folder for the derived run (default: beside RUN).")
@click.option("--amount", type=float, help="prune: fraction of weights (or FFN neurons/channels) to remove.")
@click.option("--structured/--unstructured", default=None,
              help="prune: remove whole neurons or channels (smaller and faster; the default), or zero single "
                   "weights (no faster on dense CPU kernels).")
@click.option("--recover-epochs", type=int, help="prune: epochs of fine-tuning after pruning (default 1 structured, "
                                                  "0 unstructured).")
@click.option("--layers", type=int, help="distill: the student Transformer's layer count (from the teacher's).")
@click.option("--width", type=float, help="distill: the student CNN/MLP's width as a fraction of the teacher's.")
@click.option("--temperature", type=float, help="distill: softmax temperature of the soft targets.")
@click.option("--alpha", type=float, help="distill: weight of the soft-target loss (1 - alpha: the labels').")
@click.option("--epochs", type=int, help="distill: training epochs of the student.")
@click.option("--calibration-batches", type=int, help="onnx-int8 on CNNs: training batches for static calibration.")
@click.option("--opset", type=int, help="onnx, onnx-int8: the ONNX opset to export with.")
@click.option("--transformer-optimizer/--no-transformer-optimizer", default=None,
              help="onnx, onnx-int8 on BERT-like encoders: fuse attention, embeddings and layer norms with ONNX "
                   "Runtime's transformer optimiser (off by default).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="distill, prune: override a key of the trained run's config, e.g. train.lr=3e-4.")
@click.option("--speed-budget", default=4.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds of timing per model and batch size (parent and derived, in one process).")
@click.option("--speed-iterations", type=click.IntRange(min=1),
              help="Time exactly this many calls per figure instead of --speed-budget.")
def compress(run: str, method: str, output: str | None, speed_budget: float, speed_iterations: int | None,
             overrides: tuple[str, ...], **options) -> None:
    """Compress RUN's model with METHOD into a derived run that evaluate, value, register and serve take.

    Prints the derived run's test accuracy, size and speed beside the parent's, then its path.
    """
    from modelyard.compress import compress as run_compress

    params = {k: v for k, v in options.items() if v is not None}
    if overrides:
        params["overrides"] = list(overrides)
    result = run_compress(run, method, output=output, speed_budget_s=speed_budget, speed_iterations=speed_iterations,
                          quiet=False, **params)
    for line in summary_lines(result.metrics):
        click.echo(line)
    click.echo(f"report: {result.path / 'report.html'}")
    click.echo(str(result.path))


def summary_lines(m: dict) -> list[str]:
    """What `compress` prints: accuracy, size and speed of the derived model beside its parent's."""
    parent = m.get("parent_figures") or {}
    acc, p_acc = m["test"]["accuracy"], (parent.get("test") or {}).get("accuracy")
    lines = [f"method: {m.get('method')} {m.get('params') or ''}".rstrip()]
    if p_acc is not None:
        lines.append(f"test accuracy: {acc:.4f} (parent {p_acc:.4f}, {100 * (acc - p_acc):+.2f} points)")
    if parent.get("bytes_on_disk"):
        lines.append(f"size on disk: {human_bytes(m['bytes_on_disk'])} (parent {human_bytes(parent['bytes_on_disk'])}, "
                     f"{parent['bytes_on_disk'] / m['bytes_on_disk']:.2f}x smaller)")
    speed = m.get("speed")
    if speed:
        this, par, ratio = speed["this"], speed["parent"], speed["ratio"]
        lines.append(f"batch 1 latency: {this['latency_ms_batch1']:.2f} ms (parent {par['latency_ms_batch1']:.2f} ms, "
                     f"{_faster(ratio['latency_batch1'])})")
        lines.append(f"batch 32 throughput: {this['throughput_batch32']:,.0f}/s (parent "
                     f"{par['throughput_batch32']:,.0f}/s, {ratio['throughput_batch32']:.2f}x), on "
                     f"{speed['machine'].get('cpu', '?')} with {speed['machine'].get('torch_threads', '?')} threads")
    lines += [f"note: {note}" for note in m.get("notes") or []]
    return lines


def _faster(ratio: float) -> str:
    """"2.50x faster" or "4.00x slower" ("0.25x faster" reads as a speed-up at a glance)."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
