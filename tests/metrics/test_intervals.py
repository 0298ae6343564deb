import numpy as np
import pytest
from scipy.stats import beta

from modelyard.metrics import bootstrap_ci, headline_interval, interval_text
from modelyard.metrics.intervals import BOOTSTRAP, CLOPPER_PEARSON


def answers(correct: int, n: int, n_classes: int = 3):
    """(y, prob) where exactly `correct` of `n` argmax answers are right."""
    y = np.arange(n) % n_classes
    pred = np.where(np.arange(n) < correct, y, (y + 1) % n_classes)
    prob = np.full((n, n_classes), 0.1 / (n_classes - 1))
    prob[np.arange(n), pred] = 0.9
    return y, prob


def fake(n_classes: int, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += 2.0
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_all_correct_gives_an_interval_open_below_one():
    # The percentile bootstrap gave 1.0 to 1.0 here: no resample of 27 right answers holds a wrong one.
    h = headline_interval("accuracy", *answers(27, 27), resamples=1000)
    assert h["interval"] == CLOPPER_PEARSON and h["value"] == 1.0
    assert h["low"] < 1.0 and h["high"] == 1.0
    assert h["low"] == pytest.approx(0.025 ** (1 / 27), abs=1e-12)  # closed form for k = n: (alpha/2)^(1/n)
    assert (h["successes"], h["n"]) == (27, 27)
    assert bootstrap_ci("accuracy", *answers(27, 27))["low"] == 1.0  # what it replaces


@pytest.mark.parametrize("k, n", [(0, 12), (1, 12), (7, 20), (255, 270), (269, 270)])
def test_clopper_pearson_matches_the_beta_quantiles(k, n):
    h = headline_interval("accuracy", *answers(k, n), level=0.95)
    low = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    high = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    assert h["value"] == pytest.approx(k / n)
    assert h["low"] == pytest.approx(low, abs=1e-9) and h["high"] == pytest.approx(high, abs=1e-9)
    assert h["low"] <= h["value"] <= h["high"]


def test_exact_interval_covers_where_the_bootstrap_does_not():
    # Accuracy 0.97 on 27 examples, 300 seeded test sets: Clopper-Pearson keeps its 95% promise; the
    # percentile bootstrap, a point whenever every answer is right (44% of sets), falls far short.
    from scipy.stats import binomtest

    rng = np.random.default_rng(0)
    ks = rng.binomial(27, 0.97, size=300)
    cp = [binomtest(int(k), 27).proportion_ci(method="exact") for k in ks]
    assert np.mean([c.low <= 0.97 <= c.high for c in cp]) >= 0.95
    boot = []
    for k in ks:
        stats = rng.binomial(27, k / 27, size=400) / 27
        boot.append(np.quantile(stats, 0.025) <= 0.97 <= np.quantile(stats, 0.975))
    assert np.mean(boot) < 0.8


def test_other_metrics_keep_the_seeded_bootstrap():
    y, prob = fake(4)
    a = headline_interval("f1_macro", y, prob, resamples=200, seed=3)
    assert a == headline_interval("f1_macro", y, prob, resamples=200, seed=3)
    assert a["interval"] == BOOTSTRAP and a["resamples"] == 200
    assert a["low"] < a["value"] < a["high"]
    acc = bootstrap_ci("accuracy", y, prob, resamples=1000, seed=3)
    y2, prob2 = fake(4, n=3000)
    narrow = bootstrap_ci("accuracy", y2, prob2, seed=3)
    assert narrow["high"] - narrow["low"] < (acc["high"] - acc["low"]) / 2  # narrows with more data


def test_no_resamples_means_no_bootstrap_interval_but_accuracy_keeps_its_exact_one():
    y, prob = fake(3, n=40)
    none = headline_interval("log_loss", y, prob, resamples=0)
    assert none["interval"] is None and none["low"] is None and none["high"] is None
    assert headline_interval("accuracy", y, prob, resamples=0)["interval"] == CLOPPER_PEARSON


def test_undefined_on_every_resample_gives_no_interval_not_a_crash():
    y, prob = fake(3, n=40)
    y[:] = 0  # one class only: ROC AUC is undefined on every resample
    h = headline_interval("roc_auc_ovr_macro", y, prob, resamples=20)
    assert h["interval"] is None and h["low"] is None and np.isnan(h["value"])


def test_interval_text_names_the_method():
    exact = interval_text(headline_interval("accuracy", *answers(27, 27)))
    assert exact == "95% CI 0.8723 to 1.0000, exact binomial (Clopper-Pearson) over 27 examples"
    y, prob = fake(3)
    boot = interval_text(headline_interval("f1_macro", y, prob, resamples=50))
    assert boot.startswith("95% CI ") and boot.endswith("percentile bootstrap over 50 resamples of the examples")
    assert interval_text(headline_interval("f1_macro", y, prob, resamples=0)) == ""
    old = {"metric": "accuracy", "value": 0.9, "low": 0.8, "high": 0.95, "level": 0.95, "resamples": 1000}
    assert "percentile bootstrap over 1000 resamples" in interval_text(old)  # metrics.json from before the change
