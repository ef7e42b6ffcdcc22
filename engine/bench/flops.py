"""Work per image and the machine's measured arithmetic peak, to put a benchmark's speed in context.

FLOPs are counted on the PyTorch reference with torch.utils.flop_counter (convolutions, matrix
products and attention, 2 FLOPs per multiply-add), once per model and input size: the count is
the model's, whatever backend runs it. The peak is measured, not read from a data sheet: a large
fp32 matrix product on the cores the benchmark uses, the best a BLAS does on this machine.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from iqart.train.models.preprocess import uint8_nhwc_to_model_input

PEAK_MATMUL_SIZE = 4096  # 2048² products read 58-88 GFLOP/s on a 2-core CPU that reaches ~180 at 4096²
PEAK_REPEATS = 5


@torch.inference_mode()
def model_flops(model: torch.nn.Module, task: str, height: int, width: int) -> int:
    """FLOPs the model spends on one image (or one image/reference pair) of height x width."""
    image = uint8_nhwc_to_model_input(torch.zeros(1, height, width, 3, dtype=torch.uint8))
    inputs = (image, image) if task == "fr" else (image,)
    counter = FlopCounterMode(display=False)
    with counter:
        model(*inputs)
    return int(counter.get_total_flops())


def matmul_peak_gflops(
    threads: int, size: int = PEAK_MATMUL_SIZE, repeats: int = PEAK_REPEATS, device: str = "cpu"
) -> float:
    """Best-of-`repeats` GFLOP/s of one fp32 size x size matrix product on `threads` CPU threads
    (or on a CUDA device, with TF32 off so the figure is true fp32)."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device) for _ in range(2))
    previous_threads, previous_tf32 = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.mm(a, b)  # warm-up: thread pool start, first-touch of the output
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            started = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous_threads)
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    return 2 * size**3 / best / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
