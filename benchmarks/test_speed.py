"""Speed per model, input size, batch size and backend, for regression tracking with
pytest-benchmark (options and fixtures: benchmarks/conftest.py).

One case times one backend's calls on one fixed batch, after warm-up. The cases run one after
another, not interleaved, so compare a backend with itself across runs here; speed-ups between
backends come from `iqart bench`, which interleaves them. Each case records images/s and its
batch in extra_info (in the JSON that --benchmark-json or --benchmark-autosave writes).
"""

from __future__ import annotations

import numpy as np

from iqart.train.models.zoo import get_card

WARMUP_ROUNDS = 2


def batch_for(model: str, size: int, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Random uint8 pixels (seeded); FR models get the batch mirrored as references."""
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    return images, np.ascontiguousarray(images[:, :, ::-1]) if get_card(model).task == "fr" else None


def test_speed(benchmark, runner_cache, bench_settings, model, size, batch, backend):
    runner = runner_cache(model, backend, batch)
    images, references = batch_for(model, size, batch)
    benchmark.group = f"{model} {size}x{size} batch {batch}"
    benchmark.extra_info.update(
        model=model, size=size, batch_size=batch, backend=backend, threads=bench_settings["threads"]
    )
    scores = benchmark.pedantic(
        runner, args=(images, references), rounds=bench_settings["rounds"], warmup_rounds=WARMUP_ROUNDS, iterations=1
    )
    assert scores.shape == (batch,) and np.isfinite(scores).all()
    if benchmark.stats:  # None under --benchmark-disable (one plain call)
        benchmark.extra_info["images_per_s"] = batch / benchmark.stats.stats.mean
