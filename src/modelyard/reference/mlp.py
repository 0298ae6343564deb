"""A multi-layer perceptron in NumPy: forward, back-propagation, mini-batch training.

`Network` is the mechanism (explicit weights in, loss and gradients out), used by the worked examples.
`MLP` is a scikit-learn estimator around it: `__init__` only stores its arguments, `fit` returns self,
learned state ends in `_`, and scikit-learn's own validation turns bad input into a ValueError that says what.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from modelyard.errors import NotFittedError
from modelyard.reference.functions import (
    ACTIVATIONS, cross_entropy_grad, cross_entropy_loss, mse_grad, mse_loss, softmax,
)
from modelyard.reference.layers import Activation, Dense
from modelyard.reference.optim import SGD, Adam

LOSSES = {"mse": (mse_loss, mse_grad), "cross_entropy": (cross_entropy_loss, cross_entropy_grad)}


class Network:
    """Dense layers with an activation after each hidden layer and `output_activation` after the last.

    Args:
        weights: [(W1, b1), (W2, b2), ...] with W shaped (out, in).
        activation: hidden activation: sigmoid, relu, tanh.
        output_activation: identity (logits; required with cross_entropy, whose softmax is in the loss) or
            sigmoid, relu, tanh.
        loss: "mse" or "cross_entropy" (softmax + negative log-likelihood).
    """

    def __init__(self, weights, *, activation: str = "sigmoid", output_activation: str = "identity",
                 loss: str = "mse") -> None:
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose mse or cross_entropy")
        if loss == "cross_entropy" and output_activation != "identity":
            raise ValueError("cross_entropy applies softmax itself: use output_activation='identity'")
        self.loss_name = loss
        self.loss_fn, self.loss_grad = LOSSES[loss]
        self.dense = [Dense(np.array(w, dtype=np.float64), np.array(b, dtype=np.float64)) for w, b in weights]
        for prev, nxt in zip(self.dense, self.dense[1:]):
            if nxt.weight.shape[1] != prev.weight.shape[0]:
                raise ValueError(f"layer widths do not chain: {prev.weight.shape} then {nxt.weight.shape}")
        self.layers: list = []
        for i, d in enumerate(self.dense):
            self.layers += [d, Activation(activation if i < len(self.dense) - 1 else output_activation)]

    def params(self) -> list[np.ndarray]:
        return [p for d in self.dense for p in (d.weight, d.bias)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """Every intermediate: [x, z1, a1, z2, a2, ...], for worked examples."""
        out = [x]
        for layer in self.layers:
            out.append(layer.forward(out[-1]))
        return out

    def loss_and_grads(self, x: np.ndarray, target: np.ndarray) -> tuple[float, list[np.ndarray]]:
        """Forward, loss, and back-propagation: dL/dp for every p in `params()`, in that order."""
        out = self.forward(x)
        loss = self.loss_fn(out, target)
        g = self.loss_grad(out, target)
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return loss, [p for d in self.dense for p in (d.grad_weight, d.grad_bias)]

    def predict_output(self, x: np.ndarray) -> np.ndarray:
        out = self.forward(x)
        return softmax(out, axis=1) if self.loss_name == "cross_entropy" else out


class MLP(ClassifierMixin, BaseEstimator):
    """A NumPy multi-layer perceptron classifier, a scikit-learn estimator.

    It works with `clone`, `Pipeline` and `GridSearchCV` and passes `sklearn.utils.estimator_checks`.

    Args:
        hidden_sizes: width of each hidden layer; () gives softmax regression.
        activation: sigmoid, relu or tanh for the hidden layers.
        loss: "cross_entropy" (softmax output) or "mse" (against one-hot targets; output_activation applies).
        output_activation: with mse, the output layer's activation (default sigmoid).
        optimizer: "sgd" (with `momentum`) or "adam".
        weight_decay: L2 penalty, added to the gradient as torch.optim does.
        batch_size, epochs, lr, seed: mini-batch training; `seed` fixes the initial weights and the batch order.

    Attributes:
        classes_: the class labels, in the order of `predict_proba`'s columns.
        n_features_in_: the number of features seen by `fit`.
        network_: the trained `Network`.
        loss_curve_: the mean training loss of each epoch.

    Example:
        >>> clf = MLP(hidden_sizes=(32,), epochs=30).fit(X_train, y_train)
        >>> clf.predict(X_test)
    """

    def __init__(self, hidden_sizes=(32,), *, activation: str = "relu", loss: str = "cross_entropy",
                 output_activation: str = "sigmoid", optimizer: str = "adam", lr: float = 1e-3,
                 momentum: float = 0.9, weight_decay: float = 0.0, batch_size: int = 32, epochs: int = 20,
                 seed: int = 0) -> None:
        self.hidden_sizes = hidden_sizes
        self.activation = activation
        self.loss = loss
        self.output_activation = output_activation
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed

    def _check_params(self) -> None:
        sizes = self.hidden_sizes
        if not (isinstance(sizes, (tuple, list)) and all(isinstance(h, Integral) and h > 0 for h in sizes)):
            raise ValueError(f"hidden_sizes must be a tuple of positive integers such as (64,) or (128, 64), "
                             f"got {sizes!r}")
        if self.activation not in ("sigmoid", "relu", "tanh"):
            raise ValueError(f"activation must be sigmoid, relu or tanh, got {self.activation!r}")
        if self.output_activation not in ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {', '.join(ACTIVATIONS)}, got {self.output_activation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be mse or cross_entropy, got {self.loss!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        for name in ("batch_size", "epochs"):
            if not isinstance(getattr(self, name), Integral) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")

    def fit(self, X, y) -> "MLP":
        """Train on X (N, features) and labels y (N,). Returns self.

        Raises:
            ValueError: bad hyperparameters; X sparse, complex, not 2-D, empty, with no feature or not finite;
                y not one class label per row, continuous, or holding one class only.
        """
        self._check_params()
        _reject_sparse_and_complex(X)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y holds one class only ({self.classes_.tolist()[0]!r}); a classifier needs at least two")
        target = np.eye(len(self.classes_))[y_idx]  # (N, classes) one-hot
        rng = np.random.default_rng(self.seed)
        self.network_ = self._init_network(rng)
        opt = (Adam(self.lr, weight_decay=self.weight_decay) if self.optimizer == "adam"
               else SGD(self.lr, momentum=self.momentum, weight_decay=self.weight_decay))
        params = self.network_.params()
        self.loss_curve_ = []
        for _ in range(self.epochs):
            order = rng.permutation(len(X))
            total = 0.0
            for start in range(0, len(X), self.batch_size):
                idx = order[start:start + self.batch_size]
                loss, grads = self.network_.loss_and_grads(X[idx], target[idx])
                opt.step(params, grads)
                total += loss * len(idx)
            self.loss_curve_.append(total / len(X))
        return self

    def _init_network(self, rng: np.random.Generator) -> Network:
        sizes = [self.n_features_in_, *self.hidden_sizes, len(self.classes_)]
        weights = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            bound = 1.0 / np.sqrt(n_in)  # torch.nn.Linear's default uniform initialisation
            weights.append((rng.uniform(-bound, bound, (n_out, n_in)), rng.uniform(-bound, bound, n_out)))
        out_act = "identity" if self.loss == "cross_entropy" else self.output_activation
        return Network(weights, activation=self.activation, output_activation=out_act, loss=self.loss)

    def predict_proba(self, X) -> np.ndarray:
        """(N, classes) class probabilities, columns in `classes_` order. With mse, the outputs are
        clipped at 0 and scaled to sum to 1, a probability only by courtesy."""
        try:
            check_is_fitted(self)
        except SklearnNotFittedError:
            raise _NotFittedError("this MLP is not fitted yet: call fit(X, y) before predicting") from None
        _reject_sparse_and_complex(X)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = self.network_.predict_output(X)
        if self.loss == "mse":
            out = np.clip(out, 0, None) + 1e-12
            out = out / out.sum(axis=1, keepdims=True)
        return out

    def predict(self, X) -> np.ndarray:
        """The predicted class of each row of X."""
        proba = self.predict_proba(X)  # first: it says clearly when the model is not fitted
        return self.classes_[proba.argmax(axis=1)]


class _NotFittedError(NotFittedError, SklearnNotFittedError):
    """Caught as modelyard's NotFittedError and as scikit-learn's, which its tools and checks expect."""


def _reject_sparse_and_complex(X) -> None:
    """Say plainly what check_array says with a TypeError (sparse) or with the whole array printed (complex)."""
    if issparse(X):
        raise ValueError(f"MLP needs dense X, got a sparse {type(X).__name__} of shape {X.shape}: the reference "
                         "MLP does dense NumPy arithmetic; pass X.toarray() if it fits in memory")
    try:
        complex_ = np.iscomplexobj(X)
    except (TypeError, ValueError):  # ragged or odd input: validate_data says what is wrong with it
        return
    if complex_:
        raise ValueError("Complex data not supported: X holds complex numbers; the MLP needs real ones "
                         "(pass X.real, np.abs(X), or the real and imaginary parts as separate columns)")
