"""`import iqart` as users get it: the namespace, a project folder with its own train.py, and a
non-editable wheel that carries the demo weights and the kernel sources."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.helpers import EXAMPLE_IMAGES, REPO

TOP_LEVEL = ("train", "export", "engine")


def run_python(code: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_every_subpackage_is_listed_for_the_build():
    """A folder with an __init__.py that the build does not list would vanish from the wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"iqart": "."}
    on_disk = {"iqart"} | {
        "iqart." + ".".join(init.parent.relative_to(REPO).parts)
        for top in TOP_LEVEL
        for init in (REPO / top).rglob("__init__.py")
    }
    assert set(config["packages"]) == on_disk


def test_a_project_with_its_own_train_engine_and_export_modules(tmp_path, iqart_home):
    """Most ML projects hold a train.py: iqart must not care (it failed with "'train' is not a package")."""
    (tmp_path / "train.py").write_text("raise SystemExit('the project train.py was imported')\n")
    (tmp_path / "engine.py").write_text("raise SystemExit('the project engine.py was imported')\n")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "__init__.py").write_text("raise SystemExit('the project export/ was imported')\n")
    image = EXAMPLE_IMAGES / "chelsea.png"
    result = run_python(f"import iqart; print(iqart.Scorer('qualiclip-tiny').score([{str(image)!r}])[0])", tmp_path)
    assert result.returncode == 0, result.stderr
    assert 0.0 <= float(result.stdout.strip()) <= 1.0


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_installing_iqart_claims_no_generic_top_level_name(tmp_path, name):
    result = run_python(f"import {name}", tmp_path)
    assert result.returncode != 0 and f"No module named '{name}'" in result.stderr


def test_public_names_and_light_import(tmp_path):
    """`import iqart` loads neither ONNX Runtime nor open_clip until a public name is used, so the
    kernel code runs on GPU machines without them."""
    result = run_python(
        "import sys, iqart, iqart.engine.backends.fused_op, iqart.engine.backends.plugin\n"
        "heavy = [m for m in ('onnxruntime', 'open_clip') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert {'Scorer', 'create_metric', 'list_models'} <= set(iqart.__all__)\n"
        "assert 'qualiclip-tiny' in iqart.list_models() and callable(iqart.create_metric)\n"
        "print(iqart.__version__)",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_wheel_installs_and_scores_without_the_checkout(tmp_path):
    """`pip wheel .` -> a plain (non-editable) install that scores the examples with the packaged
    demo weights and finds the kernel sources, from a folder far from the checkout."""
    source, wheels, target, work = tmp_path / "source", tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    # from a copy: setuptools builds in-tree, and a stale build/ would put deleted modules in the wheel
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "runs"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("iqart-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    env = {"PYTHONPATH": str(target), "IQART_HOME": str(tmp_path / "home")}
    code = (
        "import iqart, pathlib\n"
        f"assert iqart.__file__.startswith({str(target)!r}), iqart.__file__\n"
        "from iqart.engine.backends.fused_op import KERNELS_DIR\n"
        "from iqart.engine.backends.plugin import build_key\n"
        "assert (KERNELS_DIR / 'CMakeLists.txt').is_file() and (KERNELS_DIR / 'fused_cross_attention.cu').is_file()\n"
        "print(build_key())\n"
    )
    result = run_python(code, work, env)
    assert result.returncode == 0, result.stderr
    cli = subprocess.run(
        [str(target / "bin" / "iqart"), "score", str(EXAMPLE_IMAGES), "-m", "qualiclip-tiny", "-o", "scores.csv"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert cli.returncode == 0, cli.stderr
    with open(work / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list(EXAMPLE_IMAGES.glob("*.png")))
    assert all(row["error"] == "" and 0 <= float(row["score"]) <= 1 for row in rows)


def test_first_run_prints_only_iqart_lines(tmp_path):
    """The quickstart on an empty cache (so the model is exported): stderr holds iqart's own lines
    only, among them one notice that demo weights are in use."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "iqart.engine.cli.main",
            "score",
            str(EXAMPLE_IMAGES),
            "--model",
            "qualiclip-tiny",
            "--out",
            str(tmp_path / "scores.csv"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "IQART_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert all(line.startswith("iqart: ") for line in lines), lines
    assert sum("demo weights" in line for line in lines) == 1
