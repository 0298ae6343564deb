"""Lower-precision copies of a model: bf16 (weights and activations in bfloat16) and int8-dynamic."""

from __future__ import annotations

import copy

from modelyard.compress.base import Compressed, MethodParams, register_compressor


@register_compressor("bf16", applies_to=("torch", "hf"),
                     summary="weights and activations in bfloat16: half the bytes; fast only where the CPU has "
                             "AVX-512 BF16 or AMX")
def bf16(parent, params: MethodParams, **_) -> Compressed:
    import torch

    model = copy.deepcopy(parent.adapter.module).to(torch.bfloat16).eval()
    return Compressed(type(parent.adapter)(model, {**parent.predictor.meta, "dtype": "bfloat16"}),
                      notes=["bfloat16 keeps float32's range with 8 bits of mantissa: probabilities move in the "
                             "third decimal; speed depends on the CPU's bf16 instructions"])


@register_compressor("int8-dynamic", applies_to=("torch", "hf", "onnx"),
                     summary="linear layers with int8 weights and activations quantised at run time, embeddings "
                             "in uint8: about a quarter of the bytes, faster on x86 CPUs with VNNI")
def int8_dynamic(parent, params: MethodParams, **_) -> Compressed:
    if parent.family == "onnx":
        from modelyard.compress.export import quantize_onnx_dynamic

        return quantize_onnx_dynamic(parent, params)
    from modelyard.adapters.quantized import Int8Adapter, quantize_module

    model = quantize_module(copy.deepcopy(parent.adapter.module))
    adapter = Int8Adapter(model, {**parent.predictor.meta, "base_family": parent.family})
    return Compressed(adapter, notes=[
        "int8 weights per output channel, activations quantised per batch at run time (torch.ao dynamic "
        "quantisation, fbgemm/x86 kernels): runs on the CPU only; probabilities move in the second or third decimal"])
