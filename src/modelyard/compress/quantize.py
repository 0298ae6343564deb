"""Lower-precision copies of a model: bf16 (weights and activations in bfloat16) and int8-dynamic.

int8-dynamic uses PyTorch's own dynamic quantisation (`torch.ao.quantization.quantize_dynamic`, x86/fbgemm
kernels; int8 weights per output channel, activations quantised per batch at run time) and uint8 embedding rows,
not torchao: on the MiniLM encoder torchao's int8 was barely faster than float32. Measured on all-MiniLM-L6-v2
(builtin:minilm) with a 10-class head, texts of 24 to 128 tokens, through HFClassifier; AMD EPYC with AVX-512
VNNI and AVX512_BF16, 2 cores shared with other jobs (load about 9), torch 2.14.1, torchao 0.18.0 in eager mode,
one thread; medians of 15 interleaved rounds, in CPU time (wall time, which the shared machine inflates, gave the
same ratios within 5 %):

                                     batch 1, ms   batch 32, texts/s   max |p - p_fp32|
    float32                             24.6          41.5               -
    torch.ao int8 (this method)          8.6 (2.9x)  140   (3.4x)       0.0018
    torchao Int8DynamicActivationInt8    21.2 (1.2x)   63   (1.5x)       0.0006
    torchao Int8WeightOnly               25.8 (0.95x)  40   (0.95x)      0.0002

torchao is closer to float32 (per-token activation scales; torch.ao's fbgemm path uses one 7-bit scale per
batch), and torch.ao's eager quantisation and quantised tensors are deprecated from torch 2.14 (their warnings are
silenced in `adapters.quantized`): when torch removes them, this method moves to torchao or to ONNX Runtime
(onnx-int8). Quantising the word embeddings too costs no speed and shrinks MiniLM's weights from 86.7 MiB
(float32) to 22.3 MiB instead of 56.2 MiB (linear layers only).
"""

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
