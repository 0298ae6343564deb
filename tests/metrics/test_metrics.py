import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from modelyard.metrics import classification_report, expected_calibration_error, regression_report


def fake(n_classes: int, n: int = 300, seed: int = 0, skew: float = 2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += skew  # better than chance, not perfect
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, prob


def _absent_class():
    y, prob = fake(4)
    y[y == 3] = 0  # class 3 is predicted sometimes but never true
    return y, prob


def _one_class_only(n_classes: int):
    def make():
        y, prob = fake(n_classes, n=40)
        return np.full_like(y, n_classes - 1), prob
    return make


def _zero_for_the_true_class():
    y, prob = fake(3, n=60)
    prob[:5, :] = 0.0
    prob[np.arange(5), (y[:5] + 1) % 3] = 1.0  # certain, and wrong: the true class has probability exactly 0
    return y, prob


def _float32_softmax():
    y, prob = fake(5, n=200)
    return y, prob.astype(np.float32)  # rows sum to 1 only within float32 rounding


# Inputs every metric is checked on: the usual cases and the degenerate ones.
SCENARIOS = {
    "binary": lambda: fake(2),
    "3 classes": lambda: fake(3),
    "10 classes": lambda: fake(10),
    "class absent from y_true": _absent_class,
    "one class only (binary)": _one_class_only(2),
    "one class only (3 classes)": _one_class_only(3),
    "probability 0 for the true class": _zero_for_the_true_class,
    "float32 softmax": _float32_softmax,
}


def _roc_auc(y, p, d, c):
    if len(np.unique(y)) < len(c):
        return None  # scikit-learn refuses: "Only one class present in y_true"
    return skm.roc_auc_score(y, p[:, 1]) if len(c) == 2 else skm.roc_auc_score(y, p, multi_class="ovr", labels=c)


def _pr_auc(y, p, d, c):
    if len(c) == 2:
        return skm.average_precision_score(y, p[:, 1])
    return skm.average_precision_score(label_binarize(y, classes=c), p, average="macro")


# (our key, scikit-learn's answer from y, prob, pred, classes; None where it refuses)
REFERENCE = [
    ("accuracy", lambda y, p, d, c: skm.accuracy_score(y, d)),
    ("balanced_accuracy", lambda y, p, d, c: skm.balanced_accuracy_score(y, d)),
    ("precision_macro", lambda y, p, d, c: skm.precision_score(y, d, average="macro", labels=c, zero_division=0)),
    ("recall_macro", lambda y, p, d, c: skm.recall_score(y, d, average="macro", labels=c, zero_division=0)),
    ("f1_macro", lambda y, p, d, c: skm.f1_score(y, d, average="macro", labels=c, zero_division=0)),
    ("f1_micro", lambda y, p, d, c: skm.f1_score(y, d, average="micro", labels=c)),
    ("f1_weighted", lambda y, p, d, c: skm.f1_score(y, d, average="weighted", labels=c, zero_division=0)),
    ("log_loss", lambda y, p, d, c: skm.log_loss(y, p, labels=c)),
    ("roc_auc_ovr_macro", _roc_auc),
    ("pr_auc_macro", _pr_auc),
    ("confusion_matrix", lambda y, p, d, c: skm.confusion_matrix(y, d, labels=c).tolist()),
]
NOT_IN_SCIKIT_LEARN = {"n", "labels", "per_class", "ece", "roc_auc"}  # checked by the tests below


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("key, reference", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_agrees_with_scikit_learn(scenario, key, reference):
    y, prob = SCENARIOS[scenario]()
    report = classification_report(y, prob)
    p = np.asarray(prob, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    classes = np.arange(p.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = reference(y, p, p.argmax(1), classes)
    if expected is None or isinstance(expected, list):
        assert report[key] == expected
    else:
        assert report[key] == pytest.approx(expected, abs=1e-9)


def test_every_reported_key_has_a_reference():
    y, prob = fake(2)
    assert set(classification_report(y, prob)) == {k for k, _ in REFERENCE} | NOT_IN_SCIKIT_LEARN


def test_log_loss_is_finite_when_the_true_class_has_probability_zero():
    y, prob = _zero_for_the_true_class()
    report = classification_report(y, prob)
    assert np.isfinite(report["log_loss"]) and report["log_loss"] > 1.0  # five confident mistakes, clipped not inf
    assert report["log_loss"] == pytest.approx(skm.log_loss(y, prob, labels=[0, 1, 2]), abs=1e-12)


def test_binary_pr_auc_is_the_positive_class_average_precision():
    # Positive-class AP differs from the mean over both classes on these scores: the old bug.
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0])
    positive = np.array([0.1, 0.6, 0.65, 0.8, 0.3, 0.4, 0.7, 0.2])
    prob = np.c_[1 - positive, positive]  # AP: 0.9029 for class 0, 0.7556 for class 1
    report = classification_report(y, prob)
    both = np.mean([skm.average_precision_score(y == k, prob[:, k]) for k in (0, 1)])
    assert report["pr_auc_macro"] == pytest.approx(skm.average_precision_score(y, prob[:, 1]), abs=1e-12)
    assert report["pr_auc_macro"] != pytest.approx(both, abs=1e-3)


def test_rows_not_summing_to_one_raise_a_clear_error():
    y, prob = fake(3, n=10)
    scores = prob.copy()
    scores[4] *= 1.5
    with pytest.raises(ValueError, match=r"row 4 of y_prob sums to 1\.5.*apply softmax"):
        classification_report(y, scores)
    with pytest.raises(ValueError, match=r"y_prob\[2, 1\] is -0\.1"):
        classification_report(y, _set(prob, 2, 1, -0.1))
    with pytest.raises(ValueError, match=r"y_prob\[0, 0\] is nan"):
        classification_report(y, _set(prob, 0, 0, np.nan))
    with pytest.raises(ValueError, match="shaped"):
        classification_report(y, prob[:, 0])


def _set(prob, row, col, value):
    out = prob.copy()
    out[row, col] = value
    return out


def test_rows_off_by_rounding_are_rescaled_not_rejected():
    y, prob = fake(3, n=50)
    nudged = prob * (1 + 5e-5)  # within the tolerance
    assert classification_report(y, nudged)["log_loss"] == pytest.approx(classification_report(y, prob)["log_loss"],
                                                                        abs=1e-12)


def test_per_class_confusion_and_binary_auc():
    y, prob = fake(3)
    report = classification_report(y, prob, labels=["a", "b", "c"])
    pred = prob.argmax(1)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=[0, 1, 2])
    for i, lab in enumerate("abc"):
        assert report["per_class"][lab]["precision"] == pytest.approx(p[i], abs=1e-9)
        assert report["per_class"][lab]["recall"] == pytest.approx(r[i], abs=1e-9)
        assert report["per_class"][lab]["f1"] == pytest.approx(f[i], abs=1e-9)
        assert report["per_class"][lab]["support"] == s[i]
    yb, pb = fake(2)
    assert classification_report(yb, pb)["roc_auc"] == pytest.approx(skm.roc_auc_score(yb, pb[:, 1]), abs=1e-12)


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


def test_label_names_as_truth():
    y, prob = fake(3)
    names = np.array(["a", "b", "c"])[y]
    assert classification_report(names, prob, labels=["a", "b", "c"])["accuracy"] == classification_report(y, prob)["accuracy"]
    with pytest.raises(ValueError, match="not among the labels"):
        classification_report(["a", "zzz"], prob[:2], labels=["a", "b", "c"])


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right): bins (0.8667,0.9333] and (0.5333,0.6]
    prob = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])
    y = np.array([0, 1, 1])
    expected = (2 / 3) * abs(0.5 - 0.9) + (1 / 3) * abs(1.0 - 0.6)
    assert expected_calibration_error(y, prob, bins=15) == pytest.approx(expected, abs=1e-12)
    assert classification_report(y, prob, ece_bins=15)["ece"] == pytest.approx(expected, abs=1e-12)
    perfect = np.eye(3)[[0, 1, 2]]
    assert expected_calibration_error(np.arange(3), perfect) == 0.0


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
