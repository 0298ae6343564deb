"""`modelyard reference-demo`: the NumPy MLP beside the same architecture trained by the PyTorch trainer."""

from __future__ import annotations

import tempfile
import time


def reference_demo(*, hidden_sizes=(64,), epochs: int = 30, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                   output: str | None = None) -> dict:
    """Train a ReLU MLP on the bundled digits twice, with `modelyard.reference` and with `modelyard.train`.

    Both see the same split and preprocessing, use Adam with the same learning rate, batch size and epochs,
    and are scored on the same test set. Returns both accuracies and their difference in points.
    """
    import modelyard
    from modelyard.config import load_config
    from modelyard.data import build_data
    from modelyard.reference import MLP

    cfg = load_config({
        "name": "reference-demo-torch", "seed": seed,
        "data": {"source": "builtin:digits"},
        "model": {"name": "mlp", "hidden_sizes": list(hidden_sizes), "activation": "relu"},
        # train_loss picks the checkpoint as the NumPy MLP does: by training alone, not by the validation split
        "train": {"epochs": epochs, "batch_size": batch_size, "optimizer": "adam", "lr": lr, "monitor": "train_loss"},
        "evaluate": {"bootstrap": 0},
    })
    bundle = build_data(cfg.data, cfg.seed)

    def arrays(ds):
        return ds.x.reshape(len(ds), -1).numpy().astype("float64"), ds.y.numpy()

    (x_train, y_train), (x_test, y_test) = arrays(bundle.train), arrays(bundle.test)
    t0 = time.perf_counter()
    numpy_model = MLP(hidden_sizes=tuple(hidden_sizes), activation="relu", optimizer="adam", lr=lr,
                      batch_size=batch_size, epochs=epochs, seed=seed).fit(x_train, y_train)
    numpy_s = time.perf_counter() - t0
    numpy_acc = numpy_model.score(x_test, y_test)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = modelyard.train(cfg, output=output or tmp, quiet=True)
        torch_s = time.perf_counter() - t0
    torch_acc = run.metrics["test"]["accuracy"]
    return {
        "numpy_accuracy": numpy_acc, "numpy_seconds": numpy_s,
        "torch_accuracy": torch_acc, "torch_seconds": torch_s,
        "difference_points": 100 * (numpy_acc - torch_acc), "test_examples": len(y_test),
        "run": str(run.path) if output else None,
    }
