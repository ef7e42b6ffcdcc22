"""Export: every graph of every tiny zoo model (RN50 in a slow test), checked and compared."""

import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from iqart.export.artifact import GRAPH_FILES, export_artifact, read_spec, sha256_file
from iqart.export.fp16 import FP32_OPS
from iqart.export.native_attention import NATIVE_GRAPH, NATIVE_OPSET, attention_nodes
from iqart.export.plugin_node import PLUGIN_NAME, FusedCrossAttention, numpy_cross_attention
from iqart.export.validate import FP16_ABS_TOL, FP32_REL_TOL, ort_session, validate_artifact
from iqart.train.models.attention import reference_cross_attention
from iqart.train.models.checkpoints import save_checkpoint
from iqart.train.models.zoo import get_card
from tests.helpers import EXAMPLE_IMAGES

TINY = ["qualiclip-tiny", "bpclip-nr-tiny", "bpclip-fr-tiny"]
EXPECTED_PLUGIN_NODES = {"qualiclip": 1, "bpclip": 9}  # the pool; 5 self-attention + 4 chain blocks


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """name -> (artifact dir, model) for every tiny model, exported once for the module."""
    from iqart.train.models.zoo import build_model
    from tests.helpers import scramble

    root = tmp_path_factory.mktemp("artifacts")
    out = {}
    for name in TINY:
        model = scramble(build_model(name, seed=3), 3)
        weights = root / f"{name}.pt"
        save_checkpoint(weights, name, model.state_dict())
        out[name] = (export_artifact(name, root / name, weights), model, weights)
    return out


def feeds_for(card, batch, height, width, rng):
    image = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    feeds = {"image": image}
    if card.task == "fr":
        feeds["reference"] = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    return feeds


def torch_scores(model, card, feeds):
    from iqart.export.inference import InferenceModule

    ref = torch.from_numpy(feeds["reference"]) if "reference" in feeds else None
    with torch.no_grad():
        return InferenceModule(model, card.task)(torch.from_numpy(feeds["image"]), ref).numpy()


@pytest.mark.parametrize("name", TINY)
def test_graphs_pass_the_full_checker_and_hold_no_text_tower(artifacts, name):
    artifact, _, _ = artifacts[name]
    for filename in GRAPH_FILES:
        model = onnx.load(artifact / filename)
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == (["image", "reference"] if "fr" in name else ["image"])
        assert [o.name for o in model.graph.output] == ["score", "attributes"]
        assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
        assert all(out.type.tensor_type.elem_type == TensorProto.FLOAT for out in model.graph.output)
        assert not any("token_embedding" in init.name or "transformer" in init.name for init in model.graph.initializer)
        assert "Gather" not in {n.op_type for n in model.graph.node if any("token" in i for i in n.input)}
        for graph_input in model.graph.input:  # TensorRT takes uint8 only as I/O converted by a cast
            consumers = [n for n in model.graph.node if graph_input.name in n.input]
            assert [n.op_type for n in consumers] == ["Cast"], f"{filename}: {graph_input.name} feeds {consumers}"
            assert consumers[0].attribute[0].i in (TensorProto.FLOAT, TensorProto.FLOAT16)


@pytest.mark.parametrize("name", TINY)
def test_fp32_graph_matches_torch_with_dynamic_batch_and_size(artifacts, name, rng):
    artifact, model, _ = artifacts[name]
    card = get_card(name)
    session = ort_session(artifact / "model.onnx")
    sizes = [(224, 224)] if card.resize.kind == "fixed" else [(224, 160), (97, 131)]
    for batch, (h, w) in zip((1, 3), sizes * 2, strict=False):
        feeds = feeds_for(card, batch, h, w, rng)
        got, expected = session.run(None, feeds)[0], torch_scores(model, card, feeds)
        assert got.shape == (batch,) and np.isfinite(got).all()
        assert np.abs(got - expected).max() <= FP32_REL_TOL * np.abs(expected).max()


