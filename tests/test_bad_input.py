"""Bad and unusual input: each broken file is an error row naming the reason, the batch goes on,
and the unusual-but-valid ones (16-bit, CMYK, palette with transparency, odd names) are scored."""

import importlib.util
import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from iqart.engine.cli.main import main
from iqart.engine.pipeline.images import MAX_PIXELS, find_images, load_image, open_image, scan_images
from iqart.train.models.checkpoints import save_checkpoint
from iqart.train.models.zoo import build_model, get_card
from tests.helpers import DISPLAY_P3, EXAMPLE_IMAGES, scramble

NATIVE = get_card("qualiclip-tiny").resize
NON_UTF8_NAME = b"caf\xe9.png"  # Latin-1 bytes: not valid UTF-8


@pytest.fixture(scope="module")
def scored_folder(tmp_path_factory):
    """Every case in one folder, scored in one run: ({file name: row}, exit code, row count)."""
    root = tmp_path_factory.mktemp("bad")
    folder = root / "imgs"
    folder.mkdir()
    weights = root / "w.pt"
    save_checkpoint(weights, "qualiclip-tiny", scramble(build_model("qualiclip-tiny", seed=7), 7).state_dict())
    make_cases(folder)
    out = root / "scores.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IQART_HOME", str(root / "home"))
        code = main(
            ["score", str(folder), "--model", "qualiclip-tiny", "-w", str(weights), "-b", "4", "--out", str(out)]
        )
    with open(out, encoding="utf-8", errors="surrogateescape") as f:
        rows = [json.loads(line) for line in f]
    return {os.fsencode(row["path"]).rsplit(b"/", 1)[-1]: row for row in rows}, code, len(rows)


def png_header_only(path, width, height):
    """A PNG that declares a huge size but holds no pixels: what a decompression bomb looks like
    to the header check, without allocating anything."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def make_cases(folder):
    shutil.copy(EXAMPLE_IMAGES / "chelsea.png", folder / "good.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a JPEG")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / "whole.jpg", quality=90)
    jpeg = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "whole.jpg").unlink()
    png = (EXAMPLE_IMAGES / "coffee.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 3])
    png_header_only(folder / "bomb.png", 20_000, 20_000)
    Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")
    Image.fromarray(np.linspace(0, 65535, 64 * 48, dtype=np.uint16).reshape(48, 64)).save(folder / "grey16.png")
    Image.new("CMYK", (48, 40), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 20, 40))
    palette.save(folder / "palette_alpha.png", transparency=0)
    Image.new("LA", (40, 40), (128, 200)).save(folder / "grey_alpha.png")
    shutil.copy(EXAMPLE_IMAGES / "coffee.png", os.path.join(os.fsencode(folder), NON_UTF8_NAME))
    os.symlink(folder, folder / "loop")  # a directory symlink loop: walked once
    os.symlink(folder / "absent.png", folder / "dangling.png")
    os.mkfifo(folder / "fifo.jpg")
    Image.open(EXAMPLE_IMAGES / "chelsea.png").convert("RGB").save(folder / "camera.jfif", format="JPEG")
    Image.open(EXAMPLE_IMAGES / "coffee.png").convert("RGB").save(folder / "modern.avif")
    (folder / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))
    ramp = np.linspace(0.0, 1.0, 64 * 48, dtype=np.float32).reshape(48, 64)
    Image.fromarray(ramp, mode="F").save(folder / "float01.tif")
    (folder / "notes.txt").write_text("not an image: skipped and counted")


@pytest.mark.parametrize(
    "name,reason",
    [
        ("empty.jpg", "not a recognised image format (empty file)"),
        ("text.jpg", "not a recognised image format"),
        ("truncated.jpg", "corrupt or truncated image"),
        ("truncated.png", "corrupt or truncated image"),
        ("bomb.png", "decompression bomb"),
        ("one_pixel.png", "too small: 1x1; each side must be at least 32 pixels"),
        ("dangling.png", "no such file"),
        ("fifo.jpg", "is a FIFO, not a regular file: not opened"),
        pytest.param(
            "phone.heic",
            "HEIF image: decoding it needs pillow-heif (pip install 'iqart[heif]')",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("pillow_heif") is not None,
                reason="pillow-heif is installed: HEIF files decode",
            ),
        ),
    ],
)
def test_broken_file_is_an_error_row_naming_the_reason(scored_folder, name, reason):
    rows, _, _ = scored_folder
    row = rows[name.encode()]
    assert row["score"] is None and reason in row["error"]


@pytest.mark.parametrize(
    "name",
    [
        "good.png",
        "grey16.png",
        "cmyk.jpg",
        "palette_alpha.png",
        "grey_alpha.png",
        "camera.jfif",
        "modern.avif",
        "float01.tif",
        NON_UTF8_NAME.decode("latin-1"),
    ],
)
def test_unusual_but_valid_file_is_scored(scored_folder, name):
    rows, _, _ = scored_folder
    row = rows[name.encode("latin-1")]
    assert row["error"] is None and 0.0 <= row["score"] <= 1.0


def test_batch_goes_on_and_exits_zero(scored_folder):
    rows, code, count = scored_folder
    assert code == 0
    assert count == len(rows) == 18  # 17 files and the dangling link, each once despite the loop; notes.txt skipped


def test_non_utf8_name_round_trips_to_the_same_file(scored_folder, tmp_path):
    rows, _, _ = scored_folder
    path = os.fsencode(rows[NON_UTF8_NAME]["path"])
    assert os.path.isfile(path) and path.endswith(b"/" + NON_UTF8_NAME)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_limit_is_checked_before_decoding(tmp_path):
    """Between our limit and PIL's own (twice ours) only our header check stands in the way."""
    png_header_only(tmp_path / "big.png", 12_000, 9_000)
    assert MAX_PIXELS < 12_000 * 9_000
    with pytest.raises(ValueError, match="12000x9000 exceeds the 100,000,000-pixel limit"):
        load_image(tmp_path / "big.png", NATIVE)


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: file permissions are not enforced")
def test_unreadable_file_is_an_error_row(tmp_path):
    Image.new("RGB", (40, 40)).save(tmp_path / "locked.png")
    os.chmod(tmp_path / "locked.png", 0)
    with pytest.raises(ValueError, match="permission denied"):
        load_image(tmp_path / "locked.png", NATIVE)


