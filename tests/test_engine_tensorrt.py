"""The tensorrt backend and `iqart build`. The GPU tests need TensorRT (>= 11) and a CUDA GPU and
skip with that reason elsewhere; what happens without them is tested everywhere else."""

import importlib.util
import shutil
import sys

import numpy as np
import pytest
import torch

from iqart.engine.backends.plan_cache import NATIVE_GRAPH, PlanCache, PlanMismatchError
from iqart.engine.backends.tensorrt_backend import choose_attention
from iqart.engine.backends.tensorrt_build import RTX_TARGETS, target_capabilities
from iqart.engine.backends.tensorrt_import import TENSORRT_RTX, TensorRTUnavailableError, import_tensorrt
from iqart.engine.cli.main import main
from iqart.engine.pipeline.batch_scoring import score_jobs
from iqart.engine.pipeline.images import load_image
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.export.artifact import export_artifact
from iqart.export.validate import FP16_ABS_TOL
from iqart.train.models.checkpoints import save_checkpoint
from iqart.train.models.zoo import build_model, get_card
from tests.helpers import EXAMPLE_IMAGES, scramble

HAS_TRT = any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_bindings"))
needs_trt = pytest.mark.skipif(
    not HAS_TRT, reason="TensorRT is not installed (pip install 'iqart[trt]' on a GPU machine)"
)
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
without_trt = pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed")
needs_rtx = pytest.mark.skipif(
    not TENSORRT_RTX.installed(), reason="TensorRT for RTX is not installed (pip install 'iqart[trt-rtx]')"
)


