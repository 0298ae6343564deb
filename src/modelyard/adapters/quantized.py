"""torch-int8: a torch or Hugging Face classifier whose linear layers hold int8 weights (PyTorch's dynamic
quantisation: activations are quantised per batch at run time) and whose embeddings hold uint8 rows.

A dynamically quantised layer keeps its weights packed for one CPU kernel library, which safetensors cannot hold,
and pickle is not an option. So `model.safetensors` holds plain tensors instead: for each quantised layer its
integer weight (`NAME.weight`, int8 or uint8), scale and zero point per output channel or row
(`NAME.weight_scales`, `NAME.weight_zero_points`) and bias; beside them every tensor that stayed float. Loading
builds the float model from its config (a Hugging Face model from `hf/config.json`: the folder holds no float
weights), quantises it the same way and sets the saved integers back, so the loaded model computes exactly what
the saved one did.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from pathlib import Path

from modelyard.adapters.base import register_adapter
from modelyard.adapters.torch_module import TorchAdapter

BASE_FAMILIES = ("torch", "hf")  # what a torch-int8 model was quantised from (modelyard.json `base_family`)


@contextmanager
def _quiet_quantization():
    # torch 2.14 deprecates eager-mode quantisation and quantised tensors in favour of torchao, whose int8 CPU
    # path is slower here (see compress/quantize.py); the warnings would reach every user on every load.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


def _embedding_class():
    import torch.ao.nn.quantized as nnq

    class ContiguousQuantizedEmbedding(nnq.Embedding):
        """The quantised embedding's kernel refuses non-contiguous indices, which a column slice of a batch
        (HFClassifier drops all-padding columns) or an expanded buffer (BERT's token types) gives."""

        def forward(self, indices):
            return super().forward(indices.contiguous())

    return ContiguousQuantizedEmbedding


def quantize_module(module):
    """Quantise `module` in place: every `nn.Linear` to int8 weights per output channel with dynamically
    quantised activations, every `nn.Embedding` (without max_norm) to uint8 rows with a float scale and offset
    each. Returns the module, in eval mode, float32 elsewhere."""
    import torch
    from torch import nn
    from torch.ao.quantization import float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    module = module.float().eval()
    embedding = _embedding_class()
    with _quiet_quantization(), torch.no_grad():
        quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
        for name, child in list(module.named_modules()):
            if type(child) is nn.Embedding and child.max_norm is None:
                # Not nnq.Embedding.from_float(child).weight(): that tensor reads the memory of a module
                # freed right after, and packing it again copied garbage.
                observer = float_qparams_weight_only_qconfig.weight()
                observer(child.weight)
                scales, offsets = observer.calculate_qparams()
                rows = torch.quantize_per_channel(child.weight, scales.double(), offsets.float(), 0, torch.quint8)
                module.set_submodule(name, embedding(child.num_embeddings, child.embedding_dim, _weight=rows))
    return module


def _quantized_layers(module) -> dict:
    """name -> quantised layer (dynamic Linear or Embedding)."""
    import torch.ao.nn.quantized as nnq
    import torch.ao.nn.quantized.dynamic as nnqd

    return {name: m for name, m in module.named_modules() if isinstance(m, (nnqd.Linear, nnq.Embedding))}


def _weight_and_bias(layer):
    """A quantised layer's weight (a quantised tensor) and float bias (None for an embedding or no bias)."""
    import torch.ao.nn.quantized.dynamic as nnqd

    return layer._weight_bias() if isinstance(layer, nnqd.Linear) else (layer.weight(), None)


def int8_tensors(module) -> dict:
    """Every tensor of a quantised module as plain tensors that safetensors can hold (see the module docstring)."""
    layers = _quantized_layers(module)
    tensors = {}
    for name, layer in layers.items():
        weight, bias = _weight_and_bias(layer)
        tensors[f"{name}.weight"] = weight.int_repr()
        tensors[f"{name}.weight_scales"] = weight.q_per_channel_scales()
        tensors[f"{name}.weight_zero_points"] = weight.q_per_channel_zero_points()
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach()
    inside_layers = tuple(f"{name}." for name in layers)  # their packed parameters are replaced by the above
    for key, value in module.state_dict().items():
        if not key.startswith(inside_layers):
            tensors[key] = value.detach()
    # safetensors refuses tensors that share storage (tied weights left in float): each name gets its own copy.
    return {key: value.contiguous().clone() for key, value in tensors.items()}


def set_int8_tensors(module, tensors: dict) -> None:
    """Put tensors `int8_tensors` wrote back into the same architecture, quantised by `quantize_module`."""
    import torch
    import torch.ao.nn.quantized.dynamic as nnqd

    layers = _quantized_layers(module)
    with _quiet_quantization(), torch.no_grad():
        for name, layer in layers.items():
            weight = torch._make_per_channel_quantized_tensor(
                tensors[f"{name}.weight"], tensors[f"{name}.weight_scales"], tensors[f"{name}.weight_zero_points"], 0)
            if isinstance(layer, nnqd.Linear):
                layer.set_weight_bias(weight, tensors.get(f"{name}.bias"))
            else:
                layer.set_weight(weight)
        own = module.state_dict(keep_vars=True)
        for key, value in tensors.items():
            if key in own:
                own[key].copy_(value)


@functools.cache
def _count_int8_linear_flops() -> None:
    """Teach torch's FLOP counter (which `modelyard value` uses) the int8 linear op, which it would count as 0:
    2 x inputs x outputs per row, as it counts a float matmul."""
    import math

    import torch
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.quantized.linear_dynamic)
    def linear_dynamic_flops(x_shape, packed, *args, out_shape=None, **kwargs) -> int:
        return 2 * math.prod(x_shape) * out_shape[-1]


