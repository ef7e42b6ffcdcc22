"""The C++ library (examples/cpp, CMake target iqart::scorer) built with CMake against the installed
openvino wheel, and checked against the Python engine: its scores equal `iqart score --backend
openvino` on the same files, its attributes (`--explain`, Scorer::explain) equal
`iqart.Scorer(..., backend="openvino").explain`, its resize equals the engine's byte for byte, and
bad artifacts, wrong sizes and truncated files give errors that name the file and the problem.

The build compiles the TensorRT runtime too wherever TensorRT's headers and the CUDA toolkit are
found (TRT_ROOT); that is asserted when they are."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import iqart
from iqart.engine.artifact_cache import weights_sha256
from iqart.engine.pipeline.images import resize
from iqart.train.models.zoo import ResizePolicy

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "examples" / "cpp"
IQART = [sys.executable, "-m", "iqart.engine.cli.entry"]  # the `iqart` command, from this interpreter
TOLERANCE = 1e-5


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)


def checked(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = run(command, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """The library, iqart_score_cpp and iqart_resize_raw, configured and built in a fresh build folder."""
    import openvino

    folder = tmp_path_factory.mktemp("cpp-build")
    openvino_cmake = Path(openvino.__file__).parent / "cmake"
    checked(["cmake", "-S", SOURCE, "-B", folder, f"-DOpenVINO_DIR={openvino_cmake}", "-DCMAKE_BUILD_TYPE=Release"])
    checked(["cmake", "--build", folder, "--parallel", str(min(4, os.cpu_count() or 1))])
    return folder


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("iqart-home")


def exported(home: Path, name: str) -> Path:
    """`iqart export` of `name` into the cache folder `iqart score` looks in, so both score one artifact."""
    directory = home / "artifacts" / f"{name}-{weights_sha256(name)[:16]}"
    if not (directory / "spec.json").is_file():
        checked([*IQART, "export", "-m", name, "-o", directory], env={**os.environ, "IQART_HOME": str(home)})
    return directory


def python_scores(home: Path, out: Path, name: str, *args) -> dict[str, float]:
    checked(
        [*IQART, "score", "-m", name, "--backend", "openvino", "-o", out, *args],
        env={**os.environ, "IQART_HOME": str(home)},
    )
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(not row["error"] for row in rows), rows
    return {str(Path(row["path"]).resolve()): float(row["score"]) for row in rows}


def cpp_scores(build: Path, *args) -> dict[str, float]:
    result = checked([build / "iqart_score_cpp", *args])
    scores = {}
    for line in result.stdout.splitlines():
        path, score = line.split("\t")
        scores[str(Path(path).resolve())] = float(score)
    return scores


def assert_same_scores(cpp: dict[str, float], python: dict[str, float], expected_files: int) -> None:
    assert len(cpp) == expected_files and sorted(cpp) == sorted(python)
    worst = max(abs(cpp[path] - python[path]) for path in python)
    assert worst <= TOLERANCE, f"largest difference {worst:.3g} over {len(python)} files"
    assert len(set(python.values())) > 1  # the scores move with the image: the comparison means something


def test_nr_scores_equal_the_python_engine(build, home, tmp_path):
    """qualiclip-tiny at native size on examples/images, plus JPEGs (4:2:0 and 4:4:4) decoded by libjpeg-turbo."""
    artifact = exported(home, "qualiclip-tiny")
    photo = Image.open(REPO / "examples" / "images" / "coffee.png")
    photo.save(tmp_path / "coffee.jpg", quality=90)
    photo.crop((3, 0, 300, 201)).save(tmp_path / "coffee-444.jpeg", quality=85, subsampling=0)
    images = sorted((REPO / "examples" / "images").glob("*.png"))
    files = [*images, tmp_path / "coffee.jpg", tmp_path / "coffee-444.jpeg"]
    python = python_scores(home, tmp_path / "nr.csv", "qualiclip-tiny", *files)
    cpp = cpp_scores(build, artifact, REPO / "examples" / "images", *files[len(images) :])
    assert_same_scores(cpp, python, len(images) + 2)


def test_fr_scores_equal_the_python_engine(build, home, tmp_path):
    """bpclip-fr-tiny resizes each image and its reference to 224x224 (from 320x320 and 320x213)."""
    artifact = exported(home, "bpclip-fr-tiny")
    pairs = REPO / "examples" / "fr"
    python = python_scores(home, tmp_path / "fr.csv", "bpclip-fr-tiny", "-r", pairs / "reference", pairs / "distorted")
    cpp = cpp_scores(build, artifact, "--ref", pairs / "reference", pairs / "distorted")
    assert_same_scores(cpp, python, len(list((pairs / "distorted").glob("*.png"))))


def cpp_explained(build: Path, *args) -> dict[str, tuple[float, dict[str, float]]]:
    """`iqart_score_cpp --explain`: per file, its score and its attributes by name, in printed order."""
    result = checked([build / "iqart_score_cpp", "--explain", *args])
    rows = {}
    for line in result.stdout.splitlines():
        path, score, *columns = line.split("\t")
        attributes = {name: float(value) for name, value in (column.split("=") for column in columns)}
        assert len(attributes) == len(columns), f"repeated attribute names in {line!r}"
        rows[str(Path(path).resolve())] = (float(score), attributes)
    return rows


def python_explained(home: Path, monkeypatch, name: str, images: list[Path], references: list[Path] | None = None):
    """iqart.Scorer(name, backend="openvino").explain on the artifact `exported` wrote: (names, rows)
    with rows as cpp_explained gives them."""
    monkeypatch.setenv("IQART_HOME", str(home))
    scorer = iqart.Scorer(name, backend="openvino")
    scores, attributes = scorer.explain(
        [str(path) for path in images], None if references is None else [str(p) for p in references]
    )
    rows = {
        str(Path(path).resolve()): (float(score), dict(zip(scorer.attribute_names, map(float, row), strict=True)))
        for path, score, row in zip(images, scores, attributes, strict=True)
    }
    return scorer.attribute_names, rows


def assert_same_attributes(cpp: dict, python: dict, names: list[str], expected_files: int) -> None:
    """The C++ rows carry the Python engine's attribute names in its order, and its values within
    TOLERANCE."""
    assert len(cpp) == expected_files and sorted(cpp) == sorted(python)
    worst = 0.0
    for path, (_, attributes) in python.items():
        assert list(cpp[path][1]) == names, path
        worst = max(worst, *(abs(cpp[path][1][key] - value) for key, value in attributes.items()))
    assert worst <= TOLERANCE, f"largest attribute difference {worst:.3g} over {len(python)} files"
    for key in names:  # each attribute moves with the image: the comparison means something
        assert len({attributes[key] for _, attributes in python.values()}) > 1, key


def test_nr_attributes_equal_the_python_engine_and_average_to_the_score(build, home, monkeypatch):
    """qualiclip-tiny's 7 antonym-pair probabilities: the C++ values are the Python engine's, and
    the C++ score (from the same run) is their mean, and the score `score()` gives."""
    artifact = exported(home, "qualiclip-tiny")
    images = sorted((REPO / "examples" / "images").glob("*.png"))
    names, python = python_explained(home, monkeypatch, "qualiclip-tiny", images)
    assert len(names) == 7 and names[0] == "good_photo"
    cpp = cpp_explained(build, artifact, REPO / "examples" / "images")
    assert_same_attributes(cpp, python, names, len(images))
    for path, (score, attributes) in cpp.items():
        assert score == pytest.approx(np.mean(list(attributes.values())), abs=1e-6), path
    plain = cpp_scores(build, artifact, REPO / "examples" / "images")
    assert {path: score for path, (score, _) in cpp.items()} == plain


def test_fr_attributes_equal_the_python_engine(build, home, monkeypatch):
    """bpclip-fr-tiny's 6 dimension scores and 40 adjective similarities (values up to ~50), with references."""
    artifact = exported(home, "bpclip-fr-tiny")
    pairs = REPO / "examples" / "fr"
    images = sorted((pairs / "distorted").glob("*.png"))
    references = [pairs / "reference" / image.name for image in images]
    names, python = python_explained(home, monkeypatch, "bpclip-fr-tiny", images, references)
    assert len(names) == 46 and sum(name.startswith("adj_") for name in names) == 40
    cpp = cpp_explained(build, artifact, "--ref", pairs / "reference", pairs / "distorted")
    assert_same_attributes(cpp, python, names, len(images))
    for path, (score, _) in cpp.items():
        assert score == pytest.approx(python[path][0], abs=TOLERANCE), path


