"""The config section of every model family, and its registration. No torch here: see `models/base.py`.

One argument vocabulary: `hidden_sizes`, `channels`, `activation`, `dropout` mean the same in every family.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelyard.models.base import Activation, ModelConfigBase, Width, register_model

IMAGE_SEQUENCE_TABLE = ("image", "sequence", "tabular")


@register_model("mlp", factory="modelyard.models.mlp:mlp", head="head", reads=IMAGE_SEQUENCE_TABLE)
class MLPConfig(ModelConfigBase):
    name: Literal["mlp"] = "mlp"
    hidden_sizes: list[Width] = Field(default_factory=lambda: [128, 64], description="Width of each hidden layer.")
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@register_model("logreg", factory="modelyard.models.baselines:logreg", head="head", reads=IMAGE_SEQUENCE_TABLE)
class LogRegConfig(ModelConfigBase):
    """Multinomial logistic regression on the flattened, standardised inputs; L2 through train.weight_decay."""

    name: Literal["logreg"] = "logreg"


@register_model("lenet5", factory="modelyard.models.cnn:lenet5", head="head", reads=("image",))
class LeNet5Config(ModelConfigBase):
    name: Literal["lenet5"] = "lenet5"
    channels: list[Width] = Field(default_factory=lambda: [6, 16], min_length=2, max_length=2)
    hidden_sizes: list[Width] = Field(default_factory=lambda: [120, 84])
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@register_model("cifar-cnn", factory="modelyard.models.cnn:cifar_cnn", head="head", reads=("image",))
class CifarCNNConfig(ModelConfigBase):
    name: Literal["cifar-cnn"] = "cifar-cnn"
    channels: list[Width] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    hidden_sizes: list[Width] = Field(default_factory=lambda: [256])
    activation: Activation = "relu"
    dropout: float = Field(0.25, ge=0.0, lt=1.0)


@register_model("mnist1d-cnn", factory="modelyard.models.cnn:mnist1d_cnn", head="head", reads=("sequence",))
class Mnist1DCNNConfig(ModelConfigBase):
    name: Literal["mnist1d-cnn"] = "mnist1d-cnn"
    channels: list[Width] = Field(default_factory=lambda: [64, 64, 64, 64], min_length=1)
    kernel_size: int = Field(5, ge=1, le=1024)
    activation: Activation = "gelu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class ResNetConfig(ModelConfigBase):
    name: str
    stem: Literal["auto", "imagenet", "small"] = Field(
        "auto",
        description="'small' swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 conv (CIFAR-style); "
        "'auto' picks it for images under 64 pixels.",
    )


@register_model("resnet18", factory="modelyard.models.resnet:resnet18", head="fc", reads=("image",))
class ResNet18Config(ResNetConfig):
    name: Literal["resnet18"] = "resnet18"


@register_model("resnet50", factory="modelyard.models.resnet:resnet50", head="fc", reads=("image",))
class ResNet50Config(ResNetConfig):
    name: Literal["resnet50"] = "resnet50"


class TransformerSizes(ModelConfigBase):
    """The size fields shared by the Transformers built here (text-transformer, gpt)."""

    d_model: Width = Field(128, description="Width of the token representations.")
    n_layers: int = Field(2, ge=1, le=1024)
    n_heads: int = Field(4, ge=1, le=1024)
    ff_mult: int = Field(4, ge=1, le=64, description="The MLP's hidden width is ff_mult * d_model.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        return self


@register_model("text-transformer", factory="modelyard.models.transformer:text_transformer", head="head",
                reads=("text",))
class TextTransformerConfig(TransformerSizes):
    name: Literal["text-transformer"] = "text-transformer"
    pooling: Literal["mean", "cls"] = "mean"


@register_model("gpt", factory="modelyard.models.gpt:gpt", head="head", reads=("corpus",))
class GPTConfig(TransformerSizes):
    name: Literal["gpt"] = "gpt"
    n_layers: int = Field(4, ge=1, le=1024)
    context_length: int | None = Field(
        None, ge=2, le=65_536, description="Positions the model has (prompt + generated tokens); default: data.block_size."
    )


@register_model("tfidf-linear", factory="modelyard.models.tfidf:tfidf_linear", head="coef", reads=("text",),
                estimator=True)
class TfidfLinearConfig(ModelConfigBase):
    name: Literal["tfidf-linear"] = "tfidf-linear"
    classifier: Literal["svm", "logreg"] = Field("svm", description="Linear SVM (LinearSVC) or logistic regression.")
    C: float = Field(1.0, gt=0, description="Inverse regularisation strength.")
    ngram_max: int = Field(2, ge=1, le=3, description="Word n-grams from 1 to this.")
    min_df: int = Field(1, ge=1, description="Ignore terms in fewer documents than this.")
    max_features: int | None = Field(200_000, ge=1, description="Keep the most frequent terms only.")
    sublinear_tf: bool = Field(True, description="1 + log(tf) instead of raw counts.")
    lowercase: bool = True

    @model_validator(mode="after")
    def _no_weights(self):
        if self.pretrained or self.freeze_backbone:
            raise ValueError("tfidf-linear is fitted from scratch: remove pretrained / freeze_backbone")
        return self


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    r: int = Field(8, ge=1, description="Rank of the low-rank update.")
    alpha: float = Field(16.0, gt=0, description="Scaling: the update is multiplied by alpha / r.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        None, description="Names of the linear layers to adapt, e.g. [query, value]; default: peft's choice "
        "for the architecture (query and value for BERT)."
    )


@register_model("hf", factory="modelyard.models.hf:hf", head="hf", reads=("text", "corpus"),
                tokenizer="modelyard.models.hf:pretrained_tokenizer", loads_weights=True)
class HFConfig(ModelConfigBase):
    name: Literal["hf"] = "hf"
    pretrained: str = Field(
        "builtin:minilm", description="builtin:minilm, a local model directory, or a model id in the HF cache."
    )
    finetune: Literal["full", "head", "lora"] = Field("full", description="Which weights train.")
    lora: LoraSettings = Field(default_factory=LoraSettings)

    @model_validator(mode="after")
    def _no_freeze_flag(self):
        if self.freeze_backbone:
            raise ValueError("for hf models write finetune: head instead of freeze_backbone: true")
        return self
