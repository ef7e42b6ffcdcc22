"""CPU INT8: calibration inputs, which nodes get quantised, the int8 graph's scores, its report,
and the commands and backends that use it."""

import json
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from iqart.engine.artifact_cache import cached_artifact, cached_int8_graph
from iqart.engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from iqart.engine.cli.main import main
from iqart.engine.scorer import Scorer
from iqart.export.artifact import INT8_GRAPH, read_spec, sha256_file
from iqart.export.int8 import BatchReader, quantisable_nodes
from iqart.export.int8_artifact import CALIBRATION_DEGRADATIONS, REPORT, add_int8_graph
from iqart.export.int8_parity import INT8_MIN_SRCC, OPENVINO_INT8_MIN_SRCC, PARITY_DEGRADATIONS, Int8Parity, parity_rows
from iqart.export.quality_images import load_source, quality_set
from iqart.export.validate import SRCC_MIN_SPAN, ort_session
from iqart.train.models.checkpoints import save_checkpoint
from iqart.train.models.zoo import build_model, get_card
from tests.helpers import EXAMPLE_IMAGES, scramble

CALIBRATION = "skimage:astronaut,coffee"  # small sets keep the tests fast; the defaults are larger
PARITY = "skimage:chelsea,rocket"


@pytest.fixture(scope="module")
def int8_home(tmp_path_factory):
    """$IQART_HOME with the cached artifact of a scrambled qualiclip-tiny, int8 graph added."""
    home = tmp_path_factory.mktemp("int8-home")
    weights = home / "weights.pt"
    save_checkpoint(weights, "qualiclip-tiny", scramble(build_model("qualiclip-tiny", seed=5), 5).state_dict())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IQART_HOME", str(home))
        artifact = cached_artifact("qualiclip-tiny", weights)
    report = add_int8_graph(artifact, CALIBRATION, PARITY)
    return home, weights, artifact, report


def test_quality_set_holds_real_then_degraded_images():
    real = load_source("skimage:astronaut,coffee", 64)
    assert real.shape == (2, 64, 64, 3) and real.dtype == np.uint8
    images, references = quality_set(real, [("jpeg", 4), ("darken", 3)], seed=0, fr=False)
    assert images.shape == (2 * 3, 64, 64, 3) and images.dtype == np.uint8 and references is None
    np.testing.assert_array_equal(images[:2], real)
    for copy in (images[2:4], images[4:6]):
        assert np.abs(copy.astype(int) - real.astype(int)).mean() > 2  # each degradation visibly changes them
    assert images[4:6].mean() < real.mean()  # "darken" darkens


def test_quality_set_pairs_fr_copies_with_their_pristine_source():
    real = load_source(str(EXAMPLE_IMAGES), 32)[:2]
    images, references = quality_set(real, [("jpeg", 4)], seed=0, fr=True)
    assert references.shape == images.shape
    np.testing.assert_array_equal(references[:2], images[:2])
    np.testing.assert_array_equal(references[2:], images[:2])


def test_load_source_names_a_bad_source():
    with pytest.raises(ValueError, match="nowhere"):
        load_source("/nowhere/at/all")


def test_calibration_and_parity_use_different_degradations():
    assert not {kind for kind, _ in CALIBRATION_DEGRADATIONS} & {kind for kind, _ in PARITY_DEGRADATIONS}


def test_batch_reader_feeds_every_image_once():
    images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    reader = BatchReader(images, images[::-1].copy(), batch=4)
    batches = []
    while (feeds := reader.get_next()) is not None:
        batches.append(feeds)
    assert [len(b["image"]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]), images)
    np.testing.assert_array_equal(np.concatenate([b["reference"] for b in batches]), images[::-1])


def test_quantisable_nodes_cover_both_siamese_passes_and_respect_keep_fp32():
    names = [
        "/conv1/Conv",
        "/conv2/Conv",
        "/layer1/layer1.0/conv1/Conv",
        "/conv1_1/Conv",
        "/conv2_1/Conv",
        "/layer1/layer1.0/conv1_1/Conv",
        "/avgpool_1/AveragePool",
        "/scales.0/gate/gate.0/Conv",
        "/scales.2/value/Conv",
        "/attnpool/q_proj/MatMul",
        "/preprocess/Sub",
        "/head/Conv",
    ]
    nodes = [helper.make_node(name.rsplit("/", 1)[1], ["x"], [f"y{i}"], name=name) for i, name in enumerate(names)]
    graph = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [1])],
        )
    )
    assert quantisable_nodes(graph) == [
        "/conv2/Conv",
        "/layer1/layer1.0/conv1/Conv",
        "/conv2_1/Conv",
        "/layer1/layer1.0/conv1_1/Conv",
        "/avgpool_1/AveragePool",
        "/scales.0/gate/gate.0/Conv",
        "/scales.2/value/Conv",
    ]
    assert quantisable_nodes(graph, [r"^/scales", r"_1/"]) == ["/conv2/Conv", "/layer1/layer1.0/conv1/Conv"]


