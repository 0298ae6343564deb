"""docs/from-scratch.md is exactly what docs/from_scratch.py writes, and its numbers are right."""

import importlib.util

import numpy as np
import torch
import torch.nn.functional as F

from tests.conftest import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("from_scratch", ROOT / "docs" / "from_scratch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_document_matches_its_script():
    doc = load_script()
    assert (ROOT / "docs" / "from-scratch.md").read_text() == doc.render(), \
        "docs/from-scratch.md is stale: run `python docs/from_scratch.py`"


def test_worked_example_agrees_with_autograd():
    doc = load_script()
    e = doc.example_network()
    w1, b1, w2, b2 = (torch.tensor(a, requires_grad=True) for a in (doc.W1, doc.B1, doc.W2, doc.B2))
    out = torch.sigmoid(F.linear(torch.sigmoid(F.linear(torch.tensor(doc.X), w1, b1)), w2, b2))
    loss = F.mse_loss(out, torch.tensor(doc.T))
    loss.backward()
    assert abs(e["loss"] - loss.item()) < 1e-12
    for ours, theirs in ((e["gW1"], w1), (e["gb1"], b1), (e["gW2"], w2), (e["gb2"], b2)):
        assert np.allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)
    # the hand-written deltas shown on the page are the bias gradients the code computes
    assert np.allclose(e["delta2"][0], e["gb2"]) and np.allclose(e["delta1"][0], e["gb1"])
