"""Writes docs/from-scratch.md: every number in it is computed here by modelyard.reference.

    python docs/from_scratch.py          # rewrite the document
tests/reference/test_docs_numbers.py fails if the document and this script disagree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelyard.reference import Adam, Network, attention, causal_mask, softmax

OUT = Path(__file__).with_name("from-scratch.md")

# The 3-4-2 network of the worked example: sigmoid everywhere, mean squared error, SGD.
X = np.array([[1.0, 2.0, 3.0]])
T = np.array([[0.0, 1.0]])
W1 = np.array([[0.1, -0.2, 0.3], [0.0, 0.1, -0.1], [-0.3, 0.2, 0.1], [0.2, 0.2, -0.2]])
B1 = np.array([0.1, 0.0, -0.1, 0.05])
W2 = np.array([[0.3, -0.1, 0.2, 0.4], [-0.2, 0.5, 0.1, -0.3]])
B2 = np.array([0.0, 0.1])
LR = 0.5
ADAM_LR = 0.1
Q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
K = np.array([[1.0, 1.0], [0.0, 2.0], [1.0, -1.0]])
V = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])


def fmt(a) -> str:
    a = np.atleast_1d(np.asarray(a, dtype=np.float64))
    if a.ndim == 1:
        return "[" + ", ".join(f"{v:.6f}" for v in a) + "]"
    return "[" + ",\n ".join(fmt(row) for row in a) + "]"


def block(name: str, value) -> str:
    return f"{name} =\n{fmt(value)}"


def example_network() -> dict:
    net = Network([(W1, B1), (W2, B2)], activation="sigmoid", output_activation="sigmoid", loss="mse")
    _, z1, a1, z2, a2 = net.activations(X)
    loss, (gW1, gb1, gW2, gb2) = net.loss_and_grads(X, T)
    d_out = 2 * (a2 - T) / a2.size
    delta2 = d_out * a2 * (1 - a2)
    delta1 = (delta2 @ W2) * a1 * (1 - a1)
    return dict(net=net, z1=z1, a1=a1, z2=z2, a2=a2, loss=loss, d_out=d_out, delta2=delta2, delta1=delta1,
                gW1=gW1, gb1=gb1, gW2=gW2, gb2=gb2)


def render() -> str:
    e = example_network()
    new_W1, new_b1 = W1 - LR * e["gW1"], B1 - LR * e["gb1"]
    new_W2, new_b2 = W2 - LR * e["gW2"], B2 - LR * e["gb2"]
    after = Network([(new_W1, new_b1), (new_W2, new_b2)], activation="sigmoid", output_activation="sigmoid", loss="mse")
    loss_after, _ = after.loss_and_grads(X, T)

    adam_net = Network([(W1, B1), (W2, B2)], activation="sigmoid", output_activation="sigmoid", loss="mse")
    _, grads = adam_net.loss_and_grads(X, T)
    adam = Adam(lr=ADAM_LR)
    adam.step(adam_net.params(), grads)

    scores = Q @ K.T / np.sqrt(Q.shape[1])
    masked = np.where(causal_mask(3), scores, -np.inf)
    weights = softmax(masked, axis=-1)
    out = attention(Q, K, V, causal_mask(3))

    return f"""# From scratch: a neural network by hand, checked by machine

Every number on this page is computed by `modelyard.reference` (NumPy only), written out by
`docs/from_scratch.py`, and checked by `tests/reference/test_docs_numbers.py`: the page cannot drift from the
code. The code itself is checked against central finite differences and against `torch.autograd` and
`torch.optim` (to 1e-6 relative error in float64) and `torch.nn.functional.scaled_dot_product_attention` (to 1e-10).
Worked examples in textbooks often carry arithmetic slips; these do not, because nobody did the arithmetic by hand.

Conventions: a weight matrix `W` is shaped (outputs, inputs), as `torch.nn.Linear` stores it, so a layer computes
`z = W x + b`. Numbers are rounded to six decimals for display only.

## 1. A 3-4-2 sigmoid network, one step of gradient descent

Input `x = {fmt(X[0])}`, target `t = {fmt(T[0])}`, sigmoid `s(z) = 1 / (1 + e^-z)` after both layers, loss the
mean squared error over the two outputs, `L = (1/2) sum_k (a2_k - t_k)^2`, and plain gradient descent with
learning rate {LR}.

```text
{block("W1 (4x3)", W1)}
{block("b1", B1)}
{block("W2 (2x4)", W2)}
{block("b2", B2)}
```

### Forward pass

```text
{block("z1 = W1 x + b1", e["z1"][0])}
{block("a1 = s(z1)", e["a1"][0])}
{block("z2 = W2 a1 + b2", e["z2"][0])}
{block("a2 = s(z2)  (the output)", e["a2"][0])}
L = {e["loss"]:.6f}
```

### Backward pass (the chain rule, layer by layer)

```text
{block("dL/da2 = 2 (a2 - t) / 2", e["d_out"][0])}
{block("delta2 = dL/dz2 = dL/da2 * s'(z2),  s'(z) = s(z) (1 - s(z))", e["delta2"][0])}
{block("dL/dW2 = delta2 a1^T", e["gW2"])}
{block("dL/db2 = delta2", e["gb2"])}
{block("delta1 = dL/dz1 = (W2^T delta2) * s'(z1)", e["delta1"][0])}
{block("dL/dW1 = delta1 x^T", e["gW1"])}
{block("dL/db1 = delta1", e["gb1"])}
```

### The update, `w <- w - {LR} dL/dw`

```text
{block("W1", new_W1)}
{block("b1", new_b1)}
{block("W2", new_W2)}
{block("b2", new_b2)}
```

The loss falls from {e["loss"]:.6f} to {loss_after:.6f} after this one step.

## 2. One Adam step on the same network

Adam keeps a running mean `m` and a running mean of squares `v` of each gradient and divides one by the square
root of the other, with bias correction for their zero start (learning rate {ADAM_LR}, betas 0.9 and 0.999,
eps 1e-8):

```text
m <- 0.9 m + 0.1 g                 v <- 0.999 v + 0.001 g^2
m_hat = m / (1 - 0.9^t)            v_hat = v / (1 - 0.999^t)
w <- w - lr m_hat / (sqrt(v_hat) + eps)
```

At the first step (t = 1), `m_hat = g` and `v_hat = g^2`, so every weight moves by almost exactly `lr` against
the sign of its gradient, however small that gradient is. From the gradients of section 1:

```text
{block("m (for W2)", adam.m[2])}
{block("v (for W2)", adam.v[2])}
{block("W2 after one Adam step", adam_net.params()[2])}
{block("b2 after one Adam step", adam_net.params()[3])}
```

## 3. Scaled dot-product attention with a causal mask

`attention(Q, K, V) = softmax(Q K^T / sqrt(d) + M) V`, where `M` is 0 where a query may look at a key and
`-inf` where it may not. The causal mask lets token `i` attend to tokens `j <= i` only. Three tokens, `d = 2`:

```text
{block("Q", Q)}
{block("K", K)}
{block("V", V)}
{block("scores = Q K^T / sqrt(2)", scores)}
{block("weights = softmax(scores + M), row by row", weights)}
{block("output = weights V", out)}
```

The first token can only see itself, so its output is its own value row; the third sees all three.
"""


if __name__ == "__main__":
    OUT.write_text(render())
    print(OUT)
