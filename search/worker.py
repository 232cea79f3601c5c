"""Who measured a trial: the CPU, its instruction sets and the runtime versions.

Speedups depend on the ISA (VNNI or not), so every trial records its worker and the report
can split results by CPU. Absolute timings are never compared across workers.
"""

from __future__ import annotations

import os
import platform
import socket
from functools import lru_cache
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "asimddp")


@lru_cache(maxsize=1)
def worker_info(threads: int = 1) -> dict:
    import onnxruntime

    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key in ("flags", "Features"):
                flags |= set(value.split())
    return {
        "host": socket.gethostname(),
        "cpu": model,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "onnxruntime": onnxruntime.__version__,
        "threads": threads,
        "python": platform.python_version(),
    }


def describe_worker(info: dict) -> str:
    isa = ", ".join(info.get("isa") or ["no AVX2"])
    return f"{info.get('cpu', '?')} ({isa}), {info.get('cores', '?')} cores"
