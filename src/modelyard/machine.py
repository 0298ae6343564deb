"""What machine a figure was measured on: printed beside every benchmark and stored with every measurement."""

from __future__ import annotations

import os
import platform


# The instructions int8 and bf16 speed depend on: without VNNI (AVX2 only) int8 matrix products gain little.
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def int8_class(info: dict) -> str:
    """'vnni' when the CPU multiplies int8 in one instruction (AVX-512 VNNI, AVX-VNNI or AMX), else 'avx2'."""
    return "vnni" if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(info.get("int8_isa", ())) else "avx2"


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or "unknown CPU"
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):  # after the model name in each processor's block
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "int8_isa": [f for f in INT8_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def describe_machine(info: dict | None = None) -> str:
    m = info or machine_info()
    return (f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
            f"{m['gpu'] or 'no GPU'}")
