"""kernels/tests/plugin_enqueue_harness.cpp, the program that runs the TensorRT plugin's enqueue on a
GPU without TensorRT (benchmarks/plugin_enqueue_check.py, gpu_verify.sh's `plugin` step): it
compiles with nvcc against TensorRT 11's headers, and, with the plugin library built here, makes
every host-side call TensorRT would before stopping at the missing GPU (or runs the enqueues where
a GPU is). The headers are fetched (NVIDIA/TensorRT's include/ in .trt_headers/, or TRT_ROOT) and
never committed, so these tests skip where they are absent, as in CI.

Imports nothing of iqart: runs with --noconftest like tests/test_kernels.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from benchmarks.plugin_enqueue_check import (
    NO_DEVICE_EXIT,
    find_nvcc,
    harness_command,
    headers_problem,
    plugin_build_commands,
    tensorrt_root,
)

NVCC = find_nvcc()
TRT_ROOT = tensorrt_root()
HEADERS_REASON = (
    "needs TensorRT 11's headers (NvInferRuntime.h) in .trt_headers/include or $TRT_ROOT/include: "
    "fetched from NVIDIA/TensorRT, never committed (CONTRIBUTING.md, 'The GPU check')"
)
needs_headers = pytest.mark.skipif(headers_problem(TRT_ROOT) is not None, reason=HEADERS_REASON)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="needs nvcc (the CUDA toolkit)")


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@needs_nvcc
@needs_headers
def test_harness_compiles_with_nvcc_against_tensorrt_headers(tmp_path):
    exe = tmp_path / "plugin_enqueue_harness"
    result = _run(harness_command(NVCC, TRT_ROOT, exe))
    assert result.returncode == 0, result.stdout + result.stderr
    assert exe.stat().st_size > 0
    usage = _run([str(exe)])  # no library named: usage, exit 2, before any CUDA call
    assert usage.returncode == 2 and "usage: plugin_enqueue_harness" in usage.stdout


@needs_nvcc
@needs_headers
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake to build libiqart_plugins.so")
def test_harness_drives_the_plugin_from_its_creator_up_to_the_gpu(tmp_path):
    """The library built as the `plugin` step builds it, then the harness: without a GPU every call
    before the first allocation (creator, fields, types, shapes through the harness's expression
    builder, formats, configure, workspace, serialisation, attach, shape change) must pass for all
    six cases, and the program must say that only the enqueues are left (exit 3); with a GPU it
    must pass outright."""
    build = tmp_path / "build"
    for command in plugin_build_commands(NVCC, TRT_ROOT, build, "90"):
        result = _run(command)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    exe = tmp_path / "plugin_enqueue_harness"
    assert _run(harness_command(NVCC, TRT_ROOT, exe)).returncode == 0
    result = _run([str(exe), str(build / "libiqart_plugins.so"), "--seed", "7"])
    output = result.stdout + result.stderr
    assert "FAIL" not in output, output
    if result.returncode == NO_DEVICE_EXIT:
        assert "every host-side call passed for all 6 cases; the enqueues need a GPU" in output, output
    else:
        assert result.returncode == 0 and "all 6 cases within 2e-03 of float64" in output, output


@needs_nvcc
@needs_headers
def test_harness_refuses_a_library_without_the_plugin(tmp_path):
    """A shared library that exports no getCreators is refused (exit 1), not run."""
    source = tmp_path / "empty.cpp"
    source.write_text('extern "C" int unrelated() { return 0; }\n')
    library = tmp_path / "libempty.so"
    assert _run([NVCC, "-shared", "-Xcompiler", "-fPIC", str(source), "-o", str(library)]).returncode == 0
    exe = tmp_path / "plugin_enqueue_harness"
    assert _run(harness_command(NVCC, TRT_ROOT, exe)).returncode == 0
    result = _run([str(exe), str(library)])
    assert result.returncode == 1 and "FAIL: getCreators and setLoggerFinder are exported" in result.stdout
