"""Small convolutional networks: LeNet-5, a CIFAR-style CNN and a 1-D CNN for sequences."""

from __future__ import annotations

import torch
from torch import nn

from modelyard.errors import ModelError
from modelyard.models.configs import CifarCNNConfig, LeNet5Config, Mnist1DCNNConfig
from modelyard.models.layers import activation, dense_layers, flat_size


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ModelError(
            f"model {name!r} needs images shaped (channels, height, width), got examples shaped {input_shape}; "
            "use an image data source or the 'mlp' model"
        )
    return input_shape  # type: ignore[return-value]


class LeNet5(nn.Module):
    """LeNet-5: two conv/pool stages and three fully connected layers.

    28x28 and larger inputs get the classic 5x5 kernels; inputs under 16 pixels (the 8x8 digits)
    would vanish under two 5x5 convolutions, so they get 3x3 kernels with padding instead.
    """

    def __init__(self, cfg: LeNet5Config, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        small = min(h, w) < 16
        k, pad1, pad2 = (3, 1, 1) if small else (5, 2 if min(h, w) < 32 else 0, 0)
        c1, c2 = cfg.channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, k, padding=pad1), activation(cfg.activation), nn.MaxPool2d(2),  # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, k, padding=pad2), activation(cfg.activation), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        layers, width = dense_layers(flat_size(self.features, input_shape), cfg.hidden_sizes, cfg.activation,
                                     cfg.dropout)
        self.fc = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.fc(self.features(x)))


def lenet5(cfg: LeNet5Config, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    shape = _image_shape("lenet5", input_shape)
    if min(shape[1:]) < 4:
        raise ModelError(f"lenet5 needs images of at least 4x4 pixels, got {shape[1]}x{shape[2]}")
    return LeNet5(cfg, shape, num_classes)


class CifarCNN(nn.Module):
    """Conv blocks (conv-BN-act x2, max-pool) for 32x32 RGB images; any size whose blocks fit works."""

    def __init__(self, cfg: CifarCNNConfig, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c = input_shape[0]
        for out in cfg.channels:
            blocks += [
                nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), activation(cfg.activation),
                nn.Conv2d(out, out, 3, padding=1), nn.BatchNorm2d(out), activation(cfg.activation),
                nn.MaxPool2d(2),  # halves H and W
            ]
            c = out
        self.features = nn.Sequential(*blocks, nn.Flatten())
        layers, width = dense_layers(flat_size(self.features, input_shape), cfg.hidden_sizes, cfg.activation,
                                     cfg.dropout)
        self.fc = nn.Sequential(*([nn.Dropout(cfg.dropout)] if cfg.dropout else []), *layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.fc(self.features(x)))


def cifar_cnn(cfg: CifarCNNConfig, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    shape = _image_shape("cifar-cnn", input_shape)
    need = 2 ** len(cfg.channels)
    if min(shape[1:]) < need:
        raise ModelError(
            f"cifar-cnn with {len(cfg.channels)} blocks halves the image {len(cfg.channels)} times and needs at "
            f"least {need}x{need} pixels, got {shape[1]}x{shape[2]}; resize with data.image.size or use fewer "
            "model.channels"
        )
    return CifarCNN(cfg, shape, num_classes)


class Mnist1DCNN(nn.Module):
    """1-D convolutions (conv-BN-act, stride 1) then global average and max pooling over time."""

    def __init__(self, cfg: Mnist1DCNNConfig, in_channels: int, num_classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c = in_channels
        for out in cfg.channels:
            blocks += [
                nn.Conv1d(c, out, cfg.kernel_size, padding=cfg.kernel_size // 2),
                nn.BatchNorm1d(out),
                activation(cfg.activation),
            ]
            c = out
        self.features = nn.Sequential(*blocks)  # (B, C, L)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(1)  # (B, L) -> (B, 1, L)
        h = self.features(x)  # (B, C, L)
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)  # (B, 2C)
        return self.head(self.dropout(pooled))


def mnist1d_cnn(cfg: Mnist1DCNNConfig, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) not in (1, 2):
        raise ModelError(
            f"mnist1d-cnn needs sequences shaped (channels, length) or (length,), got {input_shape}"
        )
    return Mnist1DCNN(cfg, input_shape[0] if len(input_shape) == 2 else 1, num_classes)
