"""The core algorithms written out in NumPy, no torch: read them to learn, test against them to check.

Every gradient here is checked against central finite differences and against torch.autograd in the tests;
the worked examples in docs/from-scratch.md are computed by this code.
"""

from modelyard.reference.functions import (
    attention, causal_mask, cross_entropy_grad, cross_entropy_loss, mse_grad, mse_loss, relu, relu_grad,
    sigmoid, sigmoid_grad, softmax, tanh, tanh_grad,
)
from modelyard.reference.layers import Activation, Dense
from modelyard.reference.mlp import MLP, Network
from modelyard.reference.optim import SGD, Adam, adam_step, sgd_step

__all__ = ["MLP", "Network", "Dense", "Activation", "SGD", "Adam", "sgd_step", "adam_step", "attention", "causal_mask", "softmax",
           "sigmoid", "sigmoid_grad", "relu", "relu_grad", "tanh", "tanh_grad", "mse_loss", "mse_grad",
           "cross_entropy_loss", "cross_entropy_grad"]