RESIZE_CASES = [  # (width, height, policy): odd sizes, up and down by large factors, one side kept
    (97, 61, ResizePolicy("fixed", (224, 224))),
    (61, 97, ResizePolicy("fixed", (224, 224))),
    (3001, 37, ResizePolicy("fixed", (224, 224))),
    (1999, 1333, ResizePolicy("fixed", (224, 224))),
    (224, 301, ResizePolicy("fixed", (224, 224))),
    (7, 5, ResizePolicy("fixed", (613, 999))),
    (97, 61, ResizePolicy("short_side", (224,))),
    (4001, 2999, ResizePolicy("short_side", (224,))),
    (225, 225, ResizePolicy("short_side", (150,))),
    (83, 59, ResizePolicy("native")),
]


def policy_argument(policy: ResizePolicy) -> str:
    if policy.kind == "fixed":
        return f"fixed={policy.size[0]}x{policy.size[1]}"
    return f"short_side={policy.size[0]}" if policy.kind == "short_side" else "native"


@pytest.mark.parametrize(
    "width,height,policy", RESIZE_CASES, ids=[f"{w}x{h}-{policy_argument(p)}" for w, h, p in RESIZE_CASES]
)
def test_resize_equals_the_python_engine_byte_for_byte(build, tmp_path, width, height, policy):
    rng = np.random.default_rng(width * 10_000 + height)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    stripes = (np.arange(width, dtype=np.uint32) * 7 % 256).astype(np.uint8)
    pixels[: height // 2] = stripes[None, :, None]  # sharp edges above, noise below
    expected = np.asarray(resize(Image.fromarray(pixels), policy))
    pixels.tofile(tmp_path / "in.rgb")
    result = checked(
        [build / "iqart_resize_raw", tmp_path / "in.rgb", width, height, policy_argument(policy), tmp_path / "out.rgb"]
    )
    out_width, out_height = map(int, result.stdout.split())
    assert (out_height, out_width, 3) == expected.shape
    got = np.fromfile(tmp_path / "out.rgb", dtype=np.uint8).reshape(expected.shape)
    assert np.array_equal(got, expected), f"{int((got != expected).sum())} bytes differ"


@pytest.fixture
def artifact_copy(home, tmp_path) -> Path:
    """A copy of qualiclip-tiny's artifact to damage."""
    copy = tmp_path / "artifact"
    shutil.copytree(exported(home, "qualiclip-tiny"), copy, ignore=shutil.ignore_patterns("plans"))
    return copy


def failure(build: Path, *args) -> str:
    result = run([build / "iqart_score_cpp", *args])
    assert result.returncode == 1, result
    return result.stderr


def test_damaged_graph_is_refused(build, artifact_copy):
    with open(artifact_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    message = failure(build, artifact_copy, REPO / "examples" / "images" / "coffee.png")
    assert f"{artifact_copy / 'model.onnx'}: does not match the sha256 in spec.json" in message


def test_malformed_or_missing_spec_is_refused(build, artifact_copy, tmp_path):
    image = REPO / "examples" / "images" / "coffee.png"
    spec_path = artifact_copy / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "resize": {"thumbnail": 3}}))
    assert f'{spec_path}: unknown resize policy "thumbnail"' in failure(build, artifact_copy, image)
    spec_path.write_text(json.dumps(spec)[:200])
    assert f"{spec_path}: not valid JSON: line 1" in failure(build, artifact_copy, image)
    without = {**spec, "outputs": [output for output in spec["outputs"] if output["name"] != "attributes"]}
    spec_path.write_text(json.dumps(without))
    assert f'{spec_path}: no "attributes" output' in failure(build, artifact_copy, image)
    short = [
        output if output["name"] != "attributes" else {**output, "names": output["names"][:-1]}
        for output in spec["outputs"]
    ]
    spec_path.write_text(json.dumps({**spec, "outputs": short}))
    assert f"{spec_path}: the attributes output's shape is not [N, 6] (one column per name)" in failure(
        build, artifact_copy, image
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty}: not an iqart artifact (no spec.json)" in failure(build, empty, image)


