"""`iqart bench`: interleaved timing, FLOP counting, weights, variants, records, and short runs."""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

import iqart.train.models.zoo
from iqart.engine.artifact_cache import cached_artifact
from iqart.engine.backends.torch_backend import TorchBackend
from iqart.engine.bench.flops import matmul_peak_gflops, model_flops
from iqart.engine.bench.harness import Timing, interleaved_timings, speedup
from iqart.engine.bench.records import BenchRecord, markdown_table, plot, read_json, write_json
from iqart.engine.bench.runners import Unavailable, bench_weights, build_runner
from iqart.engine.cli.bench import add_bench_parser, batch_inputs, model_runners
from iqart.engine.cli.main import main
from iqart.export.int8_artifact import add_int8_graph
from iqart.train.models.zoo import get_card, load_model
from tests.helpers import EXAMPLE_IMAGES, REPO

REQUIRED_KEYS = {
    "backend",
    "model",
    "batch_size",
    "size",
    "images_per_s",
    "p50_ms",
    "p95_ms",
    "peak_rss_mb",
    "speedup_vs_torch",
}


def parse(argv):
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


def test_runners_are_interleaved_in_rotating_order():
    calls = []

    def recorder(name):
        return lambda images, refs: calls.append(name)

    runners = {name: recorder(name) for name in "abc"}
    timings = interleaved_timings(runners, np.zeros((2, 1, 1, 3), np.uint8), None, warmup=1, iters=3)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(t.latencies) == 3 and t.batch_size == 2 for t in timings.values())


def test_slower_runner_measures_slower():
    runners = {"fast": lambda i, r: time.sleep(0.002), "slow": lambda i, r: time.sleep(0.02)}
    timings = interleaved_timings(runners, np.zeros((4, 1, 1, 3), np.uint8), None, warmup=0, iters=3)
    assert timings["fast"].images_per_s > 3 * timings["slow"].images_per_s
    assert timings["slow"].percentile_ms(50) >= 20


def test_timing_statistics():
    timing = Timing(batch_size=8, latencies=[0.1, 0.2, 0.3, 0.4])
    assert timing.images_per_s == pytest.approx(8 / 0.25)  # from the median call
    assert timing.percentile_ms(50) == pytest.approx(250)
    assert timing.percentile_ms(95) == pytest.approx(385)


def test_flops_of_one_convolution():
    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, bias=False)

        def forward(self, x, reference=None):
            return self.conv(x) if reference is None else self.conv(x) - self.conv(reference)

    # 2 FLOPs per multiply-add: out channels x output pixels x (in channels x kernel area)
    one_image = 2 * 8 * (8 * 10) * (3 * 9)
    assert model_flops(Conv(), "nr", 10, 12) == one_image
    assert model_flops(Conv(), "fr", 10, 12) == 2 * one_image  # a full-reference pair: both images


def test_model_flops_grow_with_area(scrambled):
    model = scrambled("qualiclip-tiny")
    small, large = model_flops(model, "nr", 224, 224), model_flops(model, "nr", 448, 448)
    assert 3.9 < large / small < 4.5  # convolutions scale with area; the pool's attention a little faster


def test_matmul_peak_is_plausible():
    peak = matmul_peak_gflops(threads=1, size=256, repeats=2)
    assert 0.1 < peak < 1e5


