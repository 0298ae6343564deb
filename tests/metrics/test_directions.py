import numpy as np
import pytest
from sklearn.metrics import get_scorer_names

from modelyard.errors import ConfigError
from modelyard.metrics import classification_report, regression_report
from modelyard.metrics.directions import (
    METRIC_DIRECTIONS,
    SPLIT_PREFIXES,
    direction,
    direction_phrase,
    is_better,
    oriented,
)
from modelyard.training.callbacks import improved, monitor_mode

# scikit-learn's scorer names follow one documented convention: a scorer is higher-is-better, and a metric
# where lower is better is offered negated as "neg_<name>". Our names, mapped to its scorer names:
SCIKIT_LEARN_NAMES = {
    "accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy", "precision_macro": "precision_macro",
    "recall_macro": "recall_macro", "f1_macro": "f1_macro", "f1_micro": "f1_micro", "f1_weighted": "f1_weighted",
    "precision": "precision", "recall": "recall", "f1": "f1", "roc_auc": "roc_auc", "roc_auc_ovr_macro": "roc_auc_ovr",
    "pr_auc_macro": "average_precision", "log_loss": "log_loss", "mse": "mean_squared_error",
    "rmse": "root_mean_squared_error", "mae": "mean_absolute_error", "r2": "r2",
}
# Every other row, with the reason it goes that way.
BY_DEFINITION = {
    "ece": "min",  # a calibration error
    "loss": "min",  # the cross-entropy the optimiser minimises
    "perplexity": "min",  # exp(loss): issue 12 item 6 found it treated as higher-is-better
    "unigram_loss": "min", "unigram_perplexity": "min",
    "token_accuracy": "max",
    "p50_ms": "min", "p95_ms": "min", "p99_ms": "min",  # latency
    "predictions_per_second": "max",
    "cost_per_1000": "min",
    "value_per_prediction": "max", "monthly_net": "max", "horizon_total": "max",  # money earned
}


def test_every_row_is_checked_by_one_of_the_two_tables():
    assert set(METRIC_DIRECTIONS) == set(SCIKIT_LEARN_NAMES) | set(BY_DEFINITION)
    assert not set(SCIKIT_LEARN_NAMES) & set(BY_DEFINITION)


@pytest.mark.parametrize("name", sorted(SCIKIT_LEARN_NAMES))
def test_direction_agrees_with_scikit_learn_scorer_names(name):
    scorers, theirs = set(get_scorer_names()), SCIKIT_LEARN_NAMES[name]
    expected = "max" if theirs in scorers else "min" if f"neg_{theirs}" in scorers else None
    assert expected is not None, f"scikit-learn has no scorer {theirs!r} or 'neg_{theirs}'"
    assert direction(name) == expected


@pytest.mark.parametrize("name", sorted(BY_DEFINITION))
def test_direction_by_definition(name):
    assert direction(name) == BY_DEFINITION[name]


@pytest.mark.parametrize("name", sorted(METRIC_DIRECTIONS))
def test_prefixed_names_and_helpers_follow_the_table(name):
    mode = METRIC_DIRECTIONS[name]
    for prefix in SPLIT_PREFIXES:
        assert direction(prefix + name) == mode
    assert is_better(2.0, 1.0, name) == (mode == "max")
    assert is_better(1.0, 2.0, name) == (mode == "min")
    assert not is_better(1.0, 1.0, name)
    assert is_better(1.0, None, name)
    assert oriented(3.0, name) == (3.0 if mode == "max" else -3.0)
    assert direction_phrase(name) == ("higher is better" if mode == "max" else "lower is better")


def test_every_metric_the_toolkit_reports_has_a_direction():
    rng = np.random.default_rng(0)
    prob = rng.dirichlet(np.ones(3), size=30)
    report = classification_report(np.arange(30) % 3, prob)
    numeric = [k for k, v in report.items() if isinstance(v, float) or v is None]
    per_class = list(next(iter(report["per_class"].values())))
    names = numeric + [k for k in per_class if k != "support"] + list(regression_report([1.0, 2.0], [1.0, 3.0]))
    lm_val = ["loss", "perplexity", "token_accuracy", "unigram_loss", "unigram_perplexity"]  # pipeline._finish_lm
    history = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1_macro", "val_perplexity"]
    for name in [*names, *lm_val, *history]:
        if name == "n":
            continue
        assert direction(name) in ("max", "min"), name


