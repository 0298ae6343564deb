"""Optimisers and learning-rate schedules, stepped once per optimiser step."""

from __future__ import annotations

import math

import torch


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg, step: int, steps_per_epoch: int) -> float:
    """The multiplier of `cfg.lr` at optimiser step `step` (0-based), warm-up included."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "onecycle" and warm == 0:
        warm = max(1, int(0.3 * total))  # one-cycle always rises first; 30% is torch's OneCycleLR default
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** ((step - warm) // (cfg.step_size * steps_per_epoch))
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    # one-cycle: after the rise, cosine annealing from the peak down to 1/10,000 of the start (torch's default)
    floor = 1e-4 / 25
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch))
