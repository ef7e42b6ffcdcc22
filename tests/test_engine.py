"""The engine's Python API: Scorer over every input type, the artifact cache, the ONNX Runtime
backend, and the decode/batch pipeline."""

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

import iqart
from iqart.engine import artifact_cache
from iqart.engine.backends.onnxruntime_backend import OnnxRuntimeBackend, cuda_available, providers_for
from iqart.engine.hardware import physical_cores
from iqart.engine.pipeline.batch_scoring import PipelineStats, SizeBuckets, score_jobs
from iqart.engine.pipeline.images import ImageError, load_image
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.export.artifact import read_spec, sha256_file
from iqart.train.models.zoo import get_card
from tests.helpers import EXAMPLE_IMAGES

TINY = ["qualiclip-tiny", "bpclip-nr-tiny", "bpclip-fr-tiny"]

pytestmark = pytest.mark.usefixtures("iqart_home")  # one artifact cache per module (tests/conftest.py)


@pytest.fixture(scope="module")
def scorers(weights):
    """Factory: one Scorer per (model, backend), shared by the module."""
    made = {}

    def make(name, backend="onnxruntime"):
        if (name, backend) not in made:
            made[name, backend] = iqart.Scorer(name, backend, "cpu", batch_size=3, weights=weights(name))
        return made[name, backend]

    return make


def example_paths(n=None):
    return sorted(EXAMPLE_IMAGES.glob("*.png"))[:n]


def test_list_models_and_attributes(scorers):
    assert set(TINY) <= set(iqart.list_models())
    scorer = scorers("qualiclip-tiny")
    assert (scorer.task, scorer.score_range, scorer.higher_better, scorer.lower_better) == (
        "nr",
        (0.0, 1.0),
        True,
        False,
    )
    assert scorers("bpclip-fr-tiny").task == "fr"
    assert "backend='onnxruntime'" in repr(scorer) and "device='cpu'" in repr(scorer)


def test_unknown_model_backend_or_precision_is_a_clear_error(weights):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        iqart.Scorer("nope")
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        iqart.Scorer("qualiclip-tiny", "onnx")
    with pytest.raises(ValueError, match="onnxruntime backend runs fp32, fp16, int8, not 'bf16'"):
        iqart.Scorer("qualiclip-tiny", precision="bf16", weights=weights("qualiclip-tiny"))


def test_every_input_type_gives_the_same_score(scorers):
    scorer = scorers("qualiclip-tiny")
    path = EXAMPLE_IMAGES / "chelsea.png"
    array = np.asarray(Image.open(path).convert("RGB"))
    expected = scorer.score(path)
    assert expected.shape == (1,)
    chw = torch.from_numpy(array.copy()).permute(2, 0, 1)
    for form in (str(path), Image.open(path), array, array[None], chw, chw[None], chw.float() / 255):
        np.testing.assert_allclose(scorer.score(form), expected, rtol=1e-6, err_msg=type(form).__name__)


def test_mixed_sizes_keep_input_order(scorers):
    scorer = scorers("qualiclip-tiny")  # native resolution: the sizes differ
    paths = example_paths(5)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (40 + 8 * i, 72, 3), dtype=np.uint8) for i in range(3)]
    batch = scorer.score(paths + arrays)
    singles = np.concatenate([scorer.score(item) for item in paths + arrays])
    np.testing.assert_allclose(batch, singles, rtol=1e-5)


def test_bad_in_memory_input_is_a_clear_error(scorers, tmp_path):
    scorer = scorers("qualiclip-tiny")
    (tmp_path / "bad.jpg").write_text("text")
    with pytest.raises(ImageError, match=r"bad\.jpg: not a recognised image format"):
        scorer.score([EXAMPLE_IMAGES / "chelsea.png", tmp_path / "bad.jpg"])
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        scorer.score(torch.randn(3, 64, 64))  # a CLIP-normalised tensor by mistake
    with pytest.raises(TypeError, match="must be uint8"):
        scorer.score(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ImageError, match="too small: 8x8"):
        scorer.score(np.zeros((8, 8, 3), np.uint8))


