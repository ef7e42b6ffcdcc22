"""A real TensorRT builds our graphs on the CPU: TensorRT for RTX (a dev dependency) runs its
builder ahead of time without a GPU, through the engine's own build code (the backend's profile,
build settings, plan cache and record). Engines only run on a GPU; those tests are in
tests/test_engine_tensorrt.py."""

from __future__ import annotations

import hashlib
import json

import onnx
import pytest
from onnx import TensorProto, helper

from iqart.engine.backends.plan_cache import GRAPHS, NO_PLUGIN, PlanCache, PlanMismatchError, fixed_size, profile_for
from iqart.engine.backends.plugin import load_plugin, plugin_status
from iqart.engine.backends.tensorrt_build import (
    RTX_TARGETS,
    _build,
    build_plan,
    cached_or_built_plan,
    settings_for,
    target_capabilities,
)
from iqart.engine.backends.tensorrt_import import TENSORRT_RTX
from iqart.engine.cli.main import main
from iqart.export.artifact import export_artifact
from iqart.export.plugin_node import PLUGIN_DOMAIN, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
from iqart.export.spec_files import read_spec
from iqart.train.models.zoo import build_model

TINY = ["qualiclip-tiny", "bpclip-nr-tiny", "bpclip-fr-tiny"]
RN50 = ["qualiclip", "bpclip-nr", "bpclip-fr"]
BATCH = (1, 8, 8)  # the backend's profile at its default batch size
needs_rtx = pytest.mark.skipif(
    not TENSORRT_RTX.installed(),
    reason="TensorRT for RTX is not installed (pip install 'iqart[trt-rtx]'; the dev extra has it)",
)
plugin_usable, plugin_reason = plugin_status()
needs_plugin = pytest.mark.skipif(not plugin_usable, reason=f"the plugin library cannot be built here: {plugin_reason}")
pytestmark = needs_rtx


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Artifacts of the tiny models (demo weights) and of the RN50 models (random weights)."""
    root = tmp_path_factory.mktemp("rtx")
    made = {}
    for name in TINY:
        made[name] = export_artifact(name, root / name)
    for name in RN50:
        made[name] = export_artifact(name, root / name, model=build_model(name, seed=1))
    return made


def expected_io(spec: dict) -> list[tuple[str, str, str, list[int]]]:
    """(name, mode, dtype, dims) the built network must have: the artifact contract, -1 where dynamic."""
    rows = []
    for tensor in spec["inputs"]:
        dims = [-1 if isinstance(d, str) else d for d in tensor["shape"]]
        rows.append((tensor["name"], "input", "UINT8", dims))
    rows.append(("score", "output", "FLOAT", [-1]))
    rows.append(("attributes", "output", "FLOAT", [-1, len(spec["outputs"][1]["names"])]))
    return rows


def check_built(artifact, path, key, attention: str) -> dict:
    """The plan, its record and its key say what was built, for which GPUs, from which graph."""
    spec = read_spec(artifact)
    record = json.loads(PlanCache(artifact).record_path(key).read_text())
    plan = path.read_bytes()
    assert len(plan) > 100_000 and record["plan_sha256"] == hashlib.sha256(plan).hexdigest()
    assert [(t["name"], t["mode"], t["dtype"], t["shape"]) for t in record["io"]] == expected_io(spec)
    profile = profile_for(spec, BATCH)
    shapes = [list(shape) for shape in profile.input_shapes(fixed_size(spec))]
    assert all(t["profile"] == shapes for t in record["io"] if t["mode"] == "input")
    assert record["library"] == "tensorrt-rtx" and record["sm"] == target_capabilities(RTX_TARGETS)
    assert record["graph"] == GRAPHS[attention] and record["graph_sha256"] == spec["sha256"][GRAPHS[attention]]
    assert record["settings"] == settings_for(TENSORRT_RTX).digest()
    return record


@pytest.mark.parametrize(
    ("name", "attention"),
    [(name, attention) for name in TINY for attention in ("native", "unfused")] + [(name, "native") for name in RN50],
)
def test_graph_builds_into_an_engine_on_the_cpu(artifacts, name, attention):
    artifact = artifacts[name]
    profile = profile_for(read_spec(artifact), BATCH)
    path, key = build_plan(artifact, profile, attention=attention, library=TENSORRT_RTX)
    record = check_built(artifact, path, key, attention)
    assert record["plugin"] == NO_PLUGIN
    if profile.side is not None:  # native resolution: H and W from the smallest image up to --max-side
        assert record["io"][0]["profile"][2][1:3] == [1024, 1024]
    mtime = path.stat().st_mtime_ns
    assert build_plan(artifact, profile, attention=attention, library=TENSORRT_RTX) == (path, key)  # cached
    assert path.stat().st_mtime_ns == mtime


@needs_plugin
@pytest.mark.parametrize("name", TINY)
def test_plugin_graph_builds_with_our_plugin_library(artifacts, name):
    """TensorRT-RTX's parser creates our FusedCrossAttention and its builder calls the plugin's
    build-time methods; the plan carries the plugin's name, namespace and serialized fields."""
    artifact = artifacts[name]
    path, key = build_plan(artifact, profile_for(read_spec(artifact), BATCH), attention="plugin", library=TENSORRT_RTX)
    record = check_built(artifact, path, key, "plugin")
    assert record["plugin"] == load_plugin(TENSORRT_RTX).key != NO_PLUGIN
    plan = path.read_bytes()
    for text in (PLUGIN_NAME, PLUGIN_NAMESPACE, "num_heads", "scale"):
        assert text.encode() in plan, text


