"""One description of the machine a bench ran on (CPU model, cores, torch threads and version)."""
from __future__ import annotations

import os
import platform

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} CPU cores (shared with other jobs), {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, {platform.system()} {platform.release()}{gpu}")
