"""`modelyard reference-demo`."""

from __future__ import annotations

import click


def _sizes(ctx, param, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of widths, e.g. 64 or 128,64") from None
    if not sizes or min(sizes) <= 0:
        raise click.BadParameter("widths must be positive integers")
    return sizes


@click.command("reference-demo")
@click.option("--hidden-sizes", default="64", show_default=True, callback=_sizes, help="Hidden widths, e.g. 128,64.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--output", type=click.Path(file_okay=False), help="Keep the PyTorch run directory under this folder.")
def reference_demo(hidden_sizes, epochs, batch_size, lr, seed, output) -> None:
    """Train the NumPy MLP (modelyard.reference) and the same MLP in PyTorch on the digits; compare."""
    from modelyard.reference_demo import reference_demo as run_demo

    r = run_demo(hidden_sizes=hidden_sizes, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, output=output)
    arch = "-".join(map(str, ("64", *hidden_sizes, "10")))
    click.echo(f"digits, MLP {arch} (ReLU, Adam lr {lr}, batch {batch_size}, {epochs} epochs), "
               f"test set of {r['test_examples']}:")
    click.echo(f"  NumPy   (modelyard.reference): test accuracy {r['numpy_accuracy']:.4f}  ({r['numpy_seconds']:.1f} s)")
    click.echo(f"  PyTorch (modelyard train)    : test accuracy {r['torch_accuracy']:.4f}  ({r['torch_seconds']:.1f} s)")
    click.echo(f"  difference: {r['difference_points']:+.1f} points")
    if r["run"]:
        click.echo(f"  PyTorch run: {r['run']}")