@pytest.mark.parametrize("name", TINY)
def test_fp16_graph_is_strongly_typed_with_fp32_islands(artifacts, name):
    artifact, model, _ = artifacts[name]
    graph = onnx.shape_inference.infer_shapes(onnx.load(artifact / "model.fp16.onnx"), strict_mode=True).graph
    types = {
        vi.name: vi.type.tensor_type.elem_type for vi in list(graph.value_info) + list(graph.input) + list(graph.output)
    }
    types.update({init.name: init.data_type for init in graph.initializer})
    computes = [n for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    half_computes = [n for n in computes if types.get(n.output[0]) == TensorProto.FLOAT16]
    assert len(half_computes) >= 0.8 * len(computes), "the backbone's convolutions and matmuls run in fp16"
    for node in graph.node:
        if node.op_type in FP32_OPS:
            assert all(types.get(i) == TensorProto.FLOAT for i in node.input[:1]), (
                f"{node.op_type} {node.name} must be fp32"
            )
    conv_weights = [n.input[1] for n in graph.node if n.op_type == "Conv"]
    assert conv_weights and all(types[w] == TensorProto.FLOAT16 for w in conv_weights), "weights are stored in fp16"
    softmax_inputs = [types.get(n.input[0]) for n in graph.node if n.op_type == "Softmax"]
    assert softmax_inputs and all(t == TensorProto.FLOAT for t in softmax_inputs)
    spec = read_spec(artifact)
    assert "score head" in spec["fp16"]["fp32"] and spec["fp16"]["fp32_node_counts"]
    assert spec["fp16"]["fp32_node_counts"]["Softmax"] == len(softmax_inputs), (
        "the report counts the graph's own fp32 nodes"
    )


@pytest.mark.parametrize("name", TINY)
def test_trt_graph_has_one_plugin_node_per_attention_core(artifacts, name):
    artifact, model, _ = artifacts[name]
    graph = onnx.load(artifact / "model.trt.onnx").graph
    nodes = [n for n in graph.node if n.op_type == PLUGIN_NAME]
    heads = 8 if name.startswith("qualiclip") else 2
    assert len(nodes) == EXPECTED_PLUGIN_NODES[get_card(name).family]
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == "iqart" and len(node.input) == 3 and len(node.output) == 1
        assert attrs["num_heads"] == heads and attrs["scale"] == pytest.approx(1 / 8)
        assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"iqart"
    plain = Counter(n.op_type for n in onnx.load(artifact / "model.fp16.onnx").graph.node)
    assert Counter(n.op_type for n in graph.node)["Softmax"] == plain["Softmax"] - len(nodes)
    assert read_spec(artifact)["plugin"]["nodes"] == len(nodes)


@pytest.mark.parametrize("name", TINY)
def test_native_graph_is_the_plugin_graph_with_attention_ops(artifacts, name):
    """Same nodes as model.trt.onnx but each plugin node an opset-23 Attention with its heads,
    fed Q times the scale (no attribute TensorRT's importer rejects); hashed in spec.json. Its
    scores are judged against torch in tests/test_parity.py (demo weights, photos)."""
    artifact, _, _ = artifacts[name]
    native, plugin = onnx.load(artifact / NATIVE_GRAPH), onnx.load(artifact / "model.trt.onnx")
    assert {o.domain: o.version for o in native.opset_import} == {"": NATIVE_OPSET}
    attention = attention_nodes(native)
    plugin_nodes = [n for n in plugin.graph.node if n.op_type == PLUGIN_NAME]
    assert len(attention) == len(plugin_nodes) == EXPECTED_PLUGIN_NODES[get_card(name).family]
    heads = 8 if name.startswith("qualiclip") else 2
    producers = {out: n for n in native.graph.node for out in n.output}
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in native.graph.initializer}
    for node, original in zip(attention, plugin_nodes, strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert set(attrs) == {"q_num_heads", "kv_num_heads", "scale"}  # no softmax_precision: TensorRT rejects it
        assert attrs["q_num_heads"] == attrs["kv_num_heads"] == heads and attrs["scale"] == 1.0
        assert list(node.input[1:]) == list(original.input[1:]) and list(node.output) == list(original.output)
        scale_q = producers[node.input[0]]
        assert scale_q.op_type == "Mul" and scale_q.input[0] == original.input[0]
        factor = constants[scale_q.input[1]]
        assert factor.dtype == np.float16 and float(factor) == 1 / 8
    scalings = {producers[n.input[0]].name for n in attention}

    def others(m):
        return [
            (n.op_type, list(n.input))
            for n in m.graph.node
            if n.op_type not in ("Attention", PLUGIN_NAME) and n.name not in scalings
        ]

    assert others(native) == others(plugin)
    spec = read_spec(artifact)
    assert spec["sha256"][NATIVE_GRAPH] == sha256_file(artifact / NATIVE_GRAPH)
    assert spec["native_attention"] == {
        "graph": NATIVE_GRAPH,
        "op": "Attention",
        "opset": NATIVE_OPSET,
        "nodes": len(attention),
    }


def test_native_graph_runs_on_the_reference_evaluator(artifacts, rng):
    from onnx.reference import ReferenceEvaluator

    artifact, model, _ = artifacts["qualiclip-tiny"]
    feeds = feeds_for(get_card("qualiclip-tiny"), 1, 64, 96, rng)
    got = ReferenceEvaluator(str(artifact / NATIVE_GRAPH)).run(None, feeds)[0]
    assert (
        np.isfinite(got).all()
        and np.abs(got - torch_scores(model, get_card("qualiclip-tiny"), feeds)).max() <= FP16_ABS_TOL
    )


def test_numpy_plugin_matches_the_torch_core(rng):
    for nq, nk, heads in [(1, 50, 8), (49, 49, 4), (3, 700, 2)]:
        q, k, v = (rng.standard_normal((2, n, heads * 64)).astype(np.float32) for n in (nq, nk, nk))
        expected = reference_cross_attention(*map(torch.from_numpy, (q, k, v)), heads, 0.125).numpy()
        np.testing.assert_allclose(numpy_cross_attention(q, k, v, heads, 0.125), expected, rtol=1e-5, atol=1e-5)
        half = numpy_cross_attention(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16), heads, 0.125)
        assert half.dtype == np.float16 and np.abs(half.astype(np.float32) - expected).max() < 2e-2


