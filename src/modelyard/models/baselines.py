"""Cheap baselines, trained and evaluated through the same commands and run directory as the large models,
so a user always sees what the cheap model gets beside the expensive one."""

from __future__ import annotations

import math
from torch import nn

from modelyard.models.configs import LogRegConfig


class LogReg(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()  # (B, ...) -> (B, F)
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.head(self.flatten(x))  # softmax is in the cross-entropy loss


def logreg(cfg: LogRegConfig, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return LogReg(math.prod(input_shape), num_classes)
