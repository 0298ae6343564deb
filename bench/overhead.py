"""Quality bar: modelyard's training loop is at most 2% slower per epoch than a minimal hand-written
PyTorch loop on the same model, data, batch size and epochs.

Both loops do per epoch: a shuffled pass over the training set (forward, cross-entropy, backward,
AdamW step) and one pass over the validation set. modelyard also writes its history line every epoch, and
its `last` checkpoint when `train.checkpoint_every_seconds` (60 s by default) has gone by: a run of a few
seconds writes it only once, at the end, after the last epoch; that one write is timed and printed apart.
Each round runs one of each, in one process, alternating which goes first, so machine noise hits both alike.
The figure is the median over rounds of (modelyard median epoch / hand-written median epoch), with the
spread of the per-round ratios (min, max, interquartile range).

Both wall time (the figure) and the process's CPU time are measured. On a machine shared with other work,
wall time also counts the time the process waited for a core; CPU time does not, so its ratio is the steadier
one there. With `threads` 1 (torch.set_num_threads), no idle worker thread spins, so CPU time is the work done.

Usage: python bench/overhead.py [rounds >= 8] [epochs] [threads]
"""

import statistics
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

ROUNDS = max(8, int(sys.argv[1]) if len(sys.argv) > 1 else 8)
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
if len(sys.argv) > 3:
    torch.set_num_threads(int(sys.argv[3]))
TARGET = 1.02
# The demo's model and batch; no augmentation, which the hand-written loop would have to copy and which is a cost
# of the data, not of the loop.
OVERRIDES = ["train.schedule=constant", f"train.epochs={EPOCHS}", "model.dropout=0.3",
             "data.image.augment.random_crop=false"]
cfg = load_config("examples/digits-lenet.yaml", OVERRIDES)
bundle = build_data(cfg.data, cfg.seed)


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> tuple[float, float]:
    now = clocks()
    return now[0] - t0[0], now[1] - t0[1]


class EpochTimer(Callback):
    def __init__(self):
        self.times, self.t0, self.tail = [], None, None

    def on_train_start(self, loop):
        self.t0 = clocks()

    def on_epoch_end(self, loop, row):
        self.times.append(since(self.t0))
        self.t0 = clocks()

    def on_train_end(self, loop):  # after the last epoch: the checkpoint written at the end
        self.tail = since(self.t0)[0]


FINAL_SAVES = []


def modelyard_epochs() -> list[tuple[float, float]]:
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as out:
        modelyard.train(cfg, output=out, callbacks=[timer], quiet=True)
    FINAL_SAVES.append(timer.tail)
    return timer.times


def hand_written_epochs() -> list[tuple[float, float]]:
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, input_shape=bundle.input_shape, num_classes=len(bundle.labels))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    train = DataLoader(TensorDataset(bundle.train.x, bundle.train.y), batch_size=cfg.train.batch_size, shuffle=True)
    times = []
    for _ in range(EPOCHS):
        t0 = clocks()
        model.train()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_acc = (model(bundle.val.x).argmax(1) == bundle.val.y).float().mean().item()
        times.append(since(t0))
    assert val_acc > 0.5
    return times


def summary(name: str, ratios: list[float]) -> str:
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return (f"{name} ratio modelyard / hand-written: median {median(ratios):.3f} over {len(ratios)} rounds "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f}, interquartile {q1:.3f}-{q3:.3f})")


ours, theirs, wall, cpu = [], [], [], []
modelyard_epochs(), hand_written_epochs()  # warm-up: first-call costs (imports, allocator) counted for neither
FINAL_SAVES.clear()
for r in range(ROUNDS):
    if r % 2 == 0:  # alternate which loop goes first, so a drift in machine load favours neither
        a, b = modelyard_epochs()[1:], hand_written_epochs()[1:]  # first epochs carry one-off set-up
    else:
        b, a = hand_written_epochs()[1:], modelyard_epochs()[1:]
    ours += [t[0] for t in a]
    theirs += [t[0] for t in b]
    wall.append(median([t[0] for t in a]) / median([t[0] for t in b]))
    cpu.append(median([t[1] for t in a]) / median([t[1] for t in b]))
    print(f"round {r + 1}: modelyard {median([t[0] for t in a]):.4f} s/epoch, hand-written "
          f"{median([t[0] for t in b]):.4f} s/epoch, ratio {wall[-1]:.3f} (CPU time ratio {cpu[-1]:.3f})", flush=True)
print(f"machine: {machine()}")
print(f"model lenet5 {cfg.model.channels}, {len(bundle.train)} training examples, batch {cfg.train.batch_size}, "
      f"{EPOCHS} epochs x {ROUNDS} rounds, {torch.get_num_threads()} torch threads")
print(f"modelyard   : median {median(ours):.4f} s/epoch ({spread(ours)})")
print(f"hand-written: median {median(theirs):.4f} s/epoch ({spread(theirs)})")
print(f"checkpoint written at the end of each modelyard run: median {median(FINAL_SAVES):.4f} s, once per run")
print(f"wall ratios: {', '.join(f'{x:.3f}' for x in wall)}")
print(f"CPU ratios : {', '.join(f'{x:.3f}' for x in cpu)}")
print(summary("CPU-time", cpu))
print(summary("wall-time", wall) + f"; target <= {TARGET}")