def test_full_reference_scoring_checks_its_pairs(scorers):
    scorer = scorers("bpclip-fr-tiny")
    image = np.full((64, 64, 3), 128, np.uint8)
    with pytest.raises(ValueError, match="full-reference model: pass references"):
        scorer.score(image)
    with pytest.raises(ValueError, match="image 64x64 and reference 64x48 differ in size"):
        scorer.score(image, image[:48])
    with pytest.raises(ValueError, match="no-reference model"):
        scorers("qualiclip-tiny").score(image, image)


def test_score_files_streams_rows_with_errors(scorers, tmp_path):
    scorer = scorers("qualiclip-tiny")
    (tmp_path / "broken.png").write_bytes(b"")
    rows = scorer.score_files([EXAMPLE_IMAGES / "coffee.png", tmp_path / "broken.png"])
    assert iter(rows) is rows  # a generator: rows arrive as batches finish
    by_name = {Path(row.path).name: row for row in rows}
    assert by_name["coffee.png"].ok and not by_name["broken.png"].ok
    assert by_name["coffee.png"].score == pytest.approx(float(scorer.score(EXAMPLE_IMAGES / "coffee.png")[0]), rel=1e-6)


# --- the artifact cache -------------------------------------------------------------------------


def test_artifact_is_exported_once_per_weights_and_reused(weights, iqart_home):
    path = weights("qualiclip-tiny", seed=11)
    first = artifact_cache.cached_artifact("qualiclip-tiny", path)
    assert first == iqart_home / "artifacts" / f"qualiclip-tiny-{sha256_file(path)[:16]}"
    assert read_spec(first)["sha256"]["weights"] == sha256_file(path)
    stamp = (first / "model.onnx").stat().st_mtime_ns
    assert artifact_cache.cached_artifact("qualiclip-tiny", path) == first
    assert (first / "model.onnx").stat().st_mtime_ns == stamp  # reused, not re-exported
    other = artifact_cache.cached_artifact("qualiclip-tiny", weights("qualiclip-tiny", seed=12))
    assert other != first


def test_damaged_artifact_is_exported_again(weights):
    path = weights("qualiclip-tiny", seed=13)
    directory = artifact_cache.cached_artifact("qualiclip-tiny", path)
    (directory / "model.onnx").unlink()
    assert artifact_cache.cached_artifact("qualiclip-tiny", path) == directory
    assert (directory / "model.onnx").is_file()


def test_concurrent_first_use_exports_once(weights, monkeypatch):
    path = weights("qualiclip-tiny", seed=14)
    exports = []
    real_export = artifact_cache.export_artifact

    def counting_export(*args, **kwargs):
        exports.append(args)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(artifact_cache, "export_artifact", counting_export)
    results, errors = [], []

    def use():
        try:
            results.append(artifact_cache.cached_artifact("qualiclip-tiny", path))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1 and len(exports) == 1
    assert artifact_cache.is_complete(results[0], "qualiclip-tiny", sha256_file(path))
    assert not [p for p in results[0].parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_missing_weight_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="absent.pt: no such weight file"):
        artifact_cache.cached_artifact("qualiclip-tiny", tmp_path / "absent.pt")


# --- the ONNX Runtime backend -------------------------------------------------------------------


def test_session_is_tuned_for_the_cpu(scorers):
    backend = scorers("qualiclip-tiny").backend
    options = backend.session.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.intra_op_num_threads == physical_cores()
    assert backend.session.get_providers() == ["CPUExecutionProvider"] and backend.graph.name == "model.onnx"


def test_providers_follow_the_device():
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        providers_for("tpu")
    if cuda_available():
        assert providers_for(None)[0][0] == "CUDAExecutionProvider"
    else:
        assert providers_for(None) == ["CPUExecutionProvider"]
        with pytest.raises(ValueError, match="needs onnxruntime-gpu and a CUDA GPU"):
            providers_for("cuda")


def test_fp16_graph_on_request(scorers):
    """precision="fp16" runs model.fp16.onnx; its parity with torch on inputs that discriminate
    (demo weights, photos and degraded copies) is tests/test_parity.py's."""
    scorer = scorers("qualiclip-tiny")
    fp16 = OnnxRuntimeBackend(scorer.artifact, "cpu", precision="fp16")
    assert fp16.graph.name == "model.fp16.onnx"
    images = np.stack([load_image(p, scorer.resize) for p in example_paths(2)][:1])
    assert abs(float(fp16(images)[0]) - float(scorer.backend(images)[0])) <= 2e-3