def test_only_feature_map_convolutions_are_quantised(int8_home):
    _, _, artifact, report = int8_home
    graph = onnx.load(artifact / INT8_GRAPH)
    producers = {out: node for node in graph.graph.node for out in node.output}
    quantised = Counter(
        node.op_type
        for node in graph.graph.node
        if any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input)
    )
    convs = [node.name for node in graph.graph.node if node.op_type == "Conv"]
    assert quantised["Conv"] == len(convs) - 1 == report.quantised["Conv"] > 0
    assert report.fp32_convs == ["/conv1/Conv"]  # the stem's first convolution stays fp32
    for op in ("Softmax", "MatMul", "Gemm", "ReduceL2", "Div", "Sub"):  # preprocessing, pool, head stay fp32
        assert quantised[op] == 0, op


def test_full_reference_int8_keeps_layer3_and_layer4_of_both_passes_in_fp32(tmp_path, monkeypatch):
    """An FR score reads |Fd - Fr| of the deep stages, which int8 noise swamps: by default their
    convolutions stay fp32 in the graph, in the distorted pass and in the reference pass (_1)."""
    monkeypatch.setenv("IQART_HOME", str(tmp_path))
    weights = tmp_path / "w.pt"
    save_checkpoint(weights, "bpclip-fr-tiny", scramble(build_model("bpclip-fr-tiny", seed=6), 6).state_dict())
    artifact = cached_artifact("bpclip-fr-tiny", weights)
    report = add_int8_graph(artifact, "skimage:astronaut", None)
    graph = onnx.load(artifact / INT8_GRAPH).graph
    producers = {out: node for node in graph.node for out in node.output}
    quantised = {  # a convolution runs in int8 when its weights come dequantised
        node.name
        for node in graph.node
        if node.op_type == "Conv" and getattr(producers.get(node.input[1]), "op_type", "") == "DequantizeLinear"
    }
    deep = [n.name for n in graph.node if n.op_type == "Conv" and n.name.startswith(("/layer3/", "/layer4/"))]
    assert any(name.endswith("_1/Conv") for name in deep) and any(not name.endswith("_1/Conv") for name in deep)
    assert not quantised & set(deep), sorted(quantised & set(deep))
    assert any(name.startswith("/layer2/") for name in quantised)  # the shallower stages are int8
    assert report.keep_fp32 == [r"^/layer3/", r"^/layer4/"]


def test_int8_scores_track_fp32_at_any_size(int8_home):
    """Dynamic sizes and batches run, near fp32. Random weights on noise barely spread their
    scores, so this is no parity test: that is tests/test_parity.py's (demo weights, photos)."""
    artifact = int8_home[2]
    rng = np.random.default_rng(0)
    for height, width in ((224, 224), (96, 160)):  # native-resolution model: H, W stay dynamic
        images = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
        fp32 = ort_session(artifact / "model.onnx").run(None, {"image": images})[0]
        int8 = ort_session(artifact / INT8_GRAPH).run(None, {"image": images})[0]
        assert int8.shape == (3,) and np.isfinite(int8).all()
        assert np.abs(int8 - fp32).max() < 0.05


def test_report_and_spec_record_the_int8_graph(int8_home):
    artifact, report = int8_home[2], int8_home[3]
    saved = json.loads((artifact / REPORT).read_text())
    assert saved["calibration_source"] == CALIBRATION and saved["calibration_images"] == 2 * 15
    assert saved["parity_source"] == PARITY and saved["parity"]["images"] == 2 * (1 + len(PARITY_DEGRADATIONS))
    for parity in (report.parity, report.parity_openvino):
        assert 0 <= parity.mean_abs_delta <= parity.p95_abs_delta <= parity.max_abs_delta < 0.05
        assert parity.fp32_span > 0 and -1 <= parity.srcc <= 1
    assert saved["parity_openvino"]["images"] == saved["parity"]["images"]
    spec = read_spec(artifact)
    assert spec["sha256"][INT8_GRAPH] == sha256_file(artifact / INT8_GRAPH)
    assert spec["int8"] == {"graph": INT8_GRAPH, "report": REPORT}


def test_parity_rows_judge_srcc_only_when_scores_spread():
    spread = Int8Parity(100, srcc=0.985, mean_abs_delta=1e-3, p95_abs_delta=2e-3, max_abs_delta=4e-3, fp32_span=0.5)
    assert parity_rows(spread)[0].passed is False
    spread.srcc = INT8_MIN_SRCC
    assert parity_rows(spread)[0].passed is True
    flat = Int8Parity(
        100, srcc=0.2, mean_abs_delta=1e-4, p95_abs_delta=1e-4, max_abs_delta=1e-4, fp32_span=SRCC_MIN_SPAN / 2
    )
    assert parity_rows(flat)[0].passed is None and parity_rows(flat)[0].status() == "n/a"
    openvino = Int8Parity(
        100, srcc=0.992, mean_abs_delta=1e-3, p95_abs_delta=2e-3, max_abs_delta=4e-3, fp32_span=0.5, runtime="openvino"
    )  # passes ONNX Runtime's floor, not OpenVINO's
    assert parity_rows(openvino)[0].passed is False and "openvino" in parity_rows(openvino)[0].check