def test_wrong_sizes_are_refused_and_the_rest_scored(build, home, tmp_path):
    nr = exported(home, "qualiclip-tiny")
    Image.new("RGB", (20, 40), (90, 120, 30)).save(tmp_path / "small.png")
    good = REPO / "examples" / "images" / "coffee.png"
    result = run([build / "iqart_score_cpp", nr, tmp_path / "small.png", good])
    assert result.returncode == 1
    assert f"{tmp_path / 'small.png'}: image 0: too small: 20x40; each side must be at least 32 pixels" in result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(good)]

    fr = exported(home, "bpclip-fr-tiny")
    (tmp_path / "ref").mkdir()
    reference = Image.open(REPO / "examples" / "fr" / "reference" / "coffee.png")
    reference.crop((0, 0, 300, 200)).save(tmp_path / "ref" / "coffee.png")
    message = failure(build, fr, "--ref", tmp_path / "ref", REPO / "examples" / "fr" / "distorted" / "coffee.png")
    assert "image 0: image 320x213 and reference 300x200 differ in size" in message
    assert "is a full-reference model: give --ref DIR" in failure(build, fr, good)
    assert "is a no-reference model: --ref does not apply" in failure(build, nr, "--ref", tmp_path, good)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_is_refused(build, home, tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    Image.open(REPO / "examples" / "images" / "chelsea.png").save(whole)
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    message = failure(build, exported(home, "qualiclip-tiny"), truncated, whole)
    kind = "PNG" if suffix == ".png" else "JPEG"
    assert f"{truncated}: corrupt or truncated {kind}" in message
    (tmp_path / "empty.png").write_bytes(b"")
    assert f"{tmp_path / 'empty.png'}: not a JPEG or PNG file (empty file)" in failure(
        build, exported(home, "qualiclip-tiny"), tmp_path / "empty.png"
    )


def test_installed_library_serves_a_find_package_project(build, home, tmp_path):
    """`cmake --install`, then examples/cpp/find_package_example builds against it with find_package
    alone and scores its own pixels (a gradient) as iqart_score_cpp scores the same pixels from a PNG."""
    prefix, app = tmp_path / "prefix", tmp_path / "app"
    checked(["cmake", "--install", build, "--prefix", prefix])
    checked(["cmake", "-S", SOURCE / "find_package_example", "-B", app, f"-DCMAKE_PREFIX_PATH={prefix}"])
    checked(["cmake", "--build", app])
    artifact = exported(home, "qualiclip-tiny")
    width, height = 96, 64
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    gradient = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(gradient).save(tmp_path / "gradient.png")
    own = float(checked([app / "score_gradient", artifact, width, height]).stdout)
    assert own == pytest.approx(
        cpp_scores(build, artifact, tmp_path / "gradient.png")[str(tmp_path / "gradient.png")], abs=1e-6
    )


def test_tensorrt_runtime_compiles_where_its_headers_are(build):
    """Configured with TensorRT's headers and the CUDA toolkit (TRT_ROOT), the build compiled the
    TensorRT runtime; without them the library says Runtime::TensorRT is not built in."""
    cache = (build / "CMakeCache.txt").read_text()
    objects = list(build.rglob("tensorrt_engine.cpp.o"))
    headers = "TRT_INCLUDE_DIR-NOTFOUND" not in cache and "TRT_INCLUDE_DIR:PATH=" in cache
    state = next(line.split("=", 1)[1] for line in cache.splitlines() if line.startswith("IQART_TENSORRT_RUNTIME:"))
    if state == "absent":
        assert not objects
    else:
        assert headers and objects and state in ("compiled", "linked")