def test_directory_symlink_loop_is_walked_once(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "a" / "b" / "x.png")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "up")
    assert [p.name for p, _ in find_images([tmp_path / "a"])] == ["x.png"]


def test_modes_are_converted_explicitly(tmp_path):
    grey16 = np.linspace(0, 65535, 64 * 64, dtype=np.uint16).reshape(64, 64)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    rgb = load_image(tmp_path / "g16.png", NATIVE)
    assert rgb.shape == (64, 64, 3) and rgb.max() == 255 and rgb.min() == 0  # rescaled, not clipped
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png", NATIVE) == 255).all()  # transparent -> white
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = load_image(tmp_path / "cmyk.jpg", NATIVE).reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 20, 40))
    palette.save(tmp_path / "p.png", transparency=0)
    image = load_image(tmp_path / "p.png", NATIVE)
    assert (image[:, :20] == [255, 0, 0]).all() and (image[:, 20:] == 255).all()  # opaque red, transparent white


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (64, 32), "blue")
    exif = image.getexif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: portrait
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg", NATIVE).shape == (64, 32, 3)


def test_the_scan_counts_what_it_skips_and_the_cli_says_so(tmp_path, capsys):
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    for name in ("notes.txt", "data.json", "README"):
        (tmp_path / name).write_text("x")
    scan = scan_images([tmp_path])
    assert [p.name for p, _ in scan.files] == ["a.png"]
    assert scan.skipped_summary() == "3 files (no suffix: 1, .json: 1, .txt: 1)"
    main(
        ["score", str(tmp_path), "--model", "bpclip-nr", "--out", str(tmp_path / "s.csv")]
    )  # no weights: stops after the scan
    assert "skipped 3 files (no suffix: 1, .json: 1, .txt: 1), not images by their suffix" in capsys.readouterr().err


def test_a_float_tiff_is_scaled_by_its_range_not_clipped_to_black(tmp_path):
    ramp = np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(ramp, mode="F").save(tmp_path / "unit.tif")
    image = load_image(tmp_path / "unit.tif", NATIVE)
    assert image.min() == 0 and image.max() == 255 and abs(float(image.mean()) - 127.5) < 1
    Image.fromarray(ramp * 255, mode="F").save(tmp_path / "bytes.tif")
    assert np.abs(load_image(tmp_path / "bytes.tif", NATIVE).astype(int) - image).max() <= 1
    Image.fromarray(np.full((40, 40), np.nan, np.float32), mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_image(tmp_path / "nan.tif", NATIVE)


def test_an_icc_profile_is_converted_to_srgb_and_official_decode_ignores_it(tmp_path):
    Image.new("RGB", (64, 64), (200, 60, 30)).save(tmp_path / "p3.png", icc_profile=DISPLAY_P3)
    ours = load_image(tmp_path / "p3.png", NATIVE)[0, 0].astype(int)
    official = np.asarray(open_image(tmp_path / "p3.png", "official"))[0, 0].astype(int)
    assert list(official) == [200, 60, 30]  # the raw values, profile ignored
    assert ours[0] >= 215 and ours[1] <= 45 and ours[2] <= 5  # a P3 red is redder than sRGB's (200, 60, 30)
    Image.new("RGB", (64, 64), (200, 60, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        tmp_path / "p3_palette.png", icc_profile=DISPLAY_P3
    )
    assert list(load_image(tmp_path / "p3_palette.png", NATIVE)[0, 0]) == list(ours)
    Image.new("RGB", (64, 64), (200, 60, 30)).save(tmp_path / "bad_profile.png", icc_profile=b"not a profile")
    assert list(load_image(tmp_path / "bad_profile.png", NATIVE)[0, 0]) == [200, 60, 30]  # ignored, as browsers do


def test_official_decode_is_pil_convert_rgb_exactly(tmp_path):
    image = Image.new("RGBA", (40, 40), (10, 200, 30, 0))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated_alpha.png", exif=exif)
    official = np.asarray(open_image(tmp_path / "rotated_alpha.png", "official"))
    assert np.array_equal(official, np.asarray(Image.open(tmp_path / "rotated_alpha.png").convert("RGB")))
    assert (official == [10, 200, 30]).all()  # alpha dropped, not composited on white
    assert (load_image(tmp_path / "rotated_alpha.png", NATIVE) == 255).all()  # ours: transparent -> white


def test_heif_decodes_through_pillow_heif_when_installed(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed (pip install 'iqart[heif]')")
    pillow_heif.register_heif_opener()
    Image.open(EXAMPLE_IMAGES / "coffee.png").convert("RGB").save(tmp_path / "phone.heic")
    image = load_image(tmp_path / "phone.heic", NATIVE)
    assert image.shape[2] == 3 and image.std() > 10


def test_a_system_error_is_named_as_such_not_as_a_corrupt_image(tmp_path):
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    with pytest.raises(ValueError, match="^cannot read: Too many levels of symbolic links$"):
        load_image(tmp_path / "a.png", NATIVE)
