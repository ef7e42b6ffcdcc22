"""How many CPU cores this process may use: sizes ONNX Runtime's thread pool and the decode pool.

ONNX Runtime gains nothing from hyper-threads (two threads on one core fight over the same
vector units), so its threads follow physical cores; both counts respect the CPU affinity mask
(containers, taskset), which os.cpu_count() ignores.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_DECODE_WORKERS = 8  # past this, decoding small images outruns any backend


def usable_cpus() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Distinct physical cores among the usable CPUs (logical CPUs where topology is unknown)."""
    cpus = usable_cpus()
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))


def default_workers() -> int:
    return max(1, min(MAX_DECODE_WORKERS, len(usable_cpus())))
