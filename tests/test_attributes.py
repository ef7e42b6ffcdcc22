"""The attributes a score is made of, through every CPU backend and precision, the CLI and the
result files: they must match the PyTorch reference as the scores do, and QualiCLIP's score must
be the mean of its 7 pair probabilities in every backend.

Inputs are the sample photos and their degraded copies with the demo weights (as in
test_parity.py): attributes that tell the copies apart, so a match means something. Each
attribute column must itself spread over ten times its tolerance, or the column is not judged
here (BPCLIP's dimensions saturate for some: those are named by the assertion that skips them).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import iqart
from iqart.engine.cli.main import main
from iqart.engine.results.formats import read_result_file
from iqart.export.validate import FP16_ABS_TOL, FP32_REL_TOL
from iqart.train.metrics import srcc
from iqart.train.models.prompts import QUALITY_ADJECTIVES, attribute_names
from iqart.train.models.zoo import get_card
from tests.helpers import EXAMPLE_IMAGES, sample_inputs

pytestmark = pytest.mark.usefixtures("iqart_home")

MODELS = ["qualiclip-tiny", "bpclip-nr-tiny", "bpclip-fr-tiny"]
ADJECTIVE_SCALE = 100.0  # BPCLIP's adjective similarities are 100 x cosine: tolerances scale with it
# (backend, precision) -> absolute tolerance on attributes in [0, 1] (pair probabilities, dimensions),
# the scores' tolerance of that precision (test_parity.py states the measured worst cases)
CASES = {
    ("onnxruntime", "fp32"): FP32_REL_TOL,
    ("openvino", "fp32"): FP32_REL_TOL,
    ("onnxruntime", "fp16"): FP16_ABS_TOL,
    ("torch", "fp16"): FP16_ABS_TOL,
}
MIN_SRCC = 0.99
# Where an attribute misses its precision's score tolerance on these inputs (measured on a 2-core
# Intel Xeon with AVX-512 FP16): a pair probability or a dimension score is one softmax, not a
# mean of seven, so it moves more with the fp16 backbone's rounding than the score does. The miss
# is stated in docs/explain.md; here such an attribute is held to this bound instead (about 1.5x
# the measured miss), so the miss cannot grow unseen. The score keeps its own tolerance.
MISSES = {
    ("onnxruntime", "fp16", "qualiclip-tiny"): 3e-3,  # measured 2.07e-3 (noise_free_image)
    ("torch", "fp16", "bpclip-fr-tiny"): 8e-3,  # measured 5.3e-3 (the sharpness dimension)
}


@pytest.fixture(scope="module")
def reference():
    """name -> (scores, attributes) of torch fp32 on the inputs."""
    return {name: iqart.Scorer(name, "torch", "cpu").explain(*sample_inputs(get_card(name).task)) for name in MODELS}


def column_tolerances(name: str, atol: float) -> np.ndarray:
    names = attribute_names("qualiclip" if name.startswith("qualiclip") else "bpclip")
    return np.array([atol * (ADJECTIVE_SCALE if n.startswith("adj_") else 1.0) for n in names])


def assert_attributes_match(name: str, expected: np.ndarray, got: np.ndarray, atol: float) -> None:
    assert got.shape == expected.shape and np.isfinite(got).all()
    tolerances = column_tolerances(name, atol)
    delta = np.abs(got.astype(np.float64) - expected)
    worst = int(np.argmax((delta / tolerances).max(axis=0)))
    assert (delta <= tolerances).all(), (
        f"attribute {worst}: max |delta| {delta[:, worst].max():.3g} > {tolerances[worst]}"
    )
    judged = [j for j in range(expected.shape[1]) if np.ptp(expected[:, j]) >= 10 * tolerances[j]]
    assert len(judged) >= expected.shape[1] // 2, "too few attributes spread over ten times their tolerance"
    for j in judged:
        assert srcc(expected[:, j], got[:, j]) >= MIN_SRCC, f"attribute {j} ranks the inputs differently"


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("backend", "precision"), list(CASES))
def test_attributes_match_torch_in_every_backend(reference, name, backend, precision):
    scorer = iqart.Scorer(name, backend, "cpu", precision=precision)
    scores, attributes = scorer.explain(*sample_inputs(scorer.task))
    expected_scores, expected = reference[name]
    np.testing.assert_allclose(scores, scorer.score(*sample_inputs(scorer.task)), rtol=0, atol=1e-6)
    assert np.abs(scores - expected_scores).max() <= CASES[backend, precision]
    atol = MISSES.get((backend, precision, name), CASES[backend, precision])
    assert_attributes_match(name, expected.astype(np.float64), attributes, atol)
    if name.startswith("qualiclip"):  # the score is the mean of the pair probabilities, in every engine
        np.testing.assert_allclose(scores, attributes.mean(axis=1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_explain_writes_one_column_per_attribute_and_resume_keeps_them(tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    images = [str(p) for p in sample_inputs("nr")[0][:8]]
    assert main(["score", *images[:4], "-m", "bpclip-nr-tiny", "-o", str(out), "--explain"]) == 0
    assert main(["score", *images, "-m", "bpclip-nr-tiny", "-o", str(out), "--explain", "--resume"]) == 0
    rows = read_result_file(out)
    dimensions = list(QUALITY_ADJECTIVES)
    assert len(rows) == 8 and all(set(dimensions) <= row.keys() for row in rows)
    assert not any(key.startswith("adj_") for key in rows[0])
    _, attributes = iqart.Scorer("bpclip-nr-tiny").explain(images)
    by_path = {row["path"]: row for row in rows}
    for path, expected in zip(images, attributes, strict=True):
        got = [float(by_path[path][d]) for d in dimensions]
        np.testing.assert_allclose(got, expected[: len(dimensions)], rtol=0, atol=1e-6)


def test_explain_all_and_the_spec_name_every_attribute(tmp_path):
    out = tmp_path / "scores.csv"
    assert (
        main(["score", str(EXAMPLE_IMAGES / "coffee.png"), "-m", "bpclip-nr-tiny", "-o", str(out), "--explain", "all"])
        == 0
    )
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header[header.index("error") + 1 : header.index("model")] == attribute_names("bpclip")
    artifact = iqart.Scorer("qualiclip-tiny").artifact
    spec = json.loads((artifact / "spec.json").read_text())
    assert [o["name"] for o in spec["outputs"]] == ["score", "attributes"]
    assert spec["outputs"][1]["names"] == attribute_names("qualiclip") and spec["outputs"][1]["shape"][1] == 7


def test_the_report_names_the_attributes_that_pulled_the_lowest_images_down(tmp_path):
    """QualiCLIP on the sample photos: the noisy copies are among the lowest, and what pulled each
    down is its noise-free pair, far below the run's median."""
    out, report = tmp_path / "scores.csv", tmp_path / "report.html"
    assert main(["score", str(EXAMPLE_IMAGES), "-m", "qualiclip-tiny", "-o", str(out), "--explain"]) == 0
    assert main(["report", str(out), "-o", str(report), "--count", "4"]) == 0
    page = report.read_text()
    lowest = page.split("<h2>Lowest scored</h2>")[1].split("<h2>Highest scored</h2>")[0]
    captions = lowest.split("<figcaption>")[1:]
    noisy = [caption for caption in captions if "_noise.png" in caption]
    assert noisy, "no noisy copy among the lowest scored"
    assert all("<br>noise_free_image " in caption for caption in noisy), noisy


def test_list_names_each_models_attributes(capsys):
    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "sharp_edges" in lines["qualiclip-tiny"] and "noise_free_image" in lines["qualiclip"]
    assert "sharpness, noise, colour, exposure, artifacts, overall" in lines["bpclip-nr-tiny"]
