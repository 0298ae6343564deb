import numpy as np
import pytest
from sklearn import metrics as skm

from modelyard.metrics import bootstrap_ci, classification_report, expected_calibration_error, regression_report


def fake(n_classes: int, n: int = 300, seed: int = 0, skew: float = 2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += skew  # better than chance, not perfect
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, prob


# (our key, reference computed by scikit-learn from y, prob, pred)
REFERENCE = [
    ("accuracy", lambda y, p, d, c: skm.accuracy_score(y, d)),
    ("balanced_accuracy", lambda y, p, d, c: skm.balanced_accuracy_score(y, d)),
    ("precision_macro", lambda y, p, d, c: skm.precision_score(y, d, average="macro", labels=c, zero_division=0)),
    ("recall_macro", lambda y, p, d, c: skm.recall_score(y, d, average="macro", labels=c, zero_division=0)),
    ("f1_macro", lambda y, p, d, c: skm.f1_score(y, d, average="macro", labels=c, zero_division=0)),
    ("f1_micro", lambda y, p, d, c: skm.f1_score(y, d, average="micro", labels=c)),
    ("f1_weighted", lambda y, p, d, c: skm.f1_score(y, d, average="weighted", labels=c, zero_division=0)),
    ("log_loss", lambda y, p, d, c: skm.log_loss(y, p, labels=c)),
    ("roc_auc_ovr_macro", lambda y, p, d, c: skm.roc_auc_score(y, p[:, 1]) if len(c) == 2
     else skm.roc_auc_score(y, p, multi_class="ovr", average="macro")),
    ("pr_auc_macro", lambda y, p, d, c: np.mean([skm.average_precision_score(y == k, p[:, k]) for k in c])),
]


@pytest.mark.parametrize("n_classes", [2, 3, 10])
@pytest.mark.parametrize("key, reference", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_agrees_with_scikit_learn(n_classes, key, reference):
    y, prob = fake(n_classes)
    report = classification_report(y, prob)
    classes = np.arange(n_classes)
    assert report[key] == pytest.approx(reference(y, prob, prob.argmax(1), classes), abs=1e-9)


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_fast_f1_macro_matches_scikit_learn(n_classes):
    from modelyard.metrics.classification import f1_macro

    y, prob = fake(n_classes, n=50, skew=0.5)
    pred = prob.argmax(1)
    expected = skm.f1_score(y, pred, labels=np.arange(n_classes), average="macro", zero_division=0)
    assert f1_macro(y, pred, n_classes) == pytest.approx(expected, abs=1e-12)
    y[y == 0] = 1  # a class absent from the truth
    expected = skm.f1_score(y, pred, labels=np.arange(n_classes), average="macro", zero_division=0)
    assert f1_macro(y, pred, n_classes) == pytest.approx(expected, abs=1e-12)


def test_per_class_confusion_and_binary_auc():
    y, prob = fake(3)
    report = classification_report(y, prob, labels=["a", "b", "c"])
    pred = prob.argmax(1)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2])
    for i, lab in enumerate("abc"):
        assert report["per_class"][lab]["f1"] == pytest.approx(f[i], abs=1e-9)
        assert report["per_class"][lab]["support"] == s[i]
    assert report["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    yb, pb = fake(2)
    assert classification_report(yb, pb)["roc_auc"] == pytest.approx(skm.roc_auc_score(yb, pb[:, 1]), abs=1e-12)


def test_label_names_as_truth():
    y, prob = fake(3)
    names = np.array(["a", "b", "c"])[y]
    assert classification_report(names, prob, labels=["a", "b", "c"])["accuracy"] == classification_report(y, prob)["accuracy"]
    with pytest.raises(ValueError, match="not among the labels"):
        classification_report(["a", "zzz"], prob[:2], labels=["a", "b", "c"])


def test_absent_class_gives_undefined_auc_not_a_crash():
    y, prob = fake(3)
    y[y == 2] = 0
    report = classification_report(y, prob)
    assert report["roc_auc_ovr_macro"] is None
    assert report["per_class"]["2"]["support"] == 0


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right): bins (0.8667,0.9333] and (0.5333,0.6]
    prob = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    y = np.array([0, 1, 1])
    expected = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.6)
    assert expected_calibration_error(y, prob, bins=15) == pytest.approx(expected, abs=1e-12)
    perfect = np.eye(3)[[0, 1, 2]]
    assert expected_calibration_error(np.arange(3), perfect) == 0.0


def test_bootstrap_interval_is_seeded_and_brackets_the_value():
    y, prob = fake(4)
    a = bootstrap_ci("accuracy", y, prob, resamples=1000, seed=3)
    b = bootstrap_ci("accuracy", y, prob, resamples=1000, seed=3)
    assert a == b
    assert a["low"] < a["value"] < a["high"]
    f1 = bootstrap_ci("f1_macro", y, prob, resamples=200, seed=3)
    assert f1["low"] < f1["value"] < f1["high"]
    # the interval narrows with more data
    y2, prob2 = fake(4, n=3000)
    wide, narrow = a["high"] - a["low"], (lambda c: c["high"] - c["low"])(bootstrap_ci("accuracy", y2, prob2, seed=3))
    assert narrow < wide / 2


def test_regression_report_agrees_with_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.normal(size=100)
    p = y + rng.normal(scale=0.3, size=100)
    r = regression_report(y, p)
    assert r["mse"] == pytest.approx(skm.mean_squared_error(y, p), abs=1e-12)
    assert r["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), abs=1e-12)
    assert r["mae"] == pytest.approx(skm.mean_absolute_error(y, p), abs=1e-12)
    assert r["r2"] == pytest.approx(skm.r2_score(y, p), abs=1e-12)
    with pytest.raises(ValueError, match="shaped"):
        regression_report([1, 2], [1])
