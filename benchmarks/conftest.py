"""Options and fixtures of the pytest-benchmark suite (benchmarks/test_speed.py).

The suite is not part of `python3 -m pytest` (pyproject's testpaths is tests/): run it on
purpose, on a quiet machine, for regression tracking:

    python3 -m pytest benchmarks --benchmark-autosave          # RN50 models, random weights
    python3 -m pytest benchmarks --benchmark-compare           # against the last saved run
    python3 -m pytest benchmarks --bench-models qualiclip-tiny --bench-batch-sizes 1 --benchmark-disable  # smoke

Runners come from the same place as `iqart bench`'s (iqart.engine.bench.runners), with the same
weights rule (demo or official weights when at hand, else random ones: speed does not depend
on them), and are built once per model and backend for the whole session.
"""

from __future__ import annotations

import pytest
import torch

from iqart.engine.bench.runners import VARIANTS, Runner, Unavailable, bench_weights, build_runner
from iqart.engine.hardware import physical_cores
from iqart.train.models.zoo import get_card

DEFAULTS = {
    "models": "qualiclip,bpclip-nr,bpclip-fr",
    "backends": "torch,onnxruntime,onnxruntime-int8,torch-fp16,torch-fp16-fused-graph,tensorrt",
    "batch-sizes": "1,8",
    "sizes": "224",  # sizes a fixed-size model (BPCLIP: 224) does not take are left out for it
}


def pytest_addoption(parser):
    group = parser.getgroup("iqart benchmarks")
    for name, default in DEFAULTS.items():
        group.addoption(f"--bench-{name}", default=default, help=f"comma-separated (default: {default})")
    group.addoption(
        "--bench-threads",
        type=int,
        default=physical_cores(),
        help="CPU threads for torch and ONNX Runtime (default: physical cores)",
    )
    group.addoption("--bench-rounds", type=int, default=10, help="timed calls per case (default 10)")
    group.addoption("--bench-device", default=None, help="cpu or cuda (default: CUDA when available)")


def _values(config, name: str) -> list[str]:
    return [v.strip() for v in config.getoption(f"bench_{name.replace('-', '_')}").split(",") if v.strip()]


def pytest_generate_tests(metafunc):
    """One speed case per model and input size it takes (BPCLIP is fixed at 224), batch size and backend."""
    if "model" not in metafunc.fixturenames:
        return
    config = metafunc.config
    backends = _values(config, "backends")
    if set(backends) - set(VARIANTS):
        raise pytest.UsageError(
            f"--bench-backends: unknown {sorted(set(backends) - set(VARIANTS))}; available: {', '.join(VARIANTS)}"
        )
    pairs = []
    for model in _values(config, "models"):
        resize = get_card(model).resize
        pairs += [
            (model, size)
            for size in map(int, _values(config, "sizes"))
            if resize.kind != "fixed" or tuple(resize.size) == (size, size)
        ]
    metafunc.parametrize("model,size", pairs, scope="session")
    metafunc.parametrize("batch", [int(v) for v in _values(config, "batch-sizes")], scope="session")
    metafunc.parametrize("backend", backends, scope="session")


@pytest.fixture(scope="session")
def bench_settings(pytestconfig) -> dict:
    threads = pytestconfig.getoption("bench_threads")
    torch.set_num_threads(threads)
    device = pytestconfig.getoption("bench_device") or ("cuda" if torch.cuda.is_available() else "cpu")
    return {"threads": threads, "device": device, "rounds": pytestconfig.getoption("bench_rounds")}


@pytest.fixture(scope="session")
def runner_cache(bench_settings):
    """runner(model, backend, batch) -> the callable, built once per model and backend (per
    batch size for TensorRT, whose plan is optimised for one), or a skip saying why not."""
    cache: dict[tuple, Runner | Unavailable] = {}

    def runner(model: str, backend: str, batch: int) -> Runner:
        key = (model, backend, batch if backend == "tensorrt" else None)
        if key not in cache:
            try:
                cache[key] = build_runner(
                    backend,
                    model,
                    bench_weights(model).path,
                    bench_settings["device"],
                    batch,
                    bench_settings["threads"],
                )
            except Unavailable as exc:
                cache[key] = exc
        if isinstance(cache[key], Unavailable):
            pytest.skip(str(cache[key]))
        return cache[key]

    return runner