def plugin_graph(path, width: int, heads: int, key_width: int | None = None) -> None:
    """One FusedCrossAttention node on fp16 inputs (B, 1, width), (B, N, key_width)."""
    key_width = key_width or width
    inputs = [
        helper.make_tensor_value_info("q", TensorProto.FLOAT16, ["B", 1, width]),
        helper.make_tensor_value_info("k", TensorProto.FLOAT16, ["B", "N", key_width]),
        helper.make_tensor_value_info("v", TensorProto.FLOAT16, ["B", "N", key_width]),
    ]
    node = helper.make_node(
        PLUGIN_NAME,
        ["q", "k", "v"],
        ["o"],
        domain=PLUGIN_DOMAIN,
        num_heads=heads,
        scale=0.0,
        plugin_version=PLUGIN_VERSION,
        plugin_namespace=PLUGIN_NAMESPACE,
    )
    graph = helper.make_graph(
        [node], "attention", inputs, [helper.make_tensor_value_info("o", TensorProto.FLOAT16, None)]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(PLUGIN_DOMAIN, 1)])
    onnx.save(model, path)


def attention_shapes(width: int, key_width: int | None = None):
    key_width = key_width or width
    q = ((1, 1, width), (4, 1, width), (8, 1, width))
    kv = ((1, 1, key_width), (4, 50, key_width), (8, 4096, key_width))
    return (q, kv, kv)


@needs_plugin
def test_plugin_checks_run_under_the_real_builder(tmp_path, capfd):
    """Shapes the plugin refuses fail the build with its own message: getOutputShapes and
    configurePlugin are called by the builder, not only by our host-side test."""
    trt = TENSORRT_RTX.load()
    load_plugin(TENSORRT_RTX)
    good = tmp_path / "good.onnx"
    plugin_graph(good, 128, 2)
    plan, _, io = _build(trt, good, settings_for(TENSORRT_RTX), attention_shapes(128), None)
    assert len(plan) > 0 and [t["name"] for t in io] == ["q", "k", "v", "o"] and io[3]["dtype"] == "HALF"
    for width, heads, key_width, message in ((96, 2, None, "head size"), (128, 2, 64, "same width")):
        bad = tmp_path / f"bad-{width}-{heads}.onnx"
        plugin_graph(bad, width, heads, key_width)
        with pytest.raises(RuntimeError):
            _build(trt, bad, settings_for(TENSORRT_RTX), attention_shapes(width, key_width), None)
        logged = "".join(capfd.readouterr())  # TensorRT's Python logger writes to stdout
        assert "FusedCrossAttention::" in logged and message in logged, logged[-2000:]


def test_iqart_build_writes_a_tensorrt_rtx_plan_without_a_gpu(artifacts, capsys):
    artifact = artifacts["bpclip-fr-tiny"]
    assert (
        main(
            [
                "build",
                str(artifact),
                "--backend",
                "tensorrt-rtx",
                "--attention",
                "native",
                "--batch-sizes",
                "1",
                "4",
                "16",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    records = [json.loads(p.read_text()) for p in (artifact / "plans").glob("*.json")]
    built = [r for r in records if r["profile"]["batch"] == [1, 4, 16]]
    assert len(built) == 1 and built[0]["library"] == "tensorrt-rtx" and "plan" in out
    assert built[0]["io"][0]["profile"][2] == [16, 224, 224, 3]


def plan_files(artifact) -> set[str]:
    return {path.name for path in (artifact / "plans").glob("*.plan")}


def test_a_plan_serves_every_request_its_profile_covers_and_no_other(tmp_path):
    """Real plans, built on the CPU: one for batches 1..32 serves a request for 8 (the backend's
    profile at batch 8) without a build; one for 1..8 alone cannot serve 32, and a new plan is
    built for that request. Other build settings would retire both (test_engine_plan_cache.py)."""
    artifact = export_artifact("bpclip-nr-tiny", tmp_path / "bpclip-nr-tiny")
    spec = read_spec(artifact)
    wide, narrow = profile_for(spec, (1, 8, 32)), profile_for(spec, (1, 8, 8))
    _, wide_key = build_plan(artifact, wide, attention="native", library=TENSORRT_RTX)
    built = plan_files(artifact)
    assert len(built) == 1

    key, env = cached_or_built_plan(artifact, narrow, attention="native", library=TENSORRT_RTX, build=False)
    assert key == wide_key and key.environment == env and plan_files(artifact) == built

    cache = PlanCache(artifact)
    for path in cache.directory.glob("*"):
        if path.suffix in (".plan", ".json"):
            path.unlink()
    _, narrow_key = build_plan(artifact, narrow, attention="native", library=TENSORRT_RTX)
    with pytest.raises(PlanMismatchError, match=r"does not cover .*'batch': \[1, 32, 32\]"):
        cached_or_built_plan(
            artifact, profile_for(spec, (1, 32, 32)), attention="native", library=TENSORRT_RTX, build=False
        )
    key, _ = cached_or_built_plan(artifact, profile_for(spec, (1, 32, 32)), attention="native", library=TENSORRT_RTX)
    assert key != narrow_key and key.profile.batch == (1, 32, 32) and len(plan_files(artifact)) == 2
