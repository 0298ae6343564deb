"""reference.MLP is a scikit-learn estimator: its own checks, clone, Pipeline, GridSearchCV, and clear input errors."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

from modelyard.errors import NotFittedError
from modelyard.reference import MLP


def blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(["a", "b", "c"], n // 3)
    centres = {"a": [0, 0], "b": [3, 3], "c": [0, 4]}
    return np.array([centres[c] for c in y]) + rng.normal(scale=0.6, size=(n, 2)), y


# Every check runs; none is skipped or expected to fail. The class defaults (20 epochs of Adam) already train
# each check's small data set in milliseconds; the second instance covers the mse loss and momentum SGD.
@parametrize_with_checks([MLP(), MLP(loss="mse", optimizer="sgd", activation="tanh", lr=0.05)])
def test_scikit_learn_estimator_checks(estimator, check, monkeypatch):
    # check_array_api_input skips itself unless SCIPY_ARRAY_API is set; with NumPy arrays it needs nothing more
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


def test_init_stores_arguments_only_and_fit_returns_self():
    clf = MLP(hidden_sizes=(8,), epochs=5)
    assert not any(k.endswith("_") for k in vars(clf))
    X, y = blobs()
    assert clf.fit(X, y) is clf
    assert {"network_", "classes_", "loss_curve_", "n_features_in_"} <= set(vars(clf))
    assert list(clf.classes_) == ["a", "b", "c"] and clf.n_features_in_ == 2 and len(clf.loss_curve_) == 5


@pytest.mark.parametrize("options", [
    {"optimizer": "adam", "activation": "relu"},
    {"optimizer": "sgd", "momentum": 0.9, "activation": "tanh", "lr": 0.05},
    {"loss": "mse", "activation": "sigmoid", "output_activation": "sigmoid", "lr": 0.05},
    {"weight_decay": 1e-3},
])
def test_learns_separable_blobs(options):
    X, y = blobs()
    clf = MLP(hidden_sizes=(16,), epochs=60, seed=1, **{"lr": 0.02, **options}).fit(X, y)
    assert clf.score(X, y) > 0.9
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3) and np.allclose(proba.sum(axis=1), 1)
    assert set(clf.predict(X)) <= {"a", "b", "c"}


def test_seed_makes_fitting_deterministic():
    X, y = blobs()
    a = MLP(epochs=5, seed=3).fit(X, y).predict_proba(X)
    b = MLP(epochs=5, seed=3).fit(X, y).predict_proba(X)
    c = MLP(epochs=5, seed=4).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ---------------------------------------------------------------- composes with scikit-learn's tools


def test_tags_say_a_dense_classifier():
    tags = get_tags(MLP())
    assert is_classifier(MLP()) and tags.estimator_type == "classifier"
    assert tags.classifier_tags.multi_class and not tags.input_tags.sparse and not tags.input_tags.allow_nan


def test_clone_copies_the_parameters_and_not_the_fit():
    X, y = blobs()
    fitted = MLP(hidden_sizes=(8, 4), lr=0.02, epochs=3, seed=5).fit(X, y)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert copy.get_params()["hidden_sizes"] == (8, 4) and copy.get_params()["seed"] == 5
    assert not hasattr(copy, "network_") and not hasattr(copy, "classes_")
    assert copy.set_params(epochs=7) is copy and copy.epochs == 7 and fitted.epochs == 3
    assert np.array_equal(clone(fitted).fit(X, y).predict_proba(X), fitted.predict_proba(X))


def test_a_pipeline_with_a_scaler_learns_features_on_a_large_scale():
    X, y = blobs()
    X_big = X * 1000.0 + 5000.0  # far outside the range a unit-scale initialisation expects
    pipe = make_pipeline(StandardScaler(), MLP(hidden_sizes=(16,), lr=0.02, epochs=30)).fit(X_big, y)
    assert pipe.score(X_big, y) > 0.9
    assert pipe.predict_proba(X_big).shape == (len(X), 3)
    assert list(pipe.classes_) == ["a", "b", "c"]


def test_grid_search_picks_the_learning_rate_that_learns():
    X, y = blobs()
    grid = GridSearchCV(MLP(epochs=10), {"lr": [1e-5, 0.02], "hidden_sizes": [(4,), (16,)]}, cv=3).fit(X, y)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_params_["lr"] == 0.02  # 1e-5 for 30 steps barely moves the weights off their start
    assert grid.best_score_ > 0.9
    assert grid.best_estimator_.score(X, y) > 0.9


# ---------------------------------------------------------------- bad input gives a ValueError that says what

X_OK, Y_OK = blobs()


@pytest.mark.parametrize("X, y, message", [
    (X_OK + 1j, Y_OK, "Complex data not supported"),
    ((X_OK + 1j).tolist(), Y_OK, "Complex data not supported"),
    (sp.csr_matrix(X_OK), Y_OK, r"needs dense X, got a sparse csr_matrix .*X.toarray\(\)"),
    (sp.csr_array(X_OK), Y_OK, r"needs dense X, got a sparse csr_array"),
    (X_OK, X_OK[:, 0], "Unknown label type: continuous"),
    (X_OK[:, :0], Y_OK, r"0 feature\(s\) \(shape=\(120, 0\)\) while a minimum of 1 is required"),
    (X_OK[:0], Y_OK[:0], r"0 sample\(s\)"),
    (X_OK[:, 0], Y_OK, "Expected 2D array, got 1D array"),
    (np.where(X_OK > 3, np.nan, X_OK), Y_OK, "Input X contains NaN"),
    (np.where(X_OK > 3, np.inf, X_OK), Y_OK, "Input X contains infinity"),
    (X_OK, Y_OK[:-1], r"inconsistent numbers of samples: \[120, 119\]"),
    (X_OK, np.c_[Y_OK, Y_OK], "y should be a 1d array"),
    (X_OK, None, "requires y to be passed"),
    (X_OK, np.full(len(X_OK), "a"), r"one class only \('a'\); a classifier needs at least two"),
], ids=["complex", "complex-list", "sparse-matrix", "sparse-array", "continuous-y", "no-features", "no-rows",
        "1-D", "nan", "inf", "y-too-short", "2-D-y", "no-y", "one-class"])
def test_fit_rejects_bad_data_with_a_clear_value_error(X, y, message):
    with pytest.raises(ValueError, match=message):
        MLP(epochs=1).fit(X, y)


@pytest.mark.parametrize("params, message", [
    ({"activation": "swish"}, "activation must be sigmoid, relu or tanh, got 'swish'"),
    ({"hidden_sizes": 5}, r"hidden_sizes must be a tuple of positive integers such as \(64,\)"),
    ({"hidden_sizes": (8, 0)}, "hidden_sizes must be a tuple of positive integers"),
    ({"epochs": 0}, "epochs must be a positive integer, got 0"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"optimizer": "rmsprop"}, "optimizer must be sgd or adam"),
    ({"loss": "hinge"}, "loss must be mse or cross_entropy"),
])
def test_fit_rejects_bad_hyperparameters_and_init_does_not(params, message):
    clf = MLP(**params)  # scikit-learn's rule: __init__ and set_params store, fit validates
    with pytest.raises(ValueError, match=message):
        clf.fit(X_OK, Y_OK)


def test_predict_checks_its_input_against_the_fit():
    with pytest.raises(NotFittedError, match=r"call fit\(X, y\)"):
        MLP().predict(X_OK)
    with pytest.raises(SklearnNotFittedError):  # what scikit-learn's tools catch
        MLP().predict_proba(X_OK)
    clf = MLP(epochs=1).fit(X_OK, Y_OK)
    with pytest.raises(ValueError, match="X has 5 features, but MLP is expecting 2 features"):
        clf.predict(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="Expected 2D array"):
        clf.predict(np.zeros(2))
    with pytest.raises(ValueError, match="Complex data not supported"):
        clf.predict_proba(X_OK + 1j)
    with pytest.raises(ValueError, match="needs dense X"):
        clf.predict(sp.csr_matrix(X_OK))
