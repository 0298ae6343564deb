"""Cheap baselines, trained and evaluated through the same commands and run directory as the large models,
so a user always sees what the cheap model gets beside the expensive one."""

from __future__ import annotations

import math
from typing import Literal

from torch import nn

from modelyard.models.base import ModelConfigBase, register_model


class LogRegConfig(ModelConfigBase):
    """Multinomial logistic regression on the flattened, standardised inputs; L2 through train.weight_decay."""

    name: Literal["logreg"] = "logreg"


class LogReg(nn.Module):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()  # (B, ...) -> (B, F)
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.head(self.flatten(x))  # softmax is in the cross-entropy loss


@register_model("logreg", config=LogRegConfig, head="head", reads=("image", "sequence", "tabular"))
def logreg(cfg: LogRegConfig, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return LogReg(math.prod(input_shape), num_classes)
