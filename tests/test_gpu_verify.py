"""benchmarks/gpu_verify.sh, the one-call GPU check: its dry run proves on this CPU machine that the
real run will not die on an import or an argument on the GPU image (which lacks open_clip, ftfy
and wcwidth), and the dry run's own blocking of those packages is itself checked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_verify.sh"
STEPS = ("imports", "build", "gpu-tests", "memcheck", "fused-bench", "bench-224", "decode-bench", "decode-tests",
         "bench-1024x768", "racecheck", "initcheck")


def dry_run(repo: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp_path), "OUT": str(tmp_path / "out-must-stay-empty")}
    env.pop("PYTHONPATH", None)
    return subprocess.run(["bash", str(repo / "benchmarks" / "gpu_verify.sh"), "--dry-run"], capture_output=True,
                          text=True, env=env, timeout=600)


def summary_rows(output: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^\| (\S+) \(dry\) \| (\w+) \|", output, re.MULTILINE)}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_checks_every_step_with_open_clip_blocked(tmp_path):
    result = dry_run(REPO, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert summary_rows(result.stdout) == {step: "ok" for step in STEPS}
    log = (Path(re.search(r"^results: (\S+) ", result.stdout, re.MULTILINE).group(1)) / "gpu_verify.log").read_text()
    assert "dry run ok: python3 -m pytest --noconftest" in log
    assert "bench: qualiclip (RN50) builds" in log and "bench: bpclip-nr (RN50) builds" in log
    assert not (tmp_path / "out-must-stay-empty").exists()  # the dry run never writes the device's $OUT


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k not in ("IQART_BLOCK_PACKAGES", "IQART_CARRIED_SITE")}
    environment = {**inherited, "PYTHONPATH": str(REPO / "benchmarks" / "device_image"), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)


def test_device_image_blocks_what_the_gpu_machine_lacks_unless_carried(tmp_path):
    blocked = _python("import open_clip", IQART_BLOCK_PACKAGES="open_clip,ftfy,wcwidth")
    assert blocked.returncode != 0 and "No module named 'open_clip' (the GPU image lacks it" in blocked.stderr
    assert _python("import ftfy", IQART_BLOCK_PACKAGES="open_clip,ftfy,wcwidth").returncode != 0
    carried = tmp_path / "site"
    (carried / "ftfy").mkdir(parents=True)
    (carried / "ftfy" / "__init__.py").write_text("CARRIED = True\n")
    from_carried = _python("import ftfy; print(ftfy.CARRIED)", IQART_BLOCK_PACKAGES="ftfy",
                           IQART_CARRIED_SITE=str(carried))
    assert from_carried.returncode == 0 and from_carried.stdout.strip() == "True", from_carried.stderr
    assert _python("import json, numpy", IQART_BLOCK_PACKAGES="open_clip").returncode == 0  # nothing else blocked


@pytest.mark.slow  # a second dry run (~20 s on 2 cores)
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("git") is None, reason="needs bash and git")
def test_dry_run_fails_naming_the_step_when_the_op_imports_the_model_zoo(tmp_path):
    copy = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file() and not name.endswith(".pt"):
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    fused_op = copy / "engine" / "backends" / "fused_op.py"
    fused_op.write_text(fused_op.read_text().replace("import torch\n", "import torch\n\nimport iqart.train.models.zoo\n", 1))
    result = dry_run(copy, tmp_path)
    assert result.returncode != 0
    rows = summary_rows(result.stdout)
    assert rows["imports"] == rows["build"] == rows["memcheck"] == rows["racecheck"] == "FAILED", result.stdout[-3000:]
    assert "No module named 'open_clip' (the GPU image lacks it" in result.stdout
