import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli import main
from engine.images import load_image
from engine.torch_backend import TorchBackend
from tests.conftest import EXAMPLE_IMAGES, EXAMPLE_PAIRS
from train.checkpoints import save_checkpoint
from train.preprocess import uint8_nhwc_to_model_input
from train.zoo import get_card


@pytest.fixture
def weights(scrambled, tmp_path):
    """Factory: a weight file for a tiny model, and the model itself."""

    def make(name):
        model = scrambled(name, seed=7)
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, name, model.state_dict())
        return path, model

    return make


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_scores_example_images_like_the_model(weights, tmp_path):
    path, model = weights("qualiclip-tiny")
    out = tmp_path / "scores.csv"
    assert main(["score", str(EXAMPLE_IMAGES), "--model", "qualiclip-tiny", "--weights", str(path), "-b", "3", "--out", str(out)]) == 0
    rows = read_csv(out)
    assert [r["path"] for r in rows] and all(r["error"] == "" for r in rows)
    assert {r["path"] for r in rows} == {str(p) for p in EXAMPLE_IMAGES.glob("*.png")}
    for row in rows[:3]:
        image = torch.from_numpy(load_image(row["path"], get_card("qualiclip-tiny").resize))[None]
        with torch.no_grad():
            expected = model(uint8_nhwc_to_model_input(image)).item()
        assert float(row["score"]) == pytest.approx(expected, abs=1e-5)


def test_bad_files_become_error_rows(weights, tmp_path):
    path, _ = weights("qualiclip-tiny")
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(EXAMPLE_IMAGES / "chelsea.png", folder / "good.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("hello")
    Image.new("RGB", (1, 1)).save(folder / "tiny.png")
    good_bytes = (EXAMPLE_IMAGES / "coffee.png").read_bytes()
    (folder / "truncated.png").write_bytes(good_bytes[: len(good_bytes) // 3])
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(folder), "--model", "qualiclip-tiny", "--weights", str(path), "--out", str(out)]) == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["good.png"]["error"] is None and 0 <= rows["good.png"]["score"] <= 1
    assert "empty file" in rows["empty.jpg"]["error"]
    assert "not a recognised image" in rows["text.jpg"]["error"]
    assert "too small: 1x1" in rows["tiny.png"]["error"]
    assert "truncated" in rows["truncated.png"]["error"]
    assert all(rows[n]["score"] is None for n in rows if n != "good.png")


def test_every_file_failing_exits_non_zero(weights, tmp_path):
    path, _ = weights("qualiclip-tiny")
    (tmp_path / "bad.png").write_text("x")
    assert main(["score", str(tmp_path / "bad.png"), "--model", "qualiclip-tiny", "--weights", str(path), "--out", str(tmp_path / "o.csv")]) == 1


def test_full_reference_pairs_by_name(weights, tmp_path):
    path, model = weights("bpclip-fr-tiny")
    out = tmp_path / "fr.csv"
    assert main(["score", str(EXAMPLE_PAIRS / "distorted"), "--model", "bpclip-fr-tiny", "--weights", str(path),
                 "--ref", str(EXAMPLE_PAIRS / "reference"), "--out", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == 3 and all(r["error"] == "" for r in rows)
    for row in rows:
        assert row["reference"].endswith("reference/" + row["path"].rsplit("/", 1)[-1])
    backend = TorchBackend(model)
    policy = get_card("bpclip-fr-tiny").resize
    row = rows[0]
    expected = backend(load_image(row["path"], policy)[None], load_image(row["reference"], policy)[None])[0]
    assert float(row["score"]) == pytest.approx(float(expected), abs=1e-5)


def test_missing_reference_is_an_error_row(weights, tmp_path):
    dist, ref = tmp_path / "d", tmp_path / "r"
    dist.mkdir(), ref.mkdir()
    Image.new("RGB", (64, 64), "red").save(dist / "a.png")
    Image.new("RGB", (64, 64), "red").save(dist / "b.png")
    Image.new("RGB", (64, 64), "blue").save(ref / "a.png")
    fr_path, _ = weights("bpclip-fr-tiny")
    out = tmp_path / "o.csv"
    assert main(["score", str(dist), "--model", "bpclip-fr-tiny", "--weights", str(fr_path), "--ref", str(ref), "--out", str(out)]) == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_csv(out)}
    assert rows["a.png"]["error"] == "" and "no such file" in rows["b.png"]["error"]


def test_fr_model_requires_ref(weights, tmp_path, capsys):
    path, _ = weights("bpclip-fr-tiny")
    assert main(["score", str(EXAMPLE_IMAGES), "--model", "bpclip-fr-tiny", "--weights", str(path)]) == 2
    assert "pass --ref DIR" in capsys.readouterr().err


def test_failed_run_leaves_previous_output_untouched(tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("previous\n")
    assert main(["score", str(EXAMPLE_IMAGES), "--model", "qualiclip-tiny", "--weights", str(tmp_path / "absent.pt"), "--out", str(out)]) == 2
    assert out.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_console_script_without_weights_says_where_they_come_from(tmp_path):
    env = {"IQART_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "engine.cli", "score", str(EXAMPLE_IMAGES), "--model", "bpclip-nr",
                             "--out", str(tmp_path / "s.csv")], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "no weights for model 'bpclip-nr'" in result.stderr and "--weights FILE" in result.stderr
    assert not (tmp_path / "s.csv").exists()


def test_images_modes_are_converted_explicitly(tmp_path):
    policy = get_card("qualiclip-tiny").resize
    grey16 = np.linspace(0, 65535, 64 * 64, dtype=np.uint16).reshape(64, 64)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    rgb = load_image(tmp_path / "g16.png", policy)
    assert rgb.shape == (64, 64, 3) and rgb.max() == 255 and rgb.min() == 0
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png", policy) == 255).all()  # transparent -> white
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = load_image(tmp_path / "cmyk.jpg", policy).reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_fused_attention_flag_matches_reference_on_cpu(weights, tmp_path):
    path, _ = weights("qualiclip-tiny")
    plain, fused = tmp_path / "plain.csv", tmp_path / "fused.csv"
    common = ["score", str(EXAMPLE_IMAGES / "chelsea.png"), "--model", "qualiclip-tiny", "--weights", str(path)]
    assert main(common + ["--out", str(plain)]) == 0
    assert main(common + ["--fused-attention", "--out", str(fused)]) == 0
    assert float(read_csv(plain)[0]["score"]) == pytest.approx(float(read_csv(fused)[0]["score"]), abs=1e-6)