def test_every_monitor_and_headline_choice_has_a_direction():
    import typing

    from modelyard.config import MONITORS, EvaluateConfig

    headline = typing.get_args(EvaluateConfig.model_fields["metric"].annotation)
    assert "val_perplexity" in MONITORS and headline
    for name in [*MONITORS, *headline]:
        assert monitor_mode(name) == direction(name)
    assert monitor_mode("val_perplexity") == "min"
    assert monitor_mode("val_accuracy") == "max"


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"metric 'val_perplexty'\. Did you mean 'val_perplexity'\?.*accuracy"):
        direction("val_perplexty")
    with pytest.raises(ConfigError, match="Known metrics: "):
        direction("zzz")
    with pytest.raises(ValueError, match="'max' or 'min'"):
        improved(1.0, 0.0, "maximise")


@pytest.mark.parametrize("monitor, history, best_epoch", [
    ("val_perplexity", [40.0, 12.0, 15.0, 11.5, 30.0], 4),
    ("val_loss", [1.2, 0.8, 0.9], 2),
    ("val_accuracy", [0.5, 0.9, 0.7], 2),
])
def test_best_epoch_as_the_training_loop_chooses_it(monitor, history, best_epoch):
    # loop.py: mode = monitor_mode(monitor); is_best = improved(value, best, mode, min_delta)
    mode, best, kept = monitor_mode(monitor), None, None
    for epoch, value in enumerate(history, start=1):
        if improved(value, best, mode, 0.0):
            best, kept = value, epoch
    assert kept == best_epoch


def test_min_delta_must_be_exceeded():
    assert not improved(0.95, 1.0, "min", min_delta=0.1)
    assert improved(0.85, 1.0, "min", min_delta=0.1)
    assert not is_better(0.55, 0.5, "accuracy", min_delta=0.1)


def test_value_pareto_fronts_read_the_table():
    from modelyard.value.compare import pareto_dominated

    rows = [{"accuracy": 0.9, "p95_ms": 5.0}, {"accuracy": 0.8, "p95_ms": 9.0}, {"accuracy": 0.95, "p95_ms": 20.0}]
    assert pareto_dominated(rows, "accuracy", "p95_ms") == [False, True, False]
    # both lower-is-better: the fastest, cheapest row dominates the rest
    rows = [{"p95_ms": 1.0, "cost_per_1000": 1.0}, {"p95_ms": 2.0, "cost_per_1000": 0.5},
            {"p95_ms": 3.0, "cost_per_1000": 3.0}]
    assert pareto_dominated(rows, "p95_ms", "cost_per_1000") == [False, False, True]


def test_a_language_model_keeps_its_lowest_perplexity_epoch(tmp_path, corpus_txt):
    # Issue 12 item 6: with val_perplexity read as higher-is-better, the run kept its worst epoch.
    import json

    import modelyard
    from tests.conftest import tiny_config

    small = tmp_path / "small.txt"
    small.write_text("\n".join(corpus_txt.read_text().splitlines()[:60]) + "\n")
    cfg = tiny_config(name="lm", data={"source": f"text:{small}", "block_size": 16,
                                       "tokenizer": {"kind": "bpe", "vocab_size": 120}},
                      train={"epochs": 2, "batch_size": 16, "lr": 0.01, "monitor": "val_perplexity"})
    cfg["model"] = {"name": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2}
    run = modelyard.train(cfg, output=tmp_path, quiet=True)
    history = [json.loads(line)["val_perplexity"] for line in (run.path / "history.jsonl").read_text().splitlines()]
    assert max(history) > min(history)
    assert run.metrics["best_value"] == pytest.approx(min(history))
    assert run.metrics["best_epoch"] == int(np.argmin(history)) + 1
    assert run.metrics["val"]["perplexity"] == pytest.approx(min(history), rel=1e-4)  # the kept model is that epoch's
