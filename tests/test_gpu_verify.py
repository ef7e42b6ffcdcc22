"""benchmarks/gpu_verify.sh, the GPU check in two parts that each fit one short device call: its plan
runs every correctness step before any benchmark within each part's time budget, its dry run
proves on this CPU machine that the real run will not die on an import or an argument on the GPU
image (which has only the distributions listed in benchmarks/device_image/packages.txt: no
open_clip, ftfy, wcwidth, OpenVINO or TensorRT), the dry run's own blocking of what that image
lacks is itself checked, and the steps' own scripts are checked where a CPU can run them (the op
benchmark's working sets, the training steps on tiny models)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_verify.sh"
PY_STEPS = {
    "checks": (
        "imports",
        "build",
        "plugin",
        "gpu-tests",
        "decode-tests",
        "memcheck",
        "racecheck",
        "initcheck",
        "train-steps",
    ),
    "bench": ("build", "fused-bench", "model-bench", "decode-bench"),
}
CHECKS = {
    "imports",
    "sanitizer-preflight",
    "build",
    "plugin",
    "gpu-tests",
    "decode-tests",
    "memcheck",
    "racecheck",
    "initcheck",
    "train-steps",
}
BENCHES = {"fused-bench", "model-bench", "decode-bench"}
CARRIED = "open_clip_torch ftfy wcwidth"
# one device call of at most 4 minutes: a machine start (up to 2 minutes), both parts back to back and a
# rerun of either fit the session's 15 minutes of device time
PART_BUDGET_S = 240
assert 120 + 3 * PART_BUDGET_S <= 15 * 60


def dry_run(repo: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp_path), "OUT": str(tmp_path / "out-must-stay-empty")}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        ["bash", str(repo / "benchmarks" / "gpu_verify.sh"), "--dry-run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def summary_rows(output: str) -> dict[str, dict[str, str]]:
    """{part: {step: status}} from the summaries the run prints, one a part."""
    parts = {}
    for summary in re.finditer(r"^# gpu_verify --part (\w+) .*?(?=^# gpu_verify|^results: )", output, re.M | re.S):
        rows = re.finditer(r"^\| (\S+) \(dry\) \| (\w+) \|", summary.group(0), re.MULTILINE)
        parts[summary.group(1)] = {m.group(1): m.group(2) for m in rows}
    return parts


def plan() -> tuple[int, int, list[tuple[str, str, str, int]]]:
    """(budget per part, setup seconds, [(part, step, kind, cap)]) as `gpu_verify.sh --plan` prints them."""
    lines = subprocess.run(
        ["bash", str(SCRIPT), "--plan"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()
    _, budget, _, setup = lines[0].split()
    return (
        int(budget),
        int(setup),
        [(part, name, kind, int(cap)) for part, name, kind, cap in map(str.split, lines[1:])],
    )


def part_log(output: str, part: str) -> str:
    return (Path(re.search(r"^results: (\S+) ", output, re.MULTILINE).group(1)) / f"gpu_verify-{part}.log").read_text()


def started_steps(log: str) -> list[tuple[str, str, int]]:
    return [
        (m.group(1), m.group(2), int(m.group(3)))
        for m in re.finditer(r"^== step (\S+) \((\w+), cap (\d+) s\)", log, re.MULTILINE)
    ]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_each_part_fits_one_short_device_call_with_every_check_before_any_benchmark():
    budget, setup, steps = plan()
    assert budget == PART_BUDGET_S
    assert [part for part, *_ in steps] == sorted((part for part, *_ in steps), key=["checks", "bench"].index)
    for part in ("checks", "bench"):
        mine = [(name, kind, cap) for p, name, kind, cap in steps if p == part]
        assert setup + sum(cap for _, _, cap in mine) <= budget, part  # no step is cut because an earlier one ran long
        kinds = [kind for _, kind, _ in mine]
        assert kinds == sorted(kinds, key=["check", "bench"].index), part  # no check after a bench
        assert mine[0 if part == "bench" else 2][0] == "build"  # the op is built before anything uses it
    assert {name for part, name, kind, _ in steps if part == "checks"} == CHECKS
    assert {name for part, name, kind, _ in steps if kind == "bench"} == BENCHES
    assert [name for part, name, _, _ in steps][:3] == ["imports", "sanitizer-preflight", "build"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_checks_both_parts_with_what_the_device_image_lacks_blocked(tmp_path):
    result = dry_run(REPO, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    rows = summary_rows(result.stdout)
    assert rows == {
        "checks": {step: "ok" for step in ("sanitizer-preflight", *PY_STEPS["checks"])},
        "bench": {step: "ok" for step in PY_STEPS["bench"]},
    }
    for part in ("checks", "bench"):  # the steps start in the plan's order, each with the plan's cap
        assert started_steps(part_log(result.stdout, part)) == [
            (name, kind, cap) for p, name, kind, cap in plan()[2] if p == part
        ]
    checks, bench = part_log(result.stdout, "checks"), part_log(result.stdout, "bench")
    assert "dry run ok: python3 -m pytest --noconftest" in checks
    assert "train steps: qualiclip, bpclip-nr, bpclip-fr build; 10 steps each on cuda" in checks
    assert "plugin enqueue check: headers " in checks
    assert (
        "whole-model bench: qualiclip:224x224, bpclip-nr:224x224, qualiclip:1024x768 at batch 1,32,128 builds" in bench
    )
    # the op benchmark's working sets, as the dry run prints them for an H100's 50 MiB L2: every
    # shape's at least twice the L2
    table = re.search(r"working sets for an L2 of 50 MiB, float16:\n(.*?)\n(?!\|)", bench, re.S).group(1)
    working_sets = [float(line.split("|")[8]) for line in table.splitlines()[2:]]
    assert len(working_sets) == 17 and min(working_sets) >= 2 * 50 * 2**20 / 1e6, table
    if shutil.which("nvcc"):
        assert "sanitizer-preflight: compiled" in checks
    assert not (tmp_path / "out-must-stay-empty").exists()  # the dry run never writes the device's $OUT


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_of_one_part_checks_that_part_alone(tmp_path):
    result = dry_run(REPO, tmp_path, "--part", "bench")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert summary_rows(result.stdout) == {"bench": {step: "ok" for step in PY_STEPS["bench"]}}
    out = Path(re.search(r"^results: (\S+) ", result.stdout, re.MULTILINE).group(1))
    assert sorted(path.name for path in out.iterdir()) == ["gpu_verify-bench.log", "summary-bench.md"]


def test_op_benchmark_working_sets_are_twice_the_l2_and_every_set_is_called():
    import torch

    from benchmarks.bench_fused_attention import calls_per_graph, shapes, working_set

    for l2_bytes in (50 * 2**20, 60 * 10**6):  # H100, H200
        for dtype in (torch.float16, torch.float32):
            for _, batch, q_len, kv_len, heads in shapes():
                set_bytes, sets = working_set(batch, q_len, kv_len, heads, dtype, l2_bytes)
                assert set_bytes * sets >= 2 * l2_bytes and calls_per_graph(sets) >= sets
                assert sets == 1 or set_bytes * (sets - 1) < 2 * l2_bytes  # no more sets than that takes
    # BPCLIP's 7x7 grid at batch 1 in fp16: 0.1 MB a set, so about a thousand of them
    assert working_set(1, 49, 49, 4, torch.float16, 50 * 2**20) == (100352, 1045)


def test_train_steps_run_each_trainers_step_with_autocast_and_the_losses_fall(tmp_path):
    """benchmarks/train_steps_gpu.py on the CPU (bf16 autocast) with two tiny models: the same code
    the GPU check runs, every step's loss written to the JSON as it goes."""
    out = tmp_path / "train_steps.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "train_steps_gpu.py"),
            "--models",
            "qualiclip-tiny,bpclip-fr-tiny",
            "--steps",
            "6",
            "--crop",
            "64",
            "--device",
            "cpu",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # small tensors: one thread is faster on a shared CPU
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    written = json.loads(out.read_text())
    assert [(row["model"], row["step"]) for row in written["steps"]] == [
        (model, step) for model in ("qualiclip-tiny", "bpclip-fr-tiny") for step in range(6)
    ]
    for summary in written["summaries"]:
        losses = [row["loss"] for row in written["steps"] if row["model"] == summary["model"]]
        assert summary["ok"] and summary["finite"] and sum(losses[-2:]) < sum(losses[:2]), summary
        assert summary["autocast"] == "bfloat16"


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
    rows = summary_rows(result.stdout)["checks"]
    assert rows["imports"] == rows["build"] == rows["memcheck"] == rows["racecheck"] == "FAILED", result.stdout[-3000:]
    assert "No module named 'open_clip' (the GPU image lacks open-clip-torch" in result.stdout
