"""benchmarks/gpu_verify.sh, the one-call GPU check: its plan runs every correctness step before any
benchmark within the time budget, its dry run proves on this CPU machine that the real run will not
die on an import or an argument on the GPU image (which has only the distributions listed in
benchmarks/device_image/packages.txt: no open_clip, ftfy, wcwidth, OpenVINO or TensorRT), and the
dry run's own blocking of what that image lacks is itself checked."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_verify.sh"
PY_STEPS = (
    "imports",
    "build",
    "gpu-tests",
    "decode-tests",
    "memcheck",
    "racecheck",
    "initcheck",
    "fused-bench",
    "model-bench",
    "decode-bench",
)
CHECKS = {"imports", "sanitizer-preflight", "build", "gpu-tests", "decode-tests", "memcheck", "racecheck", "initcheck"}
BENCHES = {"fused-bench", "model-bench", "decode-bench"}
CARRIED = "open_clip_torch ftfy wcwidth"


def dry_run(repo: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp_path), "OUT": str(tmp_path / "out-must-stay-empty")}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        ["bash", str(repo / "benchmarks" / "gpu_verify.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def summary_rows(output: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| (\S+) \(dry\) \| (\w+) \|", output, re.MULTILINE)}


def plan() -> tuple[int, int, list[tuple[str, str, int]]]:
    """(budget, setup seconds, [(step, kind, cap)]) as `gpu_verify.sh --plan` prints them."""
    lines = subprocess.run(
        ["bash", str(SCRIPT), "--plan"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()
    _, budget, _, setup = lines[0].split()
    return int(budget), int(setup), [(name, kind, int(cap)) for name, kind, cap in map(str.split, lines[1:])]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_every_correctness_step_comes_before_any_benchmark_and_the_caps_fit_the_budget():
    budget, setup, steps = plan()
    kinds = [kind for _, kind, _ in steps]
    assert {name for name, kind, _ in steps if kind == "check"} == CHECKS
    assert {name for name, kind, _ in steps if kind == "bench"} == BENCHES
    assert kinds == sorted(kinds, key=["check", "bench"].index)  # no check after a bench
    assert [name for name, _, _ in steps][:3] == ["imports", "sanitizer-preflight", "build"]
    assert setup + sum(cap for _, _, cap in steps) <= budget == 540  # no step is cut because an earlier one ran long


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_checks_every_step_with_what_the_device_image_lacks_blocked(tmp_path):
    result = dry_run(REPO, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert summary_rows(result.stdout) == {step: "ok" for step in (*PY_STEPS, "sanitizer-preflight")}
    log = (Path(re.search(r"^results: (\S+) ", result.stdout, re.MULTILINE).group(1)) / "gpu_verify.log").read_text()
    ran = [
        (m.group(1), m.group(2), int(m.group(3)))
        for m in re.finditer(r"^== step (\S+) \((\w+), cap (\d+) s\)", log, re.MULTILINE)
    ]
    assert ran == plan()[2]  # the steps start in the plan's order, each with the plan's cap
    assert "dry run ok: python3 -m pytest --noconftest" in log
    assert "whole-model bench: qualiclip:224x224, bpclip-nr:224x224, qualiclip:1024x768 at batch 1,32,128 builds" in log
    if shutil.which("nvcc"):
        assert "sanitizer-preflight: compiled" in log
    assert not (tmp_path / "out-must-stay-empty").exists()  # the dry run never writes the device's $OUT


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("IQART_DEVICE", "IQART_CARRIED"))}
    environment = {
        **inherited,
        "PYTHONPATH": str(REPO / "benchmarks" / "device_image"),
        "IQART_DEVICE_PACKAGES": str(REPO / "benchmarks" / "device_image" / "packages.txt"),
        "IQART_CARRIED_DISTS": CARRIED,
        **env,
    }
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)


def test_device_image_blocks_what_the_gpu_machine_lacks_unless_carried(tmp_path):
    blocked = _python("import open_clip")
    assert blocked.returncode != 0
    assert "No module named 'open_clip' (the GPU image lacks open-clip-torch" in blocked.stderr
    assert "No module named 'imp' (Python 3.12 removed it" in _python("import imp").stderr
    assert _python("import ftfy").returncode != 0
    carried = tmp_path / "site"
    (carried / "ftfy").mkdir(parents=True)
    (carried / "ftfy" / "__init__.py").write_text("CARRIED = True\n")
    from_carried = _python("import ftfy; print(ftfy.CARRIED)", IQART_CARRIED_SITE=str(carried))
    assert from_carried.returncode == 0 and from_carried.stdout.strip() == "True", from_carried.stderr
    assert _python("import wcwidth", IQART_CARRIED_SITE=str(carried)).returncode != 0  # carried, but not in that site
    listed = _python("import json, numpy, torch, PIL, onnx, onnxruntime, pytest, iqart.train.models.attention")
    assert listed.returncode == 0, listed.stderr  # the device's own packages, and the checkout, import


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino installed (the dev extra)")
def test_device_image_blocks_installed_packages_it_does_not_list():
    result = _python("import openvino", IQART_CARRIED_SITE="installed")  # not carried: no site brings it
    assert "No module named 'openvino' (the GPU image lacks openvino" in result.stderr


@pytest.mark.slow  # a second dry run (~20 s on 2 cores)
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("git") is None, reason="needs bash and git")
def test_dry_run_fails_naming_the_step_when_the_op_imports_the_model_zoo(tmp_path):
    copy = tmp_path / "repo"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file() and not name.endswith(".pt"):
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    fused_op = copy / "engine" / "backends" / "fused_op.py"
    source = fused_op.read_text()
    fused_op.write_text(source.replace("import torch\n", "import torch\n\nimport iqart.train.models.zoo\n", 1))
    result = dry_run(copy, tmp_path)
    assert result.returncode != 0
    rows = summary_rows(result.stdout)
    assert rows["imports"] == rows["build"] == rows["memcheck"] == rows["racecheck"] == "FAILED", result.stdout[-3000:]
    assert "No module named 'open_clip' (the GPU image lacks open-clip-torch" in result.stdout
