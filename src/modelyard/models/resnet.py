"""ResNet-18 and ResNet-50 from torchvision with a new head for the number of classes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn
from torchvision import models as tv

from modelyard.models.base import ModelConfigBase, register_model
from modelyard.models.cnn import _image_shape


class ResNetConfig(ModelConfigBase):
    name: str
    stem: Literal["auto", "imagenet", "small"] = Field(
        "auto",
        description="'small' swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 conv (CIFAR-style); "
        "'auto' picks it for images under 64 pixels.",
    )


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


class ResNet18Config(ResNetConfig):
    name: Literal["resnet18"] = "resnet18"


class ResNet50Config(ResNetConfig):
    name: Literal["resnet50"] = "resnet50"


@register_model("resnet18", config=ResNet18Config, head="fc", reads=("image",))
def resnet18(cfg: ResNet18Config, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _build(tv.resnet18, cfg, input_shape, num_classes)


@register_model("resnet50", config=ResNet50Config, head="fc", reads=("image",))
def resnet50(cfg: ResNet50Config, *, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _build(tv.resnet50, cfg, input_shape, num_classes)