@register_adapter
class Int8Adapter(TorchAdapter):
    family = "torch-int8"
    new_format = True

    def __init__(self, model, meta: dict | None = None) -> None:
        _count_int8_linear_flops()
        super().__init__(model, meta)

    @property
    def device(self):
        import torch

        return torch.device("cpu")

    @property
    def dtype(self):
        import torch

        return torch.float32

    @property
    def base_family(self) -> str:
        return self.meta.get("base_family", "torch")

    def save(self, folder: Path, labels: list[str]) -> dict:
        import torch
        import torch.ao.nn.quantized.dynamic as nnqd
        from safetensors.torch import save_file

        save_file(int8_tensors(self.model), str(folder / "model.safetensors"))
        if self.base_family == "hf":
            _save_hf_config_and_tokenizer(self.model, folder / "hf", labels)
        layers = _quantized_layers(self.model).values()
        linear = sum(isinstance(m, nnqd.Linear) for m in layers)
        return {"weights": "model.safetensors", "base_family": self.base_family,
                "int8": {"linear_layers": linear, "embedding_layers": len(layers) - linear,
                         "weights": "int8 per output channel; activations quantised per batch at run time",
                         "embeddings": "uint8 per row, float scale and offset",
                         "engine": torch.backends.quantized.engine}}

    @classmethod
    def load(cls, model_dir: Path, meta: dict, cfg, *, device: str = "cpu") -> "Int8Adapter":
        from modelyard.artifact import DAMAGED, build_model
        from modelyard.errors import ConfigError, RunError

        if str(device) != "cpu":
            raise ConfigError(f"{model_dir} holds a torch-int8 model, whose dynamically quantised kernels run on the "
                              f"CPU only; load it with device='cpu' (not {device!r})")
        base = meta.get("base_family")
        if base not in BASE_FAMILIES:
            raise RunError(f"{model_dir / 'modelyard.json'}: base_family {base!r} is none of "
                           f"{', '.join(BASE_FAMILIES)}; {DAMAGED}")
        model = _hf_skeleton(model_dir, meta) if base == "hf" else build_model(cfg, meta, model_dir)
        model = quantize_module(model)
        _load_checked_int8(model, model_dir / meta["weights"])
        return cls(model, meta)

    def count_parameters(self) -> dict:
        """Elements of the original float weights (an int8 weight counts as one parameter, as it did in float)."""
        quantised = sum(t.numel() for layer in _quantized_layers(self.model).values()
                        for t in _weight_and_bias(layer) if t is not None)
        total = quantised + sum(p.numel() for p in self.model.parameters())  # the layers left in float
        return {"parameters": total, "trainable_parameters": 0, "trainable_fraction": 0.0}