def test_scorer_and_backend_run_int8_on_the_cpu(int8_home, monkeypatch):
    home, weights, artifact, _ = int8_home
    monkeypatch.setenv("IQART_HOME", str(home))
    images = [str(path) for path in sorted(EXAMPLE_IMAGES.glob("*.png"))[:4]]
    int8 = Scorer("qualiclip-tiny", precision="int8", weights=weights).score(images)
    fp32 = Scorer("qualiclip-tiny", weights=weights).score(images)
    assert not np.array_equal(int8, fp32) and np.abs(int8 - fp32).max() < 0.05
    with pytest.raises(ValueError, match="CPU"):
        OnnxRuntimeBackend(artifact, "cuda", "int8")


def test_quantize_command_prints_the_parity_table(int8_home, tmp_path, capsys):
    artifact = shutil.copytree(int8_home[2], tmp_path / "artifact")  # the shared one stays as it was
    code = main(
        ["quantize", str(artifact), "--calibration", CALIBRATION, "--parity", PARITY, "--keep-fp32", r"^/layer4/"]
    )
    out = capsys.readouterr().out
    assert code == 0  # scrambled weights: the scores barely spread, so SRCC is n/a rather than a failure
    assert "| model.int8.onnx on onnxruntime vs model.onnx | SRCC over 44 real + degraded images |" in out
    assert "| model.int8.onnx on openvino vs model.onnx | SRCC over 44 real + degraded images |" in out
    report = json.loads((artifact / REPORT).read_text())
    assert report["keep_fp32"] == [r"^/layer4/"]
    assert any(name.startswith("/layer4/") for name in report["fp32_convs"])


def test_quantize_command_without_parity(int8_home, tmp_path, capsys):
    artifact = shutil.copytree(int8_home[2], tmp_path / "artifact")
    assert main(["quantize", str(artifact), "--calibration", CALIBRATION, "--parity", "none"]) == 0
    assert "no parity report" in capsys.readouterr().out


def test_export_int8_writes_the_int8_graph_with_the_artifact(int8_home, tmp_path, capsys):
    out = tmp_path / "exported"
    assert (
        main(
            [
                "export",
                "-m",
                "qualiclip-tiny",
                "-w",
                str(int8_home[1]),
                "-o",
                str(out),
                "--int8",
                "--calibration",
                CALIBRATION,
                "--parity",
                PARITY,
            ]
        )
        == 0
    )
    assert (out / INT8_GRAPH).is_file() and read_spec(out)["int8"]["report"] == REPORT
    assert "SRCC over 44 real + degraded images" in capsys.readouterr().out


@pytest.mark.slow
def test_int8_graph_is_calibrated_on_first_use_with_the_defaults(tmp_path, monkeypatch, scrambled):
    monkeypatch.setenv("IQART_HOME", str(tmp_path))
    weights = tmp_path / "w.pt"
    save_checkpoint(weights, "bpclip-fr-tiny", scrambled("bpclip-fr-tiny").state_dict())
    artifact = cached_artifact("bpclip-fr-tiny", weights)
    graph = cached_int8_graph(artifact)
    report = json.loads((artifact / REPORT).read_text())
    assert graph.is_file() and report["parity"]["images"] == 8 * (1 + len(PARITY_DEGRADATIONS))
    assert report["fp32_convs"][:2] == ["/conv1/Conv", "/conv1_1/Conv"]  # both siamese stems' first convs
    assert report["keep_fp32"] == [r"^/layer3/", r"^/layer4/"]  # the FR default (int8_artifact.FR_KEEP_FP32)
    for stage in ("/layer3/", "/layer4/"):
        assert any(name.startswith(stage) and name.endswith("_1/Conv") for name in report["fp32_convs"])
    assert cached_int8_graph(artifact).stat().st_mtime_ns == graph.stat().st_mtime_ns  # not redone


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qualiclip-tiny", "bpclip-nr-tiny", "bpclip-fr-tiny"])
def test_int8_ranks_like_fp32_on_demo_weights(name, tmp_path, monkeypatch):
    card = get_card(name)
    if not card.demo_weights.is_file():
        pytest.skip(f"no demo weights for {name} at {card.demo_weights}: SRCC is only meaningful on trained weights")
    monkeypatch.setenv("IQART_HOME", str(tmp_path))
    report = add_int8_graph(cached_artifact(name, card.demo_weights))
    assert report.parity.srcc_meaningful, f"demo weights' scores span only {report.parity.fp32_span:.3g}"
    assert report.parity.srcc >= INT8_MIN_SRCC, report.parity
    if report.parity_openvino is not None:  # the CPU speed engine's int8 target
        assert report.parity_openvino.min_srcc == OPENVINO_INT8_MIN_SRCC
        assert report.parity_openvino.srcc >= OPENVINO_INT8_MIN_SRCC, report.parity_openvino
