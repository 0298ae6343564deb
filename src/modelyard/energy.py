"""Energy used by this process: from hardware counters where the machine has them, else estimated.

- RAPL (Intel, and AMD on recent kernels): /sys/class/powercap/*-rapl:*/energy_uj, package domains, whole socket.
- NVML on an NVIDIA GPU (the `pynvml` module of nvidia-ml-py, if installed): the board's energy counter.
- Otherwise an estimate: this process's CPU time (user + system) x WATTS_PER_BUSY_CORE, labelled "estimated".
  The hardware counters measure the whole socket or board, including other processes; the estimate counts
  this process only and leaves out memory, disks and idle power.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

WATTS_PER_BUSY_CORE = 10.0  # a server core at full load, order of magnitude: 200-280 W TDP / 24-32 cores
RAPL = Path("/sys/class/powercap")


def _rapl_domains() -> list[Path]:
    if not RAPL.is_dir():
        return []
    found = []
    for d in sorted(RAPL.glob("*-rapl:*")):
        name = (d / "name").read_text().strip() if (d / "name").is_file() else ""
        if name.startswith("package") and os.access(d / "energy_uj", os.R_OK):
            found.append(d)
    return found


def _gpu_handle():
    try:
        import pynvml
        import torch

        if not torch.cuda.is_available():
            return None
        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    except Exception:  # no NVML library, no GPU, or no permission: fall back to the estimate
        return None


class EnergyMeter:
    """`read()` gives joules since the meter was made, and `source` says how they were measured."""

    def __init__(self) -> None:
        self.rapl = _rapl_domains()
        self.gpu = _gpu_handle()
        parts = (["rapl"] if self.rapl else []) + (["nvml"] if self.gpu is not None else [])
        self.source = "+".join(parts) if parts else "estimated"
        self._start = self._counters()

    def _counters(self) -> dict:
        c = {"cpu_s": time.process_time(), "wall_s": time.perf_counter()}  # user + system, ns (os.times: 10 ms)
        if self.rapl:
            c["rapl"] = [(int((d / "energy_uj").read_text()), d) for d in self.rapl]
        if self.gpu is not None:
            import pynvml

            c["gpu_mj"] = pynvml.nvmlDeviceGetTotalEnergyConsumption(self.gpu)
        return c

    def read(self) -> float:
        now = self._counters()
        joules = 0.0
        if self.rapl:
            for (a, d), (b, _) in zip(self._start["rapl"], now["rapl"]):
                wrap = int((d / "max_energy_range_uj").read_text()) if (d / "max_energy_range_uj").is_file() else 0
                joules += ((b - a) % wrap if wrap else b - a) / 1e6
        else:
            joules += (now["cpu_s"] - self._start["cpu_s"]) * WATTS_PER_BUSY_CORE
        if self.gpu is not None:
            joules += (now["gpu_mj"] - self._start["gpu_mj"]) / 1e3
        return joules

    def describe(self) -> str:
        if self.source == "estimated":
            return f"estimated: process CPU time x {WATTS_PER_BUSY_CORE:g} W per busy core (no RAPL or NVML here)"
        return f"measured from hardware counters ({self.source}); whole socket/board, other processes included"