# --- the pipeline -------------------------------------------------------------------------------


def test_size_buckets_batch_equal_sizes_and_bound_what_waits():
    buckets = SizeBuckets(batch_size=3, max_pending=6)

    def item(height):
        return ScoreJob(Path(f"{height}.png")), np.zeros((height, 40, 3), np.uint8), None

    assert buckets.add(item(40)) == [] and buckets.add(item(40)) == []
    full = buckets.add(item(40))
    assert [len(b) for b in full] == [3] and buckets.pending == 0
    for h in range(50, 56):  # six sizes, one image each: nothing fills
        assert buckets.add(item(h)) == []
    early = buckets.add(item(99))  # a seventh waiting image: the oldest bucket goes early
    assert [[i[1].shape[0] for i in b] for b in early] == [[50]] and buckets.pending == 6
    assert sorted(len(b) for b in buckets.drain()) == [1] * 6 and buckets.pending == 0


class Recording:
    """A real backend, with the batch shapes it was given recorded and one image size refused."""

    def __init__(self, backend, refuse_height=None):
        self.backend, self.refuse_height, self.batches = backend, refuse_height, []

    def __call__(self, images, references=None):
        self.batches.append(images.shape)
        if images.shape[1] == self.refuse_height:
            raise RuntimeError("this image is too much for the backend")
        return self.backend(images, references)


def test_pipeline_batches_streams_and_counts(scorers, tmp_path):
    scorer = scorers("qualiclip-tiny")
    image = EXAMPLE_IMAGES / "chelsea.png"
    pulled = []

    def jobs():
        for i in range(40):
            pulled.append(i)
            yield ScoreJob(image)

    stats = PipelineStats()
    recording = Recording(scorer.backend)
    rows = score_jobs(jobs(), recording, scorer.resize, batch_size=4, workers=2, stats=stats)
    first = next(rows)
    assert len(pulled) < 40  # the first row came before all jobs were read: bounded prefetch
    rest = list(rows)
    assert len(rest) == 39 and all(r.ok for r in [first, *rest])
    assert np.ptp([r.score for r in [first, *rest]]) < 1e-6  # one image 40 times: one score
    assert all(shape[0] == 4 for shape in recording.batches)
    assert stats.jobs == 40 and stats.batches == 10
    assert stats.decode_s > 0 and stats.inference_s > 0 and stats.wall_s >= stats.inference_s


def test_a_batch_the_backend_refuses_costs_only_the_image_at_fault(scorers, tmp_path):
    scorer = scorers("qualiclip-tiny")
    Image.new("RGB", (64, 48), "red").save(tmp_path / "odd.png")
    Image.new("RGB", (64, 48), "blue").save(tmp_path / "odd2.png")
    recording = Recording(scorer.backend, refuse_height=48)
    jobs = [ScoreJob(p) for p in (EXAMPLE_IMAGES / "coffee.png", tmp_path / "odd.png", tmp_path / "odd2.png")]
    rows = {Path(r.path).name: r for r in score_jobs(jobs, recording, scorer.resize, batch_size=2, workers=1)}
    assert rows["coffee.png"].ok
    assert rows["odd.png"].error == "backend failed: RuntimeError: this image is too much for the backend"
    assert not rows["odd2.png"].ok
    assert (2, 48, 64, 3) in recording.batches and (1, 48, 64, 3) in recording.batches  # retried one by one


def test_pipeline_rejects_nonsense_settings(scorers):
    scorer = scorers("qualiclip-tiny")
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        list(score_jobs([], scorer.backend, scorer.resize, batch_size=0))
    with pytest.raises(ValueError, match="workers must be at least 1"):
        list(score_jobs([], scorer.backend, scorer.resize, batch_size=1, workers=-1))


def test_native_resolution_images_are_not_resized(scorers):
    assert get_card("qualiclip-tiny").resize.kind == "native"
    assert (
        load_image(EXAMPLE_IMAGES / "chelsea.png", scorers("qualiclip-tiny").resize).shape[:2]
        == Image.open(EXAMPLE_IMAGES / "chelsea.png").size[::-1]
    )
