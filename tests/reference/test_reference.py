import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modelyard.reference import (
    SGD, Activation, Adam, Dense, Network, attention, causal_mask, cross_entropy_grad, cross_entropy_loss, mse_grad,
    mse_loss,
)

RNG = np.random.default_rng(0)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-12, np.abs(a) + np.abs(b))))


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences: (f(x + h e_i) - f(x - h e_i)) / 2h, one coordinate at a time."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def test_importing_the_reference_loads_no_torch():
    code = "import sys, modelyard.reference; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# ---------------------------------------------------------------- layers against finite differences


def test_dense_backward_matches_finite_differences():
    layer = Dense(RNG.normal(size=(3, 4)), RNG.normal(size=3))
    x = RNG.normal(size=(5, 4))
    upstream = RNG.normal(size=(5, 3))  # L = sum(upstream * z), so dL/dz = upstream
    loss = lambda: float((layer.forward(x) * upstream).sum())  # noqa: E731
    layer.forward(x)
    dx = layer.backward(upstream)
    assert rel_err(dx, numeric_grad(loss, x)) < 1e-6
    assert rel_err(layer.grad_weight, numeric_grad(loss, layer.weight)) < 1e-6
    assert rel_err(layer.grad_bias, numeric_grad(loss, layer.bias)) < 1e-6


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "identity"])
def test_activation_backward_matches_finite_differences(name):
    layer = Activation(name)
    z = RNG.normal(size=(4, 3))
    z[np.abs(z) < 1e-3] = 0.5  # keep relu away from its kink, where the derivative is not defined
    upstream = RNG.normal(size=z.shape)
    loss = lambda: float((layer.forward(z) * upstream).sum())  # noqa: E731
    layer.forward(z)
    assert rel_err(layer.backward(upstream), numeric_grad(loss, z)) < 1e-6


@pytest.mark.parametrize("loss, grad", [(mse_loss, mse_grad), (cross_entropy_loss, cross_entropy_grad)])
def test_loss_gradients_match_finite_differences(loss, grad):
    pred = RNG.normal(size=(4, 3))
    target = np.eye(3)[[0, 2, 1, 2]]
    assert rel_err(grad(pred, target), numeric_grad(lambda: loss(pred, target), pred)) < 1e-6


# ---------------------------------------------------------------- the whole network against torch.autograd


def random_weights(sizes):
    return [(RNG.normal(size=(o, i)), RNG.normal(size=o)) for i, o in zip(sizes, sizes[1:])]


def torch_forward(weights, x, activation, output_activation):
    acts = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z}
    params = [(torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)) for w, b in weights]
    h = torch.tensor(x)
    for i, (w, b) in enumerate(params):
        h = F.linear(h, w, b)
        h = acts[activation if i < len(params) - 1 else output_activation](h)
    return h, [p for pair in params for p in pair]


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_network_gradients_match_autograd(activation, loss):
    weights = random_weights([4, 6, 5, 3])
    x = RNG.normal(size=(7, 4))
    target = np.eye(3)[RNG.integers(0, 3, size=7)]
    out_act = "identity" if loss == "cross_entropy" else "sigmoid"
    ours, grads = Network(weights, activation=activation, output_activation=out_act, loss=loss).loss_and_grads(x, target)
    out, params = torch_forward(weights, x, activation, out_act)
    if loss == "mse":
        ref = F.mse_loss(out, torch.tensor(target))
    else:
        ref = F.cross_entropy(out, torch.tensor(target.argmax(1)))
    ref.backward()
    assert ours == pytest.approx(ref.item(), rel=1e-12)
    for g, p in zip(grads, params):
        assert rel_err(g, p.grad.numpy()) < 1e-6


def test_network_gradients_match_finite_differences():
    net = Network(random_weights([3, 4, 2]), activation="sigmoid", output_activation="sigmoid", loss="mse")
    x, t = RNG.normal(size=(2, 3)), np.array([[0.0, 1.0], [1.0, 0.0]])
    _, grads = net.loss_and_grads(x, t)
    for g, p in zip(grads, net.params()):
        assert rel_err(g, numeric_grad(lambda: mse_loss(net.forward(x), t), p)) < 1e-6


