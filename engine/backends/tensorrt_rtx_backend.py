"""The tensorrt-rtx backend: the tensorrt backend's graphs, plan cache and code on TensorRT for RTX.

Plans are built ahead of time on any machine, a CPU-only build server included (`iqart build
ARTIFACT --backend tensorrt-rtx`), for the compute capabilities in
iqart.engine.backends.tensorrt_build.RTX_TARGETS; on the GPU, TensorRT-RTX specialises them just
in time. What its JIT compiles is kept in a runtime cache beside the plan, one per GPU
architecture (plans/<plan>.runtime-smXY.cache), so a later process starts without compiling again.
Runs on Ampere, Ada and Blackwell RTX GPUs (A100, A10/A40, L4/L40S, RTX 30-50), not on Hopper:
TensorRT for RTX has no SM90 target, so H100/H200 run the tensorrt backend (TensorRT 11).
"""

from __future__ import annotations

from iqart.engine.backends.plan_cache import PlanKey, PlanMismatchError
from iqart.engine.backends.tensorrt_backend import TensorRTBackend
from iqart.engine.backends.tensorrt_build import gpu_identity
from iqart.engine.backends.tensorrt_import import TENSORRT_RTX


class TensorRTRTXBackend(TensorRTBackend):
    name = "tensorrt-rtx"
    library = TENSORRT_RTX

    def check_gpu(self, key: PlanKey) -> None:
        """The plan must target this GPU's compute capability (checked before TensorRT-RTX reads it)."""
        gpu, self.sm = gpu_identity(self.device)
        targets = key.environment.sm.split(",")
        if self.sm not in targets:
            raise PlanMismatchError(
                f"{self.plan_path} targets compute capabilities {', '.join(targets)}; this GPU, "
                f"{gpu}, is {self.sm}: TensorRT for RTX serves {', '.join(targets)} (run Hopper "
                f"and other datacenter GPUs on the tensorrt backend)"
            )

    def create_context(self):
        """An execution context whose JIT reads and extends the plan's runtime cache."""
        self.runtime_cache_path = self.cache.runtime_cache_path(self.key, self.sm)
        self.seen_sizes: set[tuple[int, int]] = set()
        config = self.engine.create_runtime_config()
        self.runtime_cache = config.create_runtime_cache()
        if self.runtime_cache_path.is_file():
            self.runtime_cache.deserialize(self.runtime_cache_path.read_bytes())
        config.set_runtime_cache(self.runtime_cache)
        return self.engine.create_execution_context(config)

    def after_batch(self, size: tuple[int, int]) -> None:
        """Saves the runtime cache when an image size first runs (its kernels were just compiled)."""
        if size in self.seen_sizes:
            return
        self.seen_sizes.add(size)
        self.cache.store_runtime_cache(self.key, self.sm, bytes(self.runtime_cache.serialize()))