def _load_checked_int8(model, file: Path) -> None:
    """Check every tensor's name, shape and dtype against the quantised skeleton, then set them.

    Raises:
        RunError: naming the file and the first tensors that do not fit.
    """
    import torch
    from safetensors.torch import load_file

    from modelyard.artifact import first_line, read_tensor_specs
    from modelyard.errors import RunError

    found = read_tensor_specs(file)
    own = {k: (tuple(v.shape), v.dtype) for k, v in int8_tensors(model).items()}
    names = {torch.int8: "I8", torch.uint8: "U8", torch.int64: "I64", torch.float64: "F64", torch.float32: "F32"}
    wrong = [f"{k} has shape {found[k][0]} in the file but {shape} in the model" for k, (shape, _) in own.items()
             if k in found and found[k][0] != shape]
    wrong += [f"{k} is {found[k][1]} in the file, not {names.get(dtype, dtype)}" for k, (_, dtype) in own.items()
              if k in found and found[k][1] != names.get(dtype, str(dtype))]
    wrong += [f"missing tensor {k}" for k in own if k not in found][:3]
    wrong += [f"unexpected tensor {k}" for k in found if k not in own][:3]
    if wrong:
        raise RunError(f"{file} does not fit the int8 model modelyard.json describes: {'; '.join(wrong[:4])}. The "
                       "weights and modelyard.json come from different runs or were edited: restore the folder, or "
                       "compress the parent run again")
    try:
        tensors = load_file(str(file))
    except Exception as exc:  # safetensors raises several types for a damaged buffer
        raise RunError(f"{file} is corrupt ({first_line(exc)}); restore it from a backup") from None
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise RunError(f"{file}: tensor {key} holds values that are not finite (NaN or infinity); the file is "
                           "damaged: restore the folder from a backup, or compress the parent run again")
    set_int8_tensors(model, tensors)


def _hf_skeleton(model_dir: Path, meta: dict):
    """The float Hugging Face classifier that hf/config.json describes, randomly initialised (its weights come
    from model.safetensors)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from modelyard.artifact import DAMAGED, first_line
    from modelyard.errors import RunError
    from modelyard.models.hf import HFClassifier

    folder = model_dir / "hf"
    try:
        conf = AutoConfig.from_pretrained(folder, local_files_only=True)
        model = AutoModelForSequenceClassification.from_config(conf)
    except (OSError, ValueError) as exc:
        raise RunError(f"{folder / 'config.json'} cannot be read ({first_line(exc)}); {DAMAGED}") from None
    return HFClassifier(model, int(meta["model_inputs"].get("pad_id", 0)), folder, max_length=meta["input_shape"][0])


def _save_hf_config_and_tokenizer(wrapper, folder: Path, labels: list[str]) -> None:
    """hf/config.json (naming the labels) and the tokenizer, as `models.hf.save_hf` writes them, without float
    weights: the int8 weights are in model.safetensors."""
    from transformers import AutoTokenizer

    conf = wrapper.hf.config
    conf.id2label = dict(enumerate(labels))
    conf.label2id = {label: i for i, label in enumerate(labels)}
    conf.problem_type = "single_label_classification"
    conf.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(wrapper.source, local_files_only=True)
    tok.model_max_length = wrapper.max_length
    tok.truncation_side = tok.padding_side = "right"
    tok.save_pretrained(folder)
