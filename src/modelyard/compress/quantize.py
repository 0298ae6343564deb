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
