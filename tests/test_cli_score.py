import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqart.engine.backends.torch_backend import TorchBackend
from iqart.engine.cli.main import main
from iqart.engine.pipeline.images import load_image
from iqart.export.validate import FP32_REL_TOL
from iqart.train.models.checkpoints import save_checkpoint
from iqart.train.models.preprocess import uint8_nhwc_to_model_input
from iqart.train.models.zoo import build_model, get_card
from tests.helpers import EXAMPLE_IMAGES, EXAMPLE_PAIRS, scramble

pytestmark = pytest.mark.usefixtures("iqart_home")  # one artifact cache per module (tests/conftest.py)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_scores_example_images_like_the_model(weights, scrambled, tmp_path):
    path, model = weights("qualiclip-tiny"), scrambled("qualiclip-tiny")
    out = tmp_path / "scores.csv"
    assert (
        main(
            [
                "score",
                str(EXAMPLE_IMAGES),
                "--model",
                "qualiclip-tiny",
                "--weights",
                str(path),
                "-b",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = read_csv(out)
    assert [r["path"] for r in rows] and all(r["error"] == "" for r in rows)
    assert {r["path"] for r in rows} == {str(p) for p in EXAMPLE_IMAGES.glob("*.png")}
    for row in rows[:3]:
        image = torch.from_numpy(load_image(row["path"], get_card("qualiclip-tiny").resize))[None]
        with torch.no_grad():
            expected = model(uint8_nhwc_to_model_input(image)).item()
        assert float(row["score"]) == pytest.approx(expected, abs=1e-5)


def test_every_file_failing_exits_non_zero(weights, tmp_path):
    path = weights("qualiclip-tiny")
    (tmp_path / "bad.png").write_text("x")
    assert (
        main(
            [
                "score",
                str(tmp_path / "bad.png"),
                "--model",
                "qualiclip-tiny",
                "--weights",
                str(path),
                "--out",
                str(tmp_path / "o.csv"),
            ]
        )
        == 1
    )


def test_full_reference_pairs_by_name(weights, scrambled, tmp_path):
    path, model = weights("bpclip-fr-tiny"), scrambled("bpclip-fr-tiny")
    out = tmp_path / "fr.csv"
    assert (
        main(
            [
                "score",
                str(EXAMPLE_PAIRS / "distorted"),
                "--model",
                "bpclip-fr-tiny",
                "--weights",
                str(path),
                "--ref",
                str(EXAMPLE_PAIRS / "reference"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
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
    fr_path = weights("bpclip-fr-tiny")
    out = tmp_path / "o.csv"
    assert (
        main(
            [
                "score",
                str(dist),
                "--model",
                "bpclip-fr-tiny",
                "--weights",
                str(fr_path),
                "--ref",
                str(ref),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_csv(out)}
    assert rows["a.png"]["error"] == "" and "no such file" in rows["b.png"]["error"]


def test_fr_model_requires_ref(weights, tmp_path, capsys):
    path = weights("bpclip-fr-tiny")
    assert main(["score", str(EXAMPLE_IMAGES), "--model", "bpclip-fr-tiny", "--weights", str(path)]) == 2
    assert "pass --ref DIR" in capsys.readouterr().err


def test_failed_run_leaves_previous_output_untouched(tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("previous\n")
    assert (
        main(
            [
                "score",
                str(EXAMPLE_IMAGES),
                "--model",
                "qualiclip-tiny",
                "--weights",
                str(tmp_path / "absent.pt"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert out.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_console_script_without_weights_says_where_they_come_from(tmp_path):
    env = {"IQART_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "iqart.engine.cli.main",
            "score",
            str(EXAMPLE_IMAGES),
            "--model",
            "bpclip-nr",
            "--out",
            str(tmp_path / "s.csv"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2
    assert "no weights for model 'bpclip-nr'" in result.stderr and "--weights FILE" in result.stderr
    assert not (tmp_path / "s.csv").exists()


def test_fused_attention_flag_matches_reference_on_cpu(weights, tmp_path):
    path = weights("qualiclip-tiny")
    plain, fused = tmp_path / "plain.csv", tmp_path / "fused.csv"
    common = [
        "score",
        str(EXAMPLE_IMAGES / "chelsea.png"),
        "--model",
        "qualiclip-tiny",
        "--weights",
        str(path),
        "--backend",
        "torch",
    ]
    assert main(common + ["--out", str(plain)]) == 0
    assert main(common + ["--fused-attention", "--out", str(fused)]) == 0
    assert float(read_csv(plain)[0]["score"]) == pytest.approx(float(read_csv(fused)[0]["score"]), abs=1e-6)


def read_rows(path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return [
        {**r, "score": float(r["score"]) if r["score"] else None, "error": r["error"] or None} for r in read_csv(path)
    ]


def test_onnxruntime_default_agrees_with_torch_backend_on_examples(weights, tmp_path, capsys):
    """The issue's done-when: ONNX Runtime CPU (the default) against --backend torch, within the
    export tolerance (fp32: relative error <= 1e-5)."""
    path = weights("qualiclip-tiny")
    common = ["score", str(EXAMPLE_IMAGES), "--model", "qualiclip-tiny", "-w", str(path)]
    assert main(common + ["--out", str(tmp_path / "ort.csv")]) == 0
    assert "on onnxruntime (cpu): scored 16, failed 0" in capsys.readouterr().out
    assert main(common + ["--backend", "torch", "--out", str(tmp_path / "torch.csv")]) == 0
    ort = {r["path"]: float(r["score"]) for r in read_csv(tmp_path / "ort.csv")}
    ref = {r["path"]: float(r["score"]) for r in read_csv(tmp_path / "torch.csv")}
    assert ort.keys() == ref.keys() and len(ort) == 16
    got, expected = np.array([ort[k] for k in ref]), np.array(list(ref.values()))
    assert np.abs(got - expected).max() / np.abs(expected).max() <= FP32_REL_TOL
    assert expected.std() > 1e-4  # the scrambled model tells the images apart: the comparison means something


def test_summary_line_reports_counts_rate_and_time_split(weights, tmp_path, capsys):
    path = weights("qualiclip-tiny")
    (tmp_path / "bad.png").write_text("not an image")
    out = tmp_path / "s.csv"
    assert (
        main(
            [
                "score",
                str(EXAMPLE_IMAGES / "coffee.png"),
                str(tmp_path / "bad.png"),
                "--model",
                "qualiclip-tiny",
                "-w",
                str(path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "scored 1, failed 1" in captured.out and "images/s" in captured.out
    assert "decode" in captured.out and "inference" in captured.out
    assert f"error: {tmp_path / 'bad.png'}: not a recognised image format" in captured.err


def test_workers_do_not_change_scores(weights, tmp_path):
    path = weights("qualiclip-tiny")
    results = []
    for workers in ("1", "3"):
        out = tmp_path / f"w{workers}.csv"
        assert (
            main(
                [
                    "score",
                    str(EXAMPLE_IMAGES),
                    "--model",
                    "qualiclip-tiny",
                    "-w",
                    str(path),
                    "-b",
                    "2",
                    "--workers",
                    workers,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        results.append({r["path"]: r["score"] for r in read_csv(out)})
    assert results[0] == results[1] and len(results[0]) == 16


def test_pairs_csv_resolves_paths_against_its_folder(weights, tmp_path):
    path = weights("bpclip-fr-tiny")
    shutil.copytree(EXAMPLE_PAIRS, tmp_path / "fr")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "fr" / "small_d.png")
    Image.new("RGB", (80, 64), "red").save(tmp_path / "fr" / "small_r.png")
    absolute = EXAMPLE_PAIRS / "distorted" / "coffee.png"
    (tmp_path / "fr" / "pairs.csv").write_text(
        "distorted,reference\n"
        "distorted/astronaut.png,reference/astronaut.png\n"
        f"{absolute},reference/coffee.png\n"
        "small_d.png,small_r.png\n"
    )
    out = tmp_path / "fr.jsonl"
    assert (
        main(
            [
                "score",
                "--pairs",
                str(tmp_path / "fr" / "pairs.csv"),
                "--model",
                "bpclip-fr-tiny",
                "-w",
                str(path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert rows["astronaut.png"]["reference"] == str(tmp_path / "fr" / "reference" / "astronaut.png")
    assert rows["coffee.png"]["path"] == str(absolute) and rows["coffee.png"]["error"] is None
    assert rows["small_d.png"]["error"] == "image 64x64 and reference 80x64 differ in size"
    assert rows["small_d.png"]["score"] is None


def test_pairs_of_different_sizes_are_error_rows_with_ref_dir_too(weights, tmp_path):
    path = weights("bpclip-fr-tiny")
    for folder, size in (("d", (64, 48)), ("r", (48, 64))):
        (tmp_path / folder).mkdir()
        Image.new("RGB", size, "green").save(tmp_path / folder / "x.png")
    out = tmp_path / "o.csv"
    assert (
        main(
            [
                "score",
                str(tmp_path / "d"),
                "--model",
                "bpclip-fr-tiny",
                "-w",
                str(path),
                "--ref",
                str(tmp_path / "r"),
                "--out",
                str(out),
            ]
        )
        == 1
    )  # the only pair failed
    assert read_csv(out)[0]["error"] == "image 64x48 and reference 48x64 differ in size"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--pairs", "p.csv"], "no-reference model: --pairs does not apply"),
        (["--ref", "."], "no-reference model: --ref does not apply"),
        ([], "pass at least one image file or folder"),
    ],
)
def test_usage_errors(weights, tmp_path, capsys, argv, message):
    path = weights("qualiclip-tiny")
    assert main(["score", "--model", "qualiclip-tiny", "-w", str(path), "--out", str(tmp_path / "o.csv"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_pairs_csv_without_its_columns_is_a_clear_error(weights, tmp_path, capsys):
    path = weights("bpclip-fr-tiny")
    (tmp_path / "pairs.csv").write_text("image,ref\na.png,b.png\n")
    assert main(["score", "--pairs", str(tmp_path / "pairs.csv"), "--model", "bpclip-fr-tiny", "-w", str(path)]) == 2
    assert "needs columns distorted,reference; missing distorted, reference" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_resume_scores_only_what_is_missing_and_keeps_old_rows(weights, tmp_path, capsys, suffix):
    path = weights("qualiclip-tiny")
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(EXAMPLE_IMAGES / "chelsea.png", folder / "a.png")
    (folder / "b.png").write_text("broken for now")
    out = tmp_path / f"scores{suffix}"
    command = ["score", str(folder), "--model", "qualiclip-tiny", "-w", str(path), "--out", str(out), "--resume"]
    assert main(command) == 0
    first = {Path(r["path"]).name: r for r in read_rows(out)}
    assert first["a.png"]["error"] is None and first["b.png"]["error"]
    # Mark a's score so that a recomputation would show; fix b; add c.
    out.write_text(out.read_text().replace(repr(first["a.png"]["score"]), "0.25", 1))
    shutil.copy(EXAMPLE_IMAGES / "coffee.png", folder / "b.png")
    shutil.copy(EXAMPLE_IMAGES / "rocket.png", folder / "c.png")
    capsys.readouterr()
    assert main(command) == 0
    assert "scored 2, failed 0, 1 already scored" in capsys.readouterr().out
    rows = read_rows(out)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert len(rows) == 3 and by_name["a.png"]["score"] == 0.25
    assert by_name["b.png"]["error"] is None and by_name["c.png"]["error"] is None
    before = out.read_bytes()
    assert main(command) == 0
    assert "all 3 images already scored" in capsys.readouterr().out and out.read_bytes() == before


def test_resume_refuses_results_of_another_model_or_other_weights(weights, tmp_path, capsys):
    nr_path = weights("qualiclip-tiny")
    fr_path = weights("bpclip-fr-tiny")
    out = tmp_path / "o.csv"
    assert (
        main(
            [
                "score",
                str(EXAMPLE_PAIRS / "distorted"),
                "--model",
                "qualiclip-tiny",
                "-w",
                str(nr_path),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    before = out.read_bytes()
    assert (
        main(
            [
                "score",
                str(EXAMPLE_PAIRS / "distorted"),
                "--model",
                "bpclip-fr-tiny",
                "-w",
                str(fr_path),
                "--ref",
                str(EXAMPLE_PAIRS / "reference"),
                "--out",
                str(out),
                "--resume",
            ]
        )
        == 2
    )
    assert "holds scores of qualiclip-tiny" in capsys.readouterr().err and out.read_bytes() == before
    retrained = tmp_path / "retrained.pt"
    save_checkpoint(retrained, "qualiclip-tiny", scramble(build_model("qualiclip-tiny", seed=8), 8).state_dict())
    assert (
        main(
            [
                "score",
                str(EXAMPLE_PAIRS / "distorted"),
                "--model",
                "qualiclip-tiny",
                "-w",
                str(retrained),
                "--out",
                str(out),
                "--resume",
            ]
        )
        == 2
    )
    assert "do not mix" in capsys.readouterr().err and out.read_bytes() == before
    rows = read_csv(out)
    assert {r["model"] for r in rows} == {"qualiclip-tiny"} and len({r["weights_sha256"] for r in rows}) == 1


def test_interrupted_run_keeps_what_is_done_for_resume(weights, tmp_path, monkeypatch, capsys):
    from iqart.engine.scorer import Scorer

    path = weights("qualiclip-tiny")
    real_score_jobs = Scorer.score_jobs

    def interrupted_after_three(self, jobs, stats=None, **options):
        for number, row in enumerate(real_score_jobs(self, jobs, stats, **options)):
            if number == 3:
                raise KeyboardInterrupt
            yield row

    out = tmp_path / "s.csv"
    command = ["score", str(EXAMPLE_IMAGES), "--model", "qualiclip-tiny", "-w", str(path), "-b", "2", "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(Scorer, "score_jobs", interrupted_after_three)
        assert main(command) == 130
    assert "run again with --resume" in capsys.readouterr().err
    assert len(read_csv(out)) == 3
    assert main(command + ["--resume"]) == 0
    assert "scored 13, failed 0, 3 already scored" in capsys.readouterr().out
    assert len(read_csv(out)) == 16


def test_decode_official_reaches_the_pipeline(weights, tmp_path):
    """--decode official reads the raw pixels as the official script does: an EXIF rotation and
    transparency that ours applies change the score, so the two runs must differ."""
    path = weights("qualiclip-tiny")
    image = Image.open(EXAMPLE_IMAGES / "chelsea.png").convert("RGBA")
    image.putalpha(96)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "cat.png", exif=exif)
    scores = {}
    for decode in ("iqart", "official"):
        out = tmp_path / f"{decode}.csv"
        assert (
            main(
                [
                    "score",
                    str(tmp_path / "cat.png"),
                    "--model",
                    "qualiclip-tiny",
                    "-w",
                    str(path),
                    "--decode",
                    decode,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        scores[decode] = float(read_csv(out)[0]["score"])
    assert abs(scores["iqart"] - scores["official"]) > 1e-4