# ---------------------------------------------------------------- optimiser steps against torch.optim


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_steps_match_torch(weight_decay):
    weights = random_weights([4, 5, 3])
    x, target = RNG.normal(size=(6, 4)), np.eye(3)[RNG.integers(0, 3, size=6)]
    net = Network(weights, activation="tanh", loss="cross_entropy")
    opt = Adam(lr=0.01, weight_decay=weight_decay)
    out, params = torch_forward(weights, x, "tanh", "identity")
    topt = torch.optim.Adam(params, lr=0.01, weight_decay=weight_decay)
    for _ in range(3):  # bias correction differs at every step; check more than the first
        _, grads = net.loss_and_grads(x, target)
        opt.step(net.params(), grads)
        topt.zero_grad()
        out, _ = _forward_with(params, x)
        F.cross_entropy(out, torch.tensor(target.argmax(1))).backward()
        topt.step()
    for ours, theirs in zip(net.params(), params):
        assert rel_err(ours, theirs.detach().numpy()) < 1e-6


def test_sgd_momentum_steps_match_torch():
    weights = random_weights([3, 4, 2])
    x, target = RNG.normal(size=(5, 3)), RNG.uniform(size=(5, 2))
    net = Network(weights, activation="sigmoid", output_activation="sigmoid", loss="mse")
    opt = SGD(lr=0.5, momentum=0.9, weight_decay=0.001)
    _, params = torch_forward(weights, x, "sigmoid", "sigmoid")
    topt = torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=0.001)
    for _ in range(3):
        _, grads = net.loss_and_grads(x, target)
        opt.step(net.params(), grads)
        topt.zero_grad()
        out, _ = _forward_with(params, x, hidden="sigmoid", output="sigmoid")
        F.mse_loss(out, torch.tensor(target)).backward()
        topt.step()
    for ours, theirs in zip(net.params(), params):
        assert rel_err(ours, theirs.detach().numpy()) < 1e-6


def _forward_with(params, x, hidden="tanh", output="identity"):
    acts = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "identity": lambda z: z}
    h = torch.tensor(x)
    pairs = list(zip(params[::2], params[1::2]))
    for i, (w, b) in enumerate(pairs):
        h = acts[hidden if i < len(pairs) - 1 else output](F.linear(h, w, b))
    return h, params


# ---------------------------------------------------------------- attention


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_torch_sdpa(causal):
    q, k, v = RNG.normal(size=(2, 3, 5, 8)), RNG.normal(size=(2, 3, 5, 8)), RNG.normal(size=(2, 3, 5, 4))
    ours = attention(q, k, v, causal_mask(5) if causal else None)
    theirs = F.scaled_dot_product_attention(torch.tensor(q), torch.tensor(k), torch.tensor(v), is_causal=causal)
    assert np.max(np.abs(ours - theirs.numpy())) < 1e-10


def test_attention_with_a_boolean_and_an_additive_mask():
    q, k, v = RNG.normal(size=(4, 6)), RNG.normal(size=(7, 6)), RNG.normal(size=(7, 2))
    mask = RNG.uniform(size=(4, 7)) > 0.3
    mask[:, 0] = True  # every query keeps at least one key
    theirs = F.scaled_dot_product_attention(torch.tensor(q), torch.tensor(k), torch.tensor(v), attn_mask=torch.tensor(mask))
    assert np.max(np.abs(attention(q, k, v, mask) - theirs.numpy())) < 1e-10
    additive = np.where(mask, 0.0, -np.inf)
    assert np.max(np.abs(attention(q, k, v, additive) - theirs.numpy())) < 1e-10
    with pytest.raises(ValueError, match="shapes do not fit"):
        attention(q, k[:, :3], v)


def test_network_rejects_a_squashed_output_under_cross_entropy():
    with pytest.raises(ValueError, match="use output_activation='identity'"):
        Network(random_weights([2, 2]), output_activation="sigmoid", loss="cross_entropy")
