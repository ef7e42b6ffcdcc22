"""Cached artifacts are checked before use: a truncated or damaged graph is exported again,
saying so once, never a traceback; the cache's folders honour the umask."""

from __future__ import annotations

import os

import pytest

from iqart.engine.artifact_cache import artifact_dir, cached_artifact, cached_int8_graph, weights_sha256
from iqart.engine.cli.main import main
from iqart.export.artifact import read_spec, sha256_file
from iqart.train.models.checkpoints import save_checkpoint
from iqart.train.models.zoo import build_model
from tests.helpers import EXAMPLE_IMAGES, scramble

MODEL = "qualiclip-tiny"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("IQART_HOME", str(tmp_path / "home"))
    weights = tmp_path / "w.pt"
    save_checkpoint(weights, MODEL, scramble(build_model(MODEL, seed=6), 6).state_dict())
    return weights


def test_a_truncated_cached_graph_is_exported_again_saying_so_once(home, tmp_path, capsys):
    directory = cached_artifact(MODEL, home)
    assert directory == artifact_dir(MODEL, weights_sha256(MODEL, home))
    graph = directory / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])  # a disk that filled up mid-copy
    out = tmp_path / "s.csv"
    assert (
        main(["score", str(EXAMPLE_IMAGES / "coffee.png"), "--model", MODEL, "-w", str(home), "--out", str(out)]) == 0
    )
    err = capsys.readouterr().err
    assert (
        err.count("model.onnx does not match the sha256 in spec.json (truncated or damaged); exporting it again") == 1
    )
    assert sha256_file(graph) == read_spec(directory)["sha256"]["model.onnx"]
    assert (
        main(["score", str(EXAMPLE_IMAGES / "coffee.png"), "--model", MODEL, "-w", str(home), "--out", str(out)]) == 0
    )
    assert "exporting it again" not in capsys.readouterr().err  # sound now: used as it is


def test_the_cache_folders_honour_the_umask(home):
    previous = os.umask(0o022)
    try:
        directory = cached_artifact(MODEL, home)
    finally:
        os.umask(previous)
    assert directory.stat().st_mode & 0o777 == 0o755  # tempfile.mkdtemp alone gives 0700
    assert (directory / "plans").stat().st_mode & 0o777 == 0o755
    assert (directory / "model.onnx").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow  # calibrates twice (~40 s on 2 busy cores)
def test_a_truncated_int8_graph_is_calibrated_again(home, capsys):
    directory = cached_artifact(MODEL, home)
    graph = cached_int8_graph(directory)
    graph.write_bytes(graph.read_bytes()[:1000])
    assert cached_int8_graph(directory) == graph
    assert "model.int8.onnx does not match the sha256 in spec.json" in capsys.readouterr().err
    assert sha256_file(graph) == read_spec(directory)["sha256"]["model.int8.onnx"]
    assert graph.stat().st_size > 100_000 and sha256_file(graph) != sha256_file(directory / "model.onnx")


def test_an_exported_artifact_honours_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "artifact"
        assert main(["export", "-m", MODEL, "-o", str(out)]) == 0
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o755
