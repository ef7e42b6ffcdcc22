"""GPU decoding (iqart.engine.pipeline.gpu_decode): what goes to nvJPEG and what to the CPU path,
the options, the fallback, orientation and resize on tensors, and the error rows.

On the CPU the GPU path's own code runs with torchvision's CPU JPEG decoder (libjpeg-turbo,
which decodes exactly as PIL's): everything but nvJPEG itself is exercised. Tests marked gpu
run nvJPEG and skip where torch.cuda is unavailable.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from iqart.engine.backends.feeds import graph_feeds
from iqart.engine.backends.torch_backend import TorchBackend
from iqart.engine.cli.main import main
from iqart.engine.pipeline.batch_scoring import PipelineStats, _stack, score_jobs
from iqart.engine.pipeline.gpu_decode import (
    GpuDecoder,
    GpuJob,
    check_decode_device,
    gpu_decoder_for,
    gpu_readable,
    is_srgb,
    orient,
    prepare_job,
    resize_like_pil,
    torchvision_decode,
)
from iqart.engine.pipeline.images import MIN_SIDE, as_array, open_image, resize, resize_target
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.train.models.zoo import ResizePolicy
from tests.helpers import DISPLAY_P3, EXAMPLE_IMAGES

NATIVE = ResizePolicy("native")
FIXED = ResizePolicy("fixed", (224, 224))
SHORT = ResizePolicy("short_side", (96,))
CUDA = torch.cuda.is_available()


def needs_gpu(test):
    """Marked gpu (`-m gpu` selects it) and skipped without CUDA, unless IQART_REQUIRE_GPU=1 (a GPU
    check, where a skip would be a broken run: the test fails instead), as in test_kernels.py."""
    skip = pytest.mark.skipif(
        not CUDA and not os.environ.get("IQART_REQUIRE_GPU"),
        reason="nvJPEG needs a CUDA GPU; torch.cuda.is_available() is False",
    )
    return pytest.mark.gpu(skip(test))


no_gpu_here = pytest.mark.skipif(CUDA, reason="checks the error given where there is no CUDA GPU")
SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def photo(width: int = 400, height: int = 300, seed: int = 0) -> Image.Image:
    """A photo with noise (not too smooth for JPEG), cropped and resized to width x height."""
    with Image.open(EXAMPLE_IMAGES / "chelsea.png") as image:
        base = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(seed).normal(0, 6, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def save_jpeg(image: Image.Image, path: Path, orientation: int = 1, **options) -> Path:
    if orientation != 1:
        exif = image.getexif()
        exif[0x0112] = orientation
        options["exif"] = exif
    image.save(path, "JPEG", quality=options.pop("quality", 90), **options)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """JPEGs the GPU takes (every orientation, greyscale, an sRGB profile, a pair) and files it
    leaves to the CPU path (other formats and JPEG kinds, broken and missing files)."""
    folder = tmp_path_factory.mktemp("gpu_decode")
    image = photo()
    for orientation in range(1, 9):
        save_jpeg(image, folder / f"o{orientation}.jpg", orientation)
    save_jpeg(image.convert("L"), folder / "grey.jpg")
    save_jpeg(image, folder / "srgb.jpg", icc_profile=SRGB_PROFILE)
    save_jpeg(image, folder / "ref.jpg", quality=98)
    # the CPU path's files
    image.save(folder / "png.png")
    save_jpeg(image, folder / "progressive.jpg", progressive=True)
    save_jpeg(image.convert("CMYK"), folder / "cmyk.jpg")
    save_jpeg(image, folder / "p3.jpg", icc_profile=DISPLAY_P3)
    save_jpeg(image.convert("L"), folder / "grey_icc.jpg", icc_profile=DISPLAY_P3)
    data = (folder / "o1.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (folder / "empty.jpg").write_bytes(b"")
    save_jpeg(image.resize((20, 300)), folder / "thin.jpg")
    os.mkfifo(folder / "fifo.jpg")
    return folder


GPU_FILES = [f"o{n}.jpg" for n in range(1, 9)] + ["grey.jpg", "srgb.jpg", "ref.jpg"]
CPU_FILES = {
    "png.png": "not a JPEG",
    "progressive.jpg": "progressive JPEG",
    "cmyk.jpg": "CMYK JPEG",
    "p3.jpg": "ICC profile other than sRGB",
    "grey_icc.jpg": "ICC profile other than sRGB",
    "truncated.jpg": "no end-of-image marker",
    "garbage.jpg": "header not read",
    "empty.jpg": "not a JPEG",
    "thin.jpg": "size out of range",
    "fifo.jpg": "header not read",
    "missing.jpg": "header not read",
}


class Recording:
    """A backend that scores a batch by its mean and keeps every batch it was given."""

    takes_cuda_tensors = True
    device = torch.device("cpu")

    def __init__(self):
        self.batches: list = []

    def __call__(self, images, references=None):
        self.batches.append(images)
        images = torch.as_tensor(images).double()
        if references is not None:
            images = images - torch.as_tensor(references).double()
        return images.mean(dim=(1, 2, 3)).float().cpu().numpy()


def rows_by_name(rows) -> dict:
    return {Path(row.path).name: row for row in rows}


# --- what goes where ------------------------------------------------------------------------------


def test_dispatch_by_format_and_kind(folder):
    for name in GPU_FILES:
        assert not isinstance(gpu_readable(folder / name), str), name
    for name, reason in CPU_FILES.items():
        readable = gpu_readable(folder / name)
        assert isinstance(readable, str) and readable.startswith(reason), (name, readable)
    assert gpu_readable(folder / "o6.jpg").upright_size == (300, 400)  # a quarter turn swaps the sides


def test_srgb_profiles_are_recognised_by_what_the_cpu_path_does_with_them():
    assert is_srgb(SRGB_PROFILE)
    assert not is_srgb(DISPLAY_P3)  # a P3 red is redder than the same values in sRGB
    assert is_srgb(b"not a profile")  # the CPU path ignores it and reads the values as sRGB


def test_a_pair_goes_to_the_gpu_only_whole_and_matching(folder):
    assert isinstance(prepare_job(ScoreJob(folder / "o1.jpg", folder / "ref.jpg")), GpuJob)
    assert prepare_job(ScoreJob(folder / "o1.jpg", folder / "png.png")) == "not a JPEG"
    assert prepare_job(ScoreJob(folder / "o6.jpg", folder / "ref.jpg")) == "pair sizes differ"  # upright 300x400


# --- orientation and resize on tensors ------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_on_tensors_is_pils_exif_transpose(folder, orientation):
    array = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = np.asarray(open_image_with_orientation(array, orientation))
    turned = orient(torch.from_numpy(array).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(turned, expected)


def open_image_with_orientation(array: np.ndarray, orientation: int) -> Image.Image:
    from PIL import ImageOps

    image = Image.fromarray(array)
    image.getexif()[0x0112] = orientation
    return ImageOps.exif_transpose(image)


@pytest.mark.parametrize("size", [(224, 224), (96, 128), (37, 41), (300, 399), (600, 800), (300, 200)])
def test_torch_resize_matches_pil_bicubic_within_one_level(size):
    """PIL BICUBIC vs resize_like_pil on CPU float tensors: at most 1 level, in under 0.1% of
    values (measured: 0.0003% to 0.04% on this noisy photo, downscales and upscales alike)."""
    image = photo(400, 300, seed=1)
    height, width = size
    expected = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=None), dtype=np.int16)
    ours = resize_like_pil(torch.from_numpy(np.array(image)).permute(2, 0, 1), width, height)
    difference = np.abs(ours.permute(1, 2, 0).numpy().astype(np.int16) - expected)
    assert difference.max() <= 1
    assert (difference > 0).mean() < 1e-3


# The resize rule written out by hand, not computed by resize_target: (width, height, policy) ->
# the (width, height) the model sees. short_side N scales the shorter side to N and the longer
# side to round(long * N / short), rounded to the nearest integer with ties to even (Python's
# round; the C++ library's std::nearbyint). The rows marked "floor" would come out one pixel
# smaller if the rule floored; those marked "tie" would differ if it rounded half up.
RESIZE_TABLE = [
    (400, 300, ResizePolicy("short_side", (96,)), (128, 96)),  # 400 * 96 / 300 = 128 exactly
    (300, 400, ResizePolicy("short_side", (96,)), (96, 128)),
    (97, 131, ResizePolicy("short_side", (96,)), (96, 130)),  # 12576 / 97 = 129.65; floor 129
    (131, 97, ResizePolicy("short_side", (96,)), (130, 96)),  # floor 129
    (96, 96, ResizePolicy("short_side", (96,)), (96, 96)),  # already the size
    (640, 427, ResizePolicy("short_side", (224,)), (336, 224)),  # 143360 / 427 = 335.74; floor 335
    (427, 640, ResizePolicy("short_side", (224,)), (224, 336)),  # floor 335
    (4001, 2999, ResizePolicy("short_side", (224,)), (299, 224)),  # 896224 / 2999 = 298.84; floor 298
    (1920, 1080, ResizePolicy("short_side", (224,)), (398, 224)),  # 430080 / 1080 = 398.22
    (33, 100, ResizePolicy("short_side", (224,)), (224, 679)),  # upscaled: 22400 / 33 = 678.79; floor 678
    (97, 61, ResizePolicy("short_side", (224,)), (356, 224)),  # upscaled: 21728 / 61 = 356.20
    (65, 64, ResizePolicy("short_side", (32,)), (32, 32)),  # 2080 / 64 = 32.5: tie to even 32; half up 33
    (64, 65, ResizePolicy("short_side", (32,)), (32, 32)),  # tie
    (67, 64, ResizePolicy("short_side", (32,)), (34, 32)),  # 2144 / 64 = 33.5: tie to even 34; floor 33
    (5, 2, ResizePolicy("short_side", (1,)), (2, 1)),  # 2.5: tie to even 2; half up 3
    (7, 2, ResizePolicy("short_side", (1,)), (4, 1)),  # 3.5: tie to even 4; floor 3
    (400, 300, ResizePolicy("fixed", (192, 256)), (256, 192)),  # fixed is (height, width)
    (97, 131, ResizePolicy("fixed", (192, 256)), (256, 192)),
    (97, 131, ResizePolicy("native"), (97, 131)),
]


def table_id(case) -> str:
    width, height, policy, _ = case
    return f"{width}x{height}-{policy.kind}{'x'.join(map(str, policy.size or ()))}"


def test_the_resize_table_tells_rounding_from_flooring_and_ties_from_half_up():
    """The table can catch the plausible wrong rules: some rows differ under each."""
    floored = [w * p.size[0] // min(w, h) for w, h, p, _ in RESIZE_TABLE if p.kind == "short_side" and w > h]
    rounded = [expected[0] for w, h, p, expected in RESIZE_TABLE if p.kind == "short_side" and w > h]
    assert sum(f != r for f, r in zip(floored, rounded, strict=True)) >= 4
    half_up = [int(w * p.size[0] / min(w, h) + 0.5) for w, h, p, _ in RESIZE_TABLE if p.kind == "short_side" and w > h]
    assert sum(u != r for u, r in zip(half_up, rounded, strict=True)) >= 2


@pytest.mark.parametrize("case", RESIZE_TABLE, ids=table_id)
def test_resize_target_and_the_cpu_path_follow_the_table(case):
    width, height, policy, expected = case
    assert resize_target(width, height, policy) == expected
    assert resize(Image.new("RGB", (width, height)), policy).size == expected


GPU_TABLE = [case for case in RESIZE_TABLE if min(case[:2]) >= MIN_SIDE and case[0] * case[1] <= 2_100_000]


def table_jpegs(folder: Path) -> list[tuple[Path, ResizePolicy, tuple[int, int]]]:
    """One JPEG per GPU-sized row of the table; every other one stored on its side with EXIF
    orientation 6, so the rule is applied to the upright size."""
    files = []
    for index, (width, height, policy, expected) in enumerate(GPU_TABLE):
        upright = photo(width, height, seed=index)
        if index % 2:
            path = save_jpeg(upright.transpose(Image.Transpose.ROTATE_90), folder / f"t{index}.jpg", orientation=6)
        else:
            path = save_jpeg(upright, folder / f"t{index}.jpg")
        files.append((path, policy, expected))
    return files


def check_gpu_path_sizes(folder: Path, decoder: GpuDecoder) -> None:
    assert len(GPU_TABLE) >= 10
    for path, policy, expected in table_jpegs(folder):
        job = prepare_job(ScoreJob(path))
        assert isinstance(job, GpuJob), (path.name, job)
        [(_, images)] = list(decoder.decode_jobs([job], policy))
        assert images is not None, path.name
        assert tuple(images[0].shape) == (expected[1], expected[0], 3), (path.name, policy)


def test_the_gpu_paths_code_sizes_follow_the_table(tmp_path):
    """The GPU path's own orientation and resize on tensors give the table's sizes (here with
    torchvision's CPU decoder; test_nvjpeg_sizes_follow_the_table runs nvJPEG)."""
    check_gpu_path_sizes(tmp_path, GpuDecoder("cpu"))


# --- the pipeline ---------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [NATIVE, SHORT], ids=["native", "short_side"])
def test_gpu_path_gives_the_cpu_paths_rows(folder, policy):
    """Same rows either way: scores within the resize's rounding, every error row word for word."""
    jobs = [ScoreJob(folder / name) for name in [*GPU_FILES, *CPU_FILES]]
    rows = {}
    for gpu in (None, GpuDecoder("cpu")):
        stats = PipelineStats()
        rows[gpu is None] = rows_by_name(score_jobs(jobs, Recording(), policy, 4, 2, stats, gpu=gpu, decode_timeout=5))
    cpu, ours = rows[True], rows[False]
    assert stats.gpu_decoded == len(GPU_FILES) and stats.gpu_rejected == 0
    assert cpu.keys() == ours.keys() == {job.path.name for job in jobs}
    for name, row in cpu.items():
        assert ours[name].error == row.error, name
        if row.ok:
            assert ours[name].score == pytest.approx(row.score, abs=1e-3 if policy == SHORT else 0), name
    failed = {name for name, row in cpu.items() if not row.ok}
    assert failed == {"truncated.jpg", "garbage.jpg", "empty.jpg", "thin.jpg", "fifo.jpg", "missing.jpg"}
    assert cpu["truncated.jpg"].error.startswith("corrupt or truncated image")


def test_gpu_path_pixels_equal_the_cpu_paths_at_native_size(folder):
    """libjpeg-turbo in torchvision decodes as PIL's does: with no resize, identical inputs."""
    for name in GPU_FILES:
        recording = Recording()
        list(score_jobs([ScoreJob(folder / name)], recording, NATIVE, 1, 1, gpu=GpuDecoder("cpu")))
        np.testing.assert_array_equal(np.asarray(recording.batches[0][0]), as_array(open_image(folder / name), NATIVE))


def test_fixed_size_is_a_full_decode_and_the_resize(folder):
    """The CPU path decodes a JPEG bound for a fixed size DCT-reduced; the GPU path decodes in
    full, so it matches the full decode's resize (to a level), not the reduced one."""
    recording = Recording()
    list(score_jobs([ScoreJob(folder / "o6.jpg")], recording, FIXED, 1, 1, gpu=GpuDecoder("cpu")))
    ours = np.asarray(recording.batches[0][0]).astype(np.int16)
    full = as_array(open_image(folder / "o6.jpg"), FIXED).astype(np.int16)
    assert ours.shape == (224, 224, 3) and np.abs(ours - full).max() <= 1


def test_pairs_on_the_gpu_path(folder):
    jobs = [
        ScoreJob(folder / "o1.jpg", folder / "ref.jpg"),
        ScoreJob(folder / "o6.jpg", folder / "ref.jpg"),
        ScoreJob(folder / "o1.jpg", folder / "missing.jpg"),
    ]
    cpu = {(row.path, row.reference): row for row in score_jobs(jobs, Recording(), NATIVE, 2, 1)}
    stats = PipelineStats()
    ours = {
        (row.path, row.reference): row
        for row in score_jobs(jobs, Recording(), NATIVE, 2, 1, stats, gpu=GpuDecoder("cpu"))
    }
    assert stats.gpu_decoded == 1
    assert {key: (row.score, row.error) for key, row in ours.items()} == {
        key: (row.score, row.error) for key, row in cpu.items()
    }
    errors = sorted(row.error for row in ours.values() if not row.ok)
    assert "differ in size" in errors[0] and errors[1].startswith("reference ")


# --- fallback ---------------------------------------------------------------------------------------


def test_a_file_the_decoder_rejects_costs_only_itself(folder):
    """The batched call fails, each file is retried alone, and the one still failing is decoded
    by the CPU path: every row scored, the same as the CPU path's."""
    rejected = (folder / "o3.jpg").read_bytes()
    calls = []

    def picky(data, device):
        calls.append(len(data))
        if any(bytes(d.numpy()) == rejected for d in data):
            raise RuntimeError("nvjpegDecodeBatched failed: NVJPEG_STATUS_BAD_JPEG")
        return torchvision_decode(data, device)

    jobs = [ScoreJob(folder / name) for name in GPU_FILES]
    stats = PipelineStats()
    ours = rows_by_name(score_jobs(jobs, Recording(), NATIVE, len(jobs), 2, stats, gpu=GpuDecoder("cpu", picky)))
    cpu = rows_by_name(score_jobs(jobs, Recording(), NATIVE, len(jobs), 2))
    assert calls == [len(jobs)] + [1] * len(jobs)
    assert stats.gpu_rejected == 1 and stats.gpu_decoded == len(jobs) - 1
    assert {name: row.score for name, row in ours.items()} == {name: row.score for name, row in cpu.items()}


def test_a_decoder_that_always_fails_leaves_everything_to_the_cpu(folder):
    def broken(data, device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    jobs = [ScoreJob(folder / name) for name in ["o1.jpg", "o6.jpg", "garbage.jpg"]]
    stats = PipelineStats()
    ours = rows_by_name(score_jobs(jobs, Recording(), NATIVE, 2, 1, stats, gpu=GpuDecoder("cpu", broken)))
    cpu = rows_by_name(score_jobs(jobs, Recording(), NATIVE, 2, 1))
    assert stats.gpu_rejected == 2 and stats.gpu_decoded == 0
    assert {n: (r.score, r.error) for n, r in ours.items()} == {n: (r.score, r.error) for n, r in cpu.items()}


def test_a_decode_of_the_wrong_size_goes_to_the_cpu(folder):
    def cropping(data, device):
        return [image[:, :-1] for image in torchvision_decode(data, device)]

    stats = PipelineStats()
    rows = list(
        score_jobs([ScoreJob(folder / "o1.jpg")], Recording(), NATIVE, 1, 1, stats, gpu=GpuDecoder("cpu", cropping))
    )
    assert rows[0].ok and stats.gpu_rejected == 1


def test_decode_official_never_uses_the_gpu_decoder(folder):
    stats = PipelineStats()
    rows = list(
        score_jobs(
            [ScoreJob(folder / "o6.jpg")], Recording(), NATIVE, 1, 1, stats, decode="official", gpu=GpuDecoder("cpu")
        )
    )
    assert rows[0].ok and stats.gpu_decoded == 0


# --- options ----------------------------------------------------------------------------------------


class CudaBackend:
    """Only what the dispatch reads of a backend on a GPU."""

    device = torch.device("cuda", 0)
    takes_cuda_tensors = True


def cpu_decode_on_any_device(data, device):
    return torchvision_decode(data, torch.device("cpu"))


def test_the_decode_device_defaults_to_the_backends():
    assert gpu_decoder_for(None, Recording()) is None  # a CPU backend: PIL
    assert gpu_decoder_for("cpu", CudaBackend()) is None
    assert gpu_decoder_for(None, CudaBackend(), "official") is None
    decoder = gpu_decoder_for(None, CudaBackend(), decode_fn=cpu_decode_on_any_device)
    assert decoder is not None and decoder.device == torch.device("cuda", 0)  # the backend's GPU


def test_a_default_gpu_decoder_that_cannot_decode_falls_back_with_one_line(capsys):
    def no_nvjpeg(data, device):
        raise RuntimeError("torchvision was not compiled with nvjpeg support")

    assert gpu_decoder_for(None, CudaBackend(), decode_fn=no_nvjpeg) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "decoding on the CPU" in err and "nvjpeg support" in err


def test_bad_decode_devices_are_errors():
    with pytest.raises(ValueError, match="must be one of cpu, cuda"):
        check_decode_device("gpu")


@no_gpu_here
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        gpu_decoder_for("cuda", Recording())
    code = main(
        [
            "score",
            str(EXAMPLE_IMAGES / "chelsea.png"),
            "-m",
            "qualiclip-tiny",
            "--decode-device",
            "cuda",
            "--out",
            str(tmp_path / "s.csv"),
        ]
    )
    assert code == 2
    assert "--decode-device cuda needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_the_cli_takes_the_option(tmp_path, capsys, iqart_home):
    with pytest.raises(SystemExit):
        main(["score", "x.jpg", "--decode-device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
    out = tmp_path / "s.csv"
    assert (
        main(
            [
                "score",
                str(EXAMPLE_IMAGES / "chelsea.png"),
                "-m",
                "qualiclip-tiny",
                "--backend",
                "torch",
                "--device",
                "cpu",
                "--decode-device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "scored 1, failed 0" in capsys.readouterr().out


def test_the_summary_counts_what_nvjpeg_decoded():
    from iqart.engine.cli.score import summary

    stats = PipelineStats(wall_s=1.0, gpu_decoded=98, gpu_rejected=2)
    assert "98 decoded by nvJPEG, 2 rejected by it and decoded on the CPU; decode" in summary(stats, 100, 8)
    assert "nvJPEG" not in summary(PipelineStats(wall_s=1.0), 100, 8)


def test_the_scorer_passes_the_decode_device_on(folder):
    """Scorer.score_files(decode_device=): cpu, or the default with a backend on the CPU, decode
    with PIL."""
    from iqart.engine.scorer import Scorer

    scorer = Scorer("qualiclip-tiny", "torch", "cpu", 2, workers=1)
    assert scorer.decoder(None) is None and scorer.decoder("cpu") is None
    rows = list(scorer.score_files([folder / "o1.jpg", folder / "png.png"], decode_device="cpu"))
    assert all(row.ok for row in rows) and len(rows) == 2


# --- what backends are given ------------------------------------------------------------------------


def test_batches_stay_tensors_only_for_backends_that_take_cuda_tensors():
    tensor, array = torch.zeros(4, 4, 3, dtype=torch.uint8), np.ones((4, 4, 3), np.uint8)
    assert isinstance(_stack([array, array], Recording()), np.ndarray)
    mixed = _stack([tensor, array], Recording())  # CPU tensors (the tests' decoder) become a host array
    assert isinstance(mixed, np.ndarray) and mixed.shape == (2, 4, 4, 3) and mixed[1].min() == 1


def test_torch_backend_and_graph_feeds_take_tensors(scrambled):
    backend = TorchBackend(scrambled("qualiclip-tiny"), "cpu")
    assert not backend.takes_cuda_tensors  # on the CPU it is given host arrays
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(backend(torch.from_numpy(images)), backend(images))
    feeds = graph_feeds(["image"], torch.from_numpy(images).permute(0, 2, 1, 3), None)
    assert isinstance(feeds["image"], torch.Tensor) and feeds["image"].is_contiguous()


# --- on a GPU ---------------------------------------------------------------------------------------


@needs_gpu
def test_nvjpeg_rows_and_pixels_against_the_cpu_path(folder):
    """nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's: pixels close, not equal;
    every error row the CPU path's; the batch reaches a CUDA backend on the GPU."""
    gpu = GpuDecoder("cuda")
    jobs = [ScoreJob(folder / name) for name in [*GPU_FILES, *CPU_FILES]]
    recording = Recording()
    recording.device = torch.device("cuda")
    stats = PipelineStats()
    ours = rows_by_name(score_jobs(jobs, recording, NATIVE, 4, 2, stats, gpu=gpu, decode_timeout=5))
    cpu = rows_by_name(score_jobs(jobs, Recording(), NATIVE, 4, 2, decode_timeout=5))
    assert stats.gpu_decoded == len(GPU_FILES), stats
    assert {n: r.error for n, r in ours.items()} == {n: r.error for n, r in cpu.items()}
    assert any(isinstance(b, torch.Tensor) and b.is_cuda for b in recording.batches)
    for name in GPU_FILES:
        recording = Recording()
        list(score_jobs([ScoreJob(folder / name)], recording, NATIVE, 1, 1, gpu=gpu))
        ours_pixels = recording.batches[0][0].cpu().numpy().astype(np.int16)
        difference = np.abs(ours_pixels - as_array(open_image(folder / name), NATIVE))
        # a sanity bound, not a measurement (bench_gpu_decode.py reports the figures): a wrong colour
        # conversion or orientation is tens of levels off on average
        assert difference.mean() < 3 and np.percentile(difference, 99) <= 16, (name, difference.mean())


@needs_gpu
def test_cuda_resize_matches_pil_within_one_level():
    image = photo(400, 300, seed=2)
    for width, height in ((224, 224), (128, 96), (800, 600)):
        expected = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=None), np.int16)
        ours = resize_like_pil(torch.from_numpy(np.array(image)).permute(2, 0, 1).cuda(), width, height)
        difference = np.abs(ours.permute(1, 2, 0).cpu().numpy().astype(np.int16) - expected)
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


@needs_gpu
def test_nvjpeg_decodes_every_gpu_file_in_one_batch(folder):
    decoded = GpuDecoder("cuda").decode([gpu_readable(folder / name) for name in GPU_FILES])
    assert len(decoded) == len(GPU_FILES) and all(isinstance(d, torch.Tensor) and d.is_cuda for d in decoded)


@needs_gpu
def test_nvjpeg_sizes_follow_the_table(tmp_path):
    check_gpu_path_sizes(tmp_path, GpuDecoder("cuda"))


def distinct_photos(folder: Path, count: int) -> list[Path]:
    """`count` JPEGs no two alike (four example photos, each shifted by its own offset, half of them
    EXIF-rotated), so that an image overwritten by another shows as tens of levels off."""
    paths = []
    for index in range(count):
        name = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.png")[index % 4]
        with Image.open(EXAMPLE_IMAGES / name) as image:
            base = np.asarray(image.convert("RGB").resize((400, 300), Image.Resampling.BICUBIC))
        shifted = Image.fromarray(np.roll(base, 37 * index, axis=1))
        paths.append(save_jpeg(shifted, folder / f"distinct{index}.jpg", orientation=(1, 6)[index % 2]))
    return paths


@needs_gpu
def test_nvjpeg_batches_back_to_back_each_match_the_cpu_path(tmp_path):
    """Batch after batch decoded and resized with nothing waited for in between, the results read
    only at the end: decode_jpeg allocates its outputs on the current stream and writes them from
    its own, so without GpuDecoder's wait for the current stream a block still read by the last
    batch's resize could be decoded into. Every image is close to the CPU path's, none another's."""
    paths = distinct_photos(tmp_path, 12)
    expected = {path: as_array(open_image(path), SHORT).astype(np.int16) for path in paths}
    others = [np.abs(expected[a] - expected[b]).mean() for a, b in zip(paths[:-2], paths[2:], strict=True)]
    assert min(others) > 20  # a swapped or overwritten image would fail the bound below
    decoder = GpuDecoder("cuda")
    jobs = [prepare_job(ScoreJob(path)) for path in paths]
    outputs = []
    for round_index in range(24):
        batch = [jobs[(5 * round_index + offset) % len(jobs)] for offset in range(6)]
        for job, images in decoder.decode_jobs(batch, SHORT):
            assert images is not None, f"nvJPEG did not decode {job.path.name}"
            outputs.append((job.path, images[0]))
    assert len(outputs) == 24 * 6
    for path, image in outputs:
        assert image.is_cuda
        difference = np.abs(image.cpu().numpy().astype(np.int16) - expected[path])
        assert difference.mean() < 3 and np.percentile(difference, 99) <= 16, (path.name, difference.mean())