def test_random_weights_are_written_once_and_load(tmp_path, monkeypatch):
    monkeypatch.setenv("IQART_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(iqart.train.models.zoo, "DEMO_WEIGHTS_DIR", tmp_path / "no-demo-weights")
    first = bench_weights("qualiclip-tiny")
    assert first.random and first.path.is_file()
    mtime = first.path.stat().st_mtime_ns
    assert bench_weights("qualiclip-tiny").path.stat().st_mtime_ns == mtime
    model = load_model("qualiclip-tiny", first.path)
    scores = TorchBackend(model, "cpu")(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    assert np.ptp(scores) > 0  # BatchNorm randomised: scores depend on the image
    explicit = bench_weights("qualiclip-tiny", first.path)
    assert not explicit.random and explicit.path == first.path


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no CUDA GPU exists")
@pytest.mark.parametrize("variant", ["torch-fp16", "torch-fp16-fused-graph", "tensorrt"])
def test_gpu_variants_say_why_they_cannot_run(variant, tmp_path):
    with pytest.raises(Unavailable, match="CUDA|TensorRT"):
        build_runner(variant, "qualiclip-tiny", tmp_path / "unused.pt", None, 8, 1)


def test_int8_variant_is_cpu_only(tmp_path):
    with pytest.raises(Unavailable, match="CPU"):
        build_runner("onnxruntime-int8", "qualiclip-tiny", tmp_path / "unused.pt", "cuda", 8, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_runner_matches_fp16_eager(scrambled):
    from iqart.engine.backends.fused_op import is_available
    from iqart.engine.bench.runners import CudaGraphRunner

    if not is_available():
        pytest.skip("the fused attention op could not be built (needs nvcc)")
    model = scrambled("qualiclip-tiny")
    images = np.random.default_rng(0).integers(0, 256, (4, 96, 128, 3), dtype=np.uint8)
    eager = TorchBackend(model, "cuda", "fp16")(images)
    runner = CudaGraphRunner(model, torch.device("cuda"))
    np.testing.assert_allclose(runner(images), eager, atol=2e-3)
    np.testing.assert_allclose(runner(images[::-1].copy()), eager[::-1], atol=2e-3)  # replay with new content


def test_batch_inputs_from_files_and_fr_references():
    files = sorted(EXAMPLE_IMAGES.glob("*.png"))[:3]
    images, refs = batch_inputs(get_card("bpclip-fr-tiny"), 64, 64, 5, files)
    assert images.shape == refs.shape == (5, 64, 64, 3)
    np.testing.assert_array_equal(images[3], images[0])  # files are cycled
    np.testing.assert_array_equal(refs, images[:, :, ::-1])
    random_images, none = batch_inputs(get_card("qualiclip-tiny"), 48, 32, 2, [])
    assert random_images.shape == (2, 32, 48, 3) and none is None  # width 48, height 32


def _record(backend, images_per_s, batch=8, size=224):
    return BenchRecord(
        backend=backend,
        model="m",
        batch_size=batch,
        size=size,
        images_per_s=images_per_s,
        p50_ms=1,
        p95_ms=2,
        peak_rss_mb=100,
        working_mb=10,
        speedup_vs_torch=None,
        gflop_per_image=1,
        gflops_per_s=images_per_s,
        peak_gflops_per_s=100,
        fraction_of_peak=images_per_s / 100,
        spread=0.01,
        calls=10,
        device="cpu",
        threads=2,
        weights="random",
        end_to_end=False,
        machine="test machine",
        date="2026-11-22",
    )


def test_speedup_is_the_median_of_per_round_ratios():
    """One stalled baseline call (a noisy neighbour) must not inflate the speed-up."""
    torch_calls = Timing(batch_size=8, latencies=[0.10, 0.10, 1.00, 0.12, 0.10])
    engine_calls = Timing(batch_size=8, latencies=[0.05, 0.05, 0.05, 0.06, 0.05])
    assert speedup(torch_calls, engine_calls) == pytest.approx(2.0)
    assert speedup(torch_calls, torch_calls) == 1
    fewer = Timing(batch_size=8, latencies=[0.04, 0.04])  # not the same rounds: ratio of median speeds
    assert speedup(torch_calls, fewer) == pytest.approx(0.10 / 0.04)


def test_json_table_and_chart(tmp_path):
    records = [_record("torch", 10), _record("onnxruntime", 25), _record("onnxruntime", 40, batch=1)]
    records[0].speedup_vs_torch, records[1].speedup_vs_torch = 1.0, 2.5
    write_json(records, tmp_path / "r.json")
    assert read_json(tmp_path / "r.json") == records
    assert "| m | 224 | 8 | onnxruntime | 25.0 | 2.50 |" in markdown_table(records)
    plot(records, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def random_home(tmp_path, monkeypatch):
    """A fresh $IQART_HOME and no demo weights: bench falls back to random weights there."""
    monkeypatch.setenv("IQART_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(iqart.train.models.zoo, "DEMO_WEIGHTS_DIR", tmp_path / "no-demo-weights")
    return tmp_path


def test_runners_are_built_once_per_model(random_home, capsys):
    weights = bench_weights("qualiclip-tiny").path
    args = parse(["--backends", "torch,tensorrt,onnxruntime", "--threads", "1", "--device", "cpu"])
    built, unavailable = {}, set()
    first = model_runners(args, "qualiclip-tiny", weights, 1, built, unavailable)
    second = model_runners(args, "qualiclip-tiny", weights, 8, built, unavailable)
    assert list(first) == list(second) == ["torch", "onnxruntime"]  # tensorrt cannot run here: skipped
    assert all(first[name] is second[name] for name in first)  # reused for the next batch size
    assert unavailable == {"tensorrt"} and capsys.readouterr().err.count("skip tensorrt") == 1


def test_bench_command_writes_records(random_home):
    for name in ("qualiclip-tiny", "bpclip-nr-tiny"):  # int8 graphs from small image sets, to keep this fast
        add_int8_graph(cached_artifact(name, bench_weights(name).path), "skimage:astronaut", None)
    out = random_home / "bench.json"
    assert (
        main(
            [
                "bench",
                "-m",
                "qualiclip-tiny",
                "-m",
                "bpclip-nr-tiny",
                "--backends",
                "torch,onnxruntime,onnxruntime-int8",
                "--batch-sizes",
                "1,2",
                "--sizes",
                "224,96x64",
                "--warmup",
                "1",
                "--iters",
                "2",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    # bpclip-nr-tiny takes fixed 224x224 input: no 96x64 rows for it
    assert {(r["model"], r["size"]) for r in rows} == {
        ("qualiclip-tiny", 224),
        ("qualiclip-tiny", "96x64"),
        ("bpclip-nr-tiny", 224),
    }
    assert len(rows) == 3 * 2 * 3
    for row in rows:
        assert row.keys() >= REQUIRED_KEYS and row["weights"] == "random" and row["images_per_s"] > 0
        assert row["p50_ms"] <= row["p95_ms"] and row["gflops_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["speedup_vs_torch"] > 0
        if row["backend"] == "torch":
            assert row["speedup_vs_torch"] == 1
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_bench_end_to_end_from_files(random_home):
    out = random_home / "e2e.json"
    assert (
        main(
            [
                "bench",
                "-m",
                "qualiclip-tiny",
                "--backends",
                "onnxruntime",
                "--batch-sizes",
                "4",
                "--sizes",
                "96",
                "--images",
                str(EXAMPLE_IMAGES),
                "--end-to-end",
                "--iters",
                "1",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())
    assert row["end_to_end"] and row["calls"] == 4  # 16 example images in batches of 4
    assert row["speedup_vs_torch"] is None  # torch not in this run


def test_bench_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        parse(["--backends", "torch,nope"])
    with pytest.raises(SystemExit):
        parse(["--batch-sizes", "0,8"])
    with pytest.raises(SystemExit):
        parse(["--sizes", "224,1024y768"])
    assert parse(["--sizes", "224,1024x768"]).sizes == [(224, 224), (1024, 768)]
    assert main(["bench", "--end-to-end", "--json", "x.json"]) == 2
    assert "--images" in capsys.readouterr().err


def test_benchmark_suite_runs(tmp_path):
    """The pytest-benchmark suite (outside the default run) still collects and runs: each case
    once, timing disabled, on a tiny model."""
    env = {**os.environ, "IQART_HOME": str(tmp_path)}
    with pytest.MonkeyPatch.context() as patch:  # int8 from a small image set, so the suite finds it
        patch.setenv("IQART_HOME", str(tmp_path))
        add_int8_graph(
            cached_artifact("qualiclip-tiny", bench_weights("qualiclip-tiny").path), "skimage:astronaut", None
        )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(REPO / "benchmarks"),
            "--bench-models",
            "qualiclip-tiny",
            "--bench-sizes",
            "64",
            "--bench-batch-sizes",
            "2",
            "--bench-backends",
            "torch,onnxruntime,onnxruntime-int8,tensorrt",
            "--bench-threads",
            "1",
            "--benchmark-disable",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 passed, 1 skipped" in result.stdout and "TensorRT" in result.stdout
