"""ResNet-18 and ResNet-50 from torchvision with a new head for the number of classes."""

from __future__ import annotations

from torch import nn
from torchvision import models as tv

from modelyard.models.cnn import _image_shape
from modelyard.models.configs import ResNet18Config, ResNet50Config, ResNetConfig


def _build(arch, cfg: ResNetConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c, h, w = _image_shape(cfg.name, input_shape)
    net = arch(weights=None, num_classes=num_classes)  # never downloads: weights come from model.pretrained
    small = cfg.stem == "small" or (cfg.stem == "auto" and min(h, w) < 64)
    if small:
        net.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif c != 3:
        net.conv1 = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
    return net


def resnet18(cfg: ResNet18Config, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _build(tv.resnet18, cfg, input_shape, num_classes)


def resnet50(cfg: ResNet50Config, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _build(tv.resnet50, cfg, input_shape, num_classes)