def rtx_gpu_reason() -> str | None:
    """Why TensorRT-RTX plans cannot run here, or None: they need a GPU of its targets (no Hopper)."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    major, minor = torch.cuda.get_device_capability()
    if f"{major}.{minor}" not in target_capabilities(RTX_TARGETS).split(","):
        return f"TensorRT for RTX does not run on compute capability {major}.{minor} (its targets: {RTX_TARGETS})"
    return None


needs_rtx_gpu = pytest.mark.skipif(rtx_gpu_reason() is not None, reason=str(rtx_gpu_reason()))


def score_one_example(weights, backend: str, tmp_path, monkeypatch) -> int:
    """`iqart score` of one example image on `backend`, with an empty IQART_HOME: the exit code."""
    monkeypatch.setenv("IQART_HOME", str(tmp_path / "home"))
    command = ["score", str(EXAMPLE_IMAGES / "chelsea.png"), "--model", "qualiclip-tiny", "-w", str(weights)]
    return main([*command, "--backend", backend, "--out", str(tmp_path / "o.csv")])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    weights = root / "w.pt"
    save_checkpoint(weights, "qualiclip-tiny", scramble(build_model("qualiclip-tiny", seed=9), 9).state_dict())
    return export_artifact("qualiclip-tiny", root / "artifact", weights), weights


@without_trt
def test_build_without_tensorrt_exits_2_saying_so(artifact, capsys):
    directory, _ = artifact
    assert main(["build", str(directory)]) == 2
    assert "the tensorrt backend needs TensorRT (>= 11)" in capsys.readouterr().err
    assert not any((directory / "plans").iterdir())


@without_trt
def test_score_on_tensorrt_without_it_exits_2_before_exporting(artifact, tmp_path, monkeypatch, capsys):
    assert score_one_example(artifact[1], "tensorrt", tmp_path, monkeypatch) == 2
    assert "needs TensorRT" in capsys.readouterr().err
    assert not (tmp_path / "home").exists() and not (tmp_path / "o.csv").exists()


def test_build_checks_its_batch_sizes(artifact, capsys):
    directory, _ = artifact
    assert main(["build", str(directory), "--batch-sizes", "1", "8"]) == 2
    assert "--batch-sizes takes MIN OPT MAX, or one N" in capsys.readouterr().err
    assert main(["build", str(directory), "--batch-sizes", "8", "1", "32"]) == 2
    assert "batch sizes must be min <= opt <= max" in capsys.readouterr().err


@pytest.mark.trt
@needs_gpu
@needs_trt  # evaluated first: the reason shown where neither is present
def test_tensorrt_plan_scores_like_the_fp16_graph_and_is_cached(artifact, tmp_path, capsys):
    from iqart.engine.backends.onnxruntime_backend import OnnxRuntimeBackend
    from iqart.engine.backends.tensorrt_backend import TensorRTBackend

    directory, _ = artifact
    assert main(["build", str(directory), "--batch-sizes", "1", "4", "4", "--max-side", "512"]) == 0
    plans = sorted((directory / "plans").glob("*.plan"))
    assert len(plans) == 1 and "plan" in capsys.readouterr().out
    backend = TensorRTBackend(directory, batch_size=4, max_side=512, build=False)
    assert backend.plan_path == plans[0]
    policy = get_card("qualiclip-tiny").resize
    images = np.stack([load_image(EXAMPLE_IMAGES / name, policy) for name in ("chelsea.png", "chelsea_blur.png")])
    expected = OnnxRuntimeBackend(directory, "cpu", precision="fp16")(images)
    got = backend(images)
    assert got.dtype == np.float32 and np.abs(got - expected).max() <= FP16_ABS_TOL
    TensorRTBackend(directory, batch_size=2, max_side=256)  # covered by the cached plan: nothing new
    assert sorted((directory / "plans").glob("*.plan")) == plans


@pytest.mark.trt
@needs_gpu
@needs_trt
def test_tensorrt_refuses_to_run_without_a_fitting_plan_when_told_not_to_build(artifact, tmp_path):
    from iqart.engine.backends.tensorrt_backend import TensorRTBackend

    copy = shutil.copytree(artifact[0], tmp_path / "copy")
    for plan in (copy / "plans").iterdir():
        plan.unlink()
    with pytest.raises(PlanMismatchError, match="no TensorRT plan"):
        TensorRTBackend(copy, batch_size=2, build=False)
    assert not any(PlanCache(copy).directory.glob("*.plan"))


@pytest.mark.trt
@needs_gpu
@needs_trt
def test_image_outside_the_profile_is_an_error_row(artifact):
    from iqart.engine.backends.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(artifact[0], batch_size=2, max_side=256)
    jobs = [ScoreJob(EXAMPLE_IMAGES / "chelsea.png"), ScoreJob(EXAMPLE_IMAGES / "astronaut.png")]
    rows = list(score_jobs(jobs, backend, get_card("qualiclip-tiny").resize, batch_size=2))
    too_big = [r for r in rows if not r.ok]
    assert too_big and all("outside the plan's image sides 32..256" in r.error for r in too_big)


def _bindings_only_install(root, version: str):
    """A directory holding a module named as the tensorrt-cu13-bindings wheel's (no `tensorrt`
    module beside it), reporting `version`: how a bindings-only install looks to Python."""
    package = root / "tensorrt_bindings"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"__version__ = {version!r}\n")
    return root


@without_trt
def test_bindings_only_install_is_recognised_and_must_be_11(tmp_path, monkeypatch):
    try:
        monkeypatch.syspath_prepend(str(_bindings_only_install(tmp_path / "v11", "11.4.0.106")))
        trt = import_tensorrt()
        assert trt.__name__ == "tensorrt_bindings" and trt.__version__ == "11.4.0.106"
        del sys.modules["tensorrt_bindings"]
        monkeypatch.syspath_prepend(str(_bindings_only_install(tmp_path / "v10", "10.13.3")))
        with pytest.raises(TensorRTUnavailableError, match="TensorRT 10.13.3 found .* needs TensorRT 11 or newer"):
            import_tensorrt()
    finally:  # later tests must not find the stand-in module
        sys.modules.pop("tensorrt_bindings", None)


def test_attention_defaults_to_native_without_a_usable_plugin(artifact, tmp_path, monkeypatch):
    from iqart.engine.backends import plugin

    directory, _ = artifact
    monkeypatch.setenv(plugin.LIBRARY_ENV, str(tmp_path / "absent.so"))
    mode, why = choose_attention(None, directory)
    assert mode == "native" and why.startswith("no plugin: ") and "absent.so" in why
    assert choose_attention("plugin", directory) == ("plugin", "as asked")
    library = tmp_path / "libiqart_plugins.so"
    library.write_bytes(b"\x7fELF")
    monkeypatch.setenv(plugin.LIBRARY_ENV, str(library))
    assert choose_attention(None, directory) == ("plugin", f"plugin library {library}")
    with pytest.raises(ValueError, match="attention must be one of plugin, native"):
        choose_attention("flash", directory)
    old = shutil.copytree(directory, tmp_path / "old")
    (old / NATIVE_GRAPH).unlink()
    with pytest.raises(PlanMismatchError, match="predates it; export it again"):
        choose_attention("native", old)


def test_attention_is_a_tensorrt_option(artifact):
    from iqart.engine.scorer import Scorer

    with pytest.raises(ValueError, match="attention= picks the tensorrt backends' graph"):
        Scorer("qualiclip-tiny", "onnxruntime", weights=artifact[1], attention="native")


@pytest.mark.trt
@needs_gpu
@needs_trt
@pytest.mark.parametrize("attention", ["native", "plugin"])
def test_both_attention_graphs_score_like_the_fp16_graph(artifact, tmp_path, attention, capsys):
    """A plan from model.trt-native.onnx (TensorRT's IAttention) or model.trt.onnx (our plugin)."""
    from iqart.engine.backends import plugin
    from iqart.engine.backends.onnxruntime_backend import OnnxRuntimeBackend
    from iqart.engine.backends.tensorrt_backend import TensorRTBackend

    if attention == "plugin" and not plugin.plugin_status()[0]:
        pytest.skip(plugin.plugin_status()[1])
    directory = shutil.copytree(artifact[0], tmp_path / "a")
    assert main(["build", str(directory), "--batch-sizes", "2", "--max-side", "256", "--attention", attention]) == 0
    assert f"{attention} attention" in capsys.readouterr().out
    backend = TensorRTBackend(directory, batch_size=2, max_side=256, build=False, attention=attention)
    assert backend.plan_path.name.startswith(f"model.trt-{attention}-")
    policy = get_card("qualiclip-tiny").resize
    images = np.stack([load_image(EXAMPLE_IMAGES / name, policy)[:200, :200] for name in ("chelsea.png", "coffee.png")])
    expected = OnnxRuntimeBackend(directory, "cpu", precision="fp16")(images)
    assert np.abs(backend(images) - expected).max() <= FP16_ABS_TOL


@needs_rtx
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_tensorrt_rtx_scoring_without_a_gpu_says_how_to_build_instead(artifact, tmp_path, monkeypatch, capsys):
    assert score_one_example(artifact[1], "tensorrt-rtx", tmp_path, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "the tensorrt-rtx backend runs plans on a CUDA GPU" in err and "iqart build --backend tensorrt-rtx" in err
    assert not (tmp_path / "home").exists() and not (tmp_path / "o.csv").exists()


@pytest.mark.trt
@needs_rtx_gpu
@needs_rtx
def test_tensorrt_rtx_plan_built_ahead_of_time_scores_like_the_fp16_graph(artifact, tmp_path, capsys):
    """Built as a CPU build server would, then run JIT-specialised; its runtime cache is kept."""
    from iqart.engine.backends.onnxruntime_backend import OnnxRuntimeBackend
    from iqart.engine.backends.tensorrt_rtx_backend import TensorRTRTXBackend

    directory = shutil.copytree(artifact[0], tmp_path / "a")
    assert (
        main(
            [
                "build",
                str(directory),
                "--backend",
                "tensorrt-rtx",
                "--attention",
                "native",
                "--batch-sizes",
                "2",
                "--max-side",
                "256",
            ]
        )
        == 0
    )
    backend = TensorRTRTXBackend(directory, batch_size=2, max_side=256, build=False, attention="native")
    policy = get_card("qualiclip-tiny").resize
    images = np.stack([load_image(EXAMPLE_IMAGES / name, policy)[:200, :200] for name in ("chelsea.png", "coffee.png")])
    expected = OnnxRuntimeBackend(directory, "cpu", precision="fp16")(images)
    got = backend(images)
    assert np.isfinite(got).all() and np.abs(got - expected).max() <= FP16_ABS_TOL
    assert backend.runtime_cache_path.is_file() and backend.runtime_cache_path.stat().st_size > 0
