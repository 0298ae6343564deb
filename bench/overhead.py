"""Quality bar: modelyard's training loop is at most 5% slower per epoch than a minimal hand-written
PyTorch loop on the same model, data, batch size and epochs.

Both loops do per epoch: a shuffled pass over the training set (forward, cross-entropy, backward,
AdamW step) and one pass over the validation set. modelyard also writes its `last` and `best`
checkpoints and history line every epoch; that is part of what it costs and is counted.
The two alternate, run by run, so machine noise hits both alike. Each round pairs one run of each; the
figure is the median over rounds of (modelyard median epoch / hand-written median epoch), with its range.

Usage: python bench/overhead.py [rounds] [epochs]
"""

import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import modelyard
from modelyard.config import load_config
from modelyard.data import build_data
from modelyard.models import create_model
from modelyard.training import Callback
from _common import machine, median, spread

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
OVERRIDES = ["train.schedule=constant", f"train.epochs={EPOCHS}", "model.dropout=0.3"]
cfg = load_config("examples/digits-lenet.yaml", OVERRIDES)
bundle = build_data(cfg.data, cfg.seed)


class EpochTimer(Callback):
    def __init__(self):
        self.times, self.t0 = [], None

    def on_train_start(self, loop):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, loop, row):
        now = time.perf_counter()
        self.times.append(now - self.t0)
        self.t0 = now


def modelyard_epochs() -> list[float]:
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as out:
        modelyard.train(cfg, output=out, callbacks=[timer], quiet=True)
    return timer.times


def hand_written_epochs() -> list[float]:
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, input_shape=bundle.input_shape, num_classes=len(bundle.labels))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    train = DataLoader(TensorDataset(bundle.train.x, bundle.train.y), batch_size=cfg.train.batch_size, shuffle=True)
    times = []
    for _ in range(EPOCHS):
        t0 = time.perf_counter()
        model.train()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_acc = (model(bundle.val.x).argmax(1) == bundle.val.y).float().mean().item()
        times.append(time.perf_counter() - t0)
    assert val_acc > 0.5
    return times


ours, theirs, ratios = [], [], []
modelyard_epochs(), hand_written_epochs()  # warm-up: first-call costs (imports, allocator) counted for neither
for r in range(ROUNDS):
    a = modelyard_epochs()[1:]  # each run's first epoch carries one-off set-up; compare steady state
    b = hand_written_epochs()[1:]
    ours += a
    theirs += b
    ratios.append(median(a) / median(b))
    print(f"round {r + 1}: modelyard {median(a):.4f} s/epoch, hand-written {median(b):.4f} s/epoch, "
          f"ratio {ratios[-1]:.3f}", flush=True)
print(f"machine: {machine()}")
print(f"model lenet5 {cfg.model.channels}, {len(bundle.train)} training examples, batch {cfg.train.batch_size}, "
      f"{EPOCHS} epochs x {ROUNDS} rounds")
print(f"modelyard   : median {median(ours):.4f} s/epoch ({spread(ours)})")
print(f"hand-written: median {median(theirs):.4f} s/epoch ({spread(theirs)})")
print(f"ratio modelyard / hand-written: median {median(ratios):.3f} over {ROUNDS} rounds "
      f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target <= 1.05")
