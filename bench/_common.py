"""Helpers for the bench scripts: the machine description printed beside every figure."""

import os
import platform
import statistics


def machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"


def median(xs):
    return statistics.median(xs)


def spread(xs) -> str:
    return f"min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)}"