@pytest.mark.parametrize("name", TINY)
def test_validate_passes_on_real_and_random_images(artifacts, name):
    artifact, model, _ = artifacts[name]
    rows = validate_artifact(artifact, model, get_card(name), sorted(EXAMPLE_IMAGES.glob("*.png"))[:4])
    assert len(rows) == 5 and any(NATIVE_GRAPH in row.check for row in rows)
    assert all(row.passed is not False for row in rows), rows
    assert all(np.isfinite(row.value) for row in rows if row.passed is not None)


def test_export_is_deterministic(artifacts, tmp_path):
    artifact, model, weights = artifacts["qualiclip-tiny"]
    again = export_artifact("qualiclip-tiny", tmp_path / "again", weights)
    first, second = read_spec(artifact)["sha256"], read_spec(again)["sha256"]
    assert first == second and first["weights"] and len(first) == 1 + len(GRAPH_FILES)


def test_spec_describes_the_contract(artifacts):
    for name in TINY:
        artifact, _, _ = artifacts[name]
        spec = json.loads((artifact / "spec.json").read_text())
        card = get_card(name)
        assert spec["name"] == name and spec["task"] == card.task and spec["higher_better"] is True
        assert spec["resize"] == card.resize.to_json() and spec["score_range"] == [0.0, 1.0]
        assert spec["inputs"][0]["dtype"] == "uint8" and spec["inputs"][0]["layout"] == "NHWC"
        assert len(spec["prompts"]) == (14 if card.family == "qualiclip" else 40)
        assert (artifact / "plans").is_dir()


def test_export_errors_leave_nothing_behind(tmp_path, monkeypatch):
    from iqart.engine.cli.main import main

    monkeypatch.setenv("IQART_HOME", str(tmp_path / "home"))
    assert main(["export", "-m", "nope", "-o", str(tmp_path / "a")]) == 2
    assert main(["export", "-m", "bpclip-nr", "-o", str(tmp_path / "b")]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["export", "-m", "bpclip-nr-tiny", "-w", str(tmp_path / "file"), "-o", str(tmp_path / "c")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_unwritable_output_is_a_clear_error(artifacts, tmp_path, capsys):
    from iqart.engine.cli.main import main

    _, _, weights = artifacts["qualiclip-tiny"]
    (tmp_path / "file").write_text("x")
    assert main(["export", "-m", "qualiclip-tiny", "-w", str(weights), "-o", str(tmp_path / "file" / "out")]) == 2
    assert "iqart: error:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_cli_validate_reports_and_rejects_other_weights(artifacts, tmp_path, capsys):
    from iqart.engine.cli.main import main

    artifact, _, weights = artifacts["bpclip-nr-tiny"]
    assert main(["validate", str(artifact), "-w", str(weights), "--skip-trt-reference"]) == 0
    out = capsys.readouterr().out
    assert "model.fp16.onnx (onnxruntime) vs torch" in out and f"{NATIVE_GRAPH} (onnxruntime) vs torch" in out
    _, _, other = artifacts["bpclip-fr-tiny"]
    assert main(["validate", str(artifact), "-w", str(other)]) == 2
    assert "sha256 differs" in capsys.readouterr().err


def test_trt_graph_runs_on_the_reference_evaluator(artifacts, rng):
    from onnx.reference import ReferenceEvaluator

    artifact, model, _ = artifacts["qualiclip-tiny"]
    feeds = feeds_for(get_card("qualiclip-tiny"), 2, 64, 96, rng)
    got = ReferenceEvaluator(str(artifact / "model.trt.onnx"), new_ops=[FusedCrossAttention]).run(None, feeds)[0]
    assert (
        np.isfinite(got).all()
        and np.abs(got - torch_scores(model, get_card("qualiclip-tiny"), feeds)).max() <= FP16_ABS_TOL
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qualiclip", "bpclip-nr", "bpclip-fr"])
def test_rn50_export_and_parity(name, tmp_path):
    import time

    from iqart.train.models.zoo import build_model
    from tests.helpers import scramble

    model = scramble(build_model(name), 0)
    weights = tmp_path / "w.pt"
    save_checkpoint(weights, name, model.state_dict())
    started = time.perf_counter()
    artifact = export_artifact(name, tmp_path / name, weights)
    assert time.perf_counter() - started < 60
    rows = validate_artifact(artifact, model, get_card(name), sorted(EXAMPLE_IMAGES.glob("*.png"))[:2], trt_check=False)
    assert all(row.passed is not False for row in rows), rows
