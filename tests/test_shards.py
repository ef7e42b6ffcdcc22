"""Scoring datasets where they are kept, on a local disk: WebDataset tar shards (written by the
webdataset library and by tarfile) and Parquet image tables (laid out as img2dataset writes them).

A sample scores exactly as the same bytes written out as a file; rows name shard and key and
carry the kept metadata; every way a sample or a shard can fail is a row that says where, and
the run goes on; --out-dir writes one output per shard and --resume skips finished shards or
resumes an unfinished one sample by sample; the reader holds a bounded number of samples.
(Object storage: tests/test_shards_s3.py.)"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqart.engine.artifact_cache import weights_sha256
from iqart.engine.pipeline import images
from iqart.engine.results.formats import read_result_file
from iqart.engine.results.journal import journal_path
from iqart.engine.results.shard_outputs import PerShardOutputs
from iqart.engine.scorer import Scorer
from iqart.engine.sources.samples import SampleFormat
from iqart.engine.sources.shard_locations import NoShardsError, list_shards, looks_like_shards
from iqart.engine.sources.shard_reader import QUEUE_SAMPLES, shard_jobs
from iqart.engine.sources.shard_scoring import score_shards
from iqart.train.models.zoo import get_card
from tests.helpers import EXAMPLE_PAIRS
from tests.shard_data import (
    FR_MODEL,
    MODEL,
    encode,
    photo_members,
    photos,
    rows_by_key,
    score,
    tar_member_spans,
    write_img2dataset_parquet,
    write_with_tarfile,
    write_with_webdataset,
)

pytest.importorskip("webdataset", reason="shards are written with webdataset's writers: pip install -e '.[dev]'")
pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (the ray extra; the dev extra includes it)")
pytestmark = pytest.mark.usefixtures("iqart_home")  # one artifact cache per module (tests/conftest.py)
SHARD_ERROR = re.compile(r"shard damaged at byte (\d+) after (\d+) samples: (.+)")


def scores(rows: dict[str, dict]) -> dict[str, float]:
    return {key: row["score"] for key, row in rows.items()}


# -- the same images, as files and as shard samples ------------------------------------------------


def test_samples_score_exactly_as_the_same_images_as_files(tmp_path, weights, rng):
    """Files, a webdataset-written tar, a tarfile-written tar (and it gzipped) and an img2dataset
    Parquet table of the same photos give bit-identical scores (one decode for all); rows name shard and key and
    keep url and caption from the .json member or the Parquet row."""
    items = photos(rng, 7)
    folder = tmp_path / "files"
    folder.mkdir()
    for photo in items:
        (folder / f"{photo.key}.{photo.ext}").write_bytes(photo.data)
    wds_tar = write_with_webdataset(tmp_path / "wds-00000.tar", items)
    plain_tar = write_with_tarfile(tmp_path / "plain-00000.tar", [photo_members(p) for p in items])
    table = write_img2dataset_parquet(tmp_path / "table-00000.parquet", items, row_group_size=3)
    gzipped = tmp_path / "gz-00000.tar.gz"
    gzipped.write_bytes(gzip.compress(wds_tar.read_bytes()))
    w = weights(MODEL)

    assert score(str(folder), "--out", str(tmp_path / "files.parquet"), weights=w) == 0
    by_file = {Path(row["path"]).stem: row["score"] for row in read_result_file(tmp_path / "files.parquet")}
    assert len(by_file) == len(items) and len(set(by_file.values())) == len(items)  # scores move with the image
    for source in (wds_tar, plain_tar, table, gzipped):
        out = tmp_path / f"{source.name}.parquet"
        assert score(str(source), "--keep-fields", "url,caption", "--out", str(out), weights=w) == 0
        rows = rows_by_key(out)
        assert scores(rows) == by_file, source.name  # exactly: the same bytes, the same decode
        for photo in items:
            row = rows[photo.key]
            assert row["shard"] == str(source) and row["error"] is None
            assert (row["url"], row["caption"]) == (photo.meta["url"], photo.meta["caption"])
            assert row["model"] == MODEL


def test_a_full_reference_model_takes_the_reference_from_its_member(tmp_path, weights, rng):
    """bpclip-fr-tiny on shard samples KEY.jpg + KEY.ref.jpg scores as on the same pairs as files
    (--pairs); a sample without its reference member is an error row."""
    names = sorted(p.stem for p in (EXAMPLE_PAIRS / "distorted").iterdir())
    folder = tmp_path / "pairs"
    folder.mkdir()
    samples, lines = [], ["distorted,reference"]
    for index, name in enumerate(names):
        members = []
        for role, suffix in (("distorted", "jpg"), ("reference", "ref.jpg")):
            pixels = np.asarray(Image.open(EXAMPLE_PAIRS / role / f"{name}.png").convert("RGB").resize((160, 160)))
            data = encode(pixels, "jpg", rng)
            (folder / f"{name}.{suffix}").write_bytes(data)
            members.append((f"{index:05d}.{suffix}", data))
        samples.append(members)
        lines.append(f"{folder / name}.jpg,{folder / name}.ref.jpg")
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    samples.append([("lonely.jpg", samples[0][0][1])])
    shard = write_with_tarfile(tmp_path / "pairs-00000.tar", samples)
    w = weights(FR_MODEL)

    torch = ["--backend", "torch"]  # no export of a second model in this module: seconds saved, same comparison
    files = ["--pairs", str(folder / "pairs.csv"), *torch, "--out", str(tmp_path / "f.parquet")]
    assert score(*files, weights=w, model=FR_MODEL) == 0
    by_file = {Path(row["path"]).stem: row["score"] for row in read_result_file(tmp_path / "f.parquet")}
    out = tmp_path / "shard.parquet"
    assert score(str(shard), "--ref-ext", "ref.jpg", *torch, "--out", str(out), weights=w, model=FR_MODEL) == 0
    rows = rows_by_key(out)
    assert {f"{i:05d}": by_file[name] for i, name in enumerate(names)} == {
        key: row["score"] for key, row in rows.items() if key != "lonely"
    }
    assert len(set(by_file.values())) == len(names)  # scores that move with the pair
    assert rows["lonely"]["score"] is None and "no reference member .ref.jpg" in rows["lonely"]["error"]
    assert score(str(shard), "--out", str(tmp_path / "x.csv"), weights=w, model=FR_MODEL) == 2  # --ref-ext needed


# -- where shards are named ---------------------------------------------------------------------------


@pytest.fixture
def shard_folder(tmp_path, rng):
    """Five small shards written by webdataset's ShardWriter (two samples each), with
    img2dataset's metadata .parquet and _stats.json beside each, as img2dataset leaves them."""
    import webdataset as wds

    folder = tmp_path / "shards"
    folder.mkdir()
    with wds.ShardWriter(str(folder / "%05d.tar"), maxcount=2, verbose=0) as writer:
        for photo in photos(rng, 10, png_every=0):
            writer.write({"__key__": photo.key, "jpg": photo.data, "json": photo.meta})
    for index in range(5):
        write_img2dataset_parquet(folder / f"{index:05d}.parquet", photos(rng, 1, png_every=0))
        (folder / f"{index:05d}_stats.json").write_text("{}")
    return folder


def test_paths_globs_brace_ranges_folders_and_lists_name_shards(shard_folder, tmp_path, weights, monkeypatch):
    tars = [str(shard_folder / f"{index:05d}.tar") for index in range(5)]
    assert list_shards([str(shard_folder / "{00001..00003}.tar")]) == tars[1:4]
    assert list_shards([str(shard_folder / "{00003,00000}.tar")]) == [tars[3], tars[0]]
    assert list_shards([str(shard_folder / "0000[2-4].tar")]) == tars[2:]
    assert list_shards([str(shard_folder / "*")]) == sorted(tars + [t.replace(".tar", ".parquet") for t in tars])
    assert list_shards([str(shard_folder)]) == tars  # a folder's tars, not their metadata tables
    assert list_shards([str(shard_folder / "00001.parquet")]) == [str(shard_folder / "00001.parquet")]
    monkeypatch.chdir(shard_folder.parent)
    assert list_shards(["shards/00004.tar", "shards/{00003..00004}.tar"]) == [tars[4], tars[3]]  # absolute, once
    assert looks_like_shards(["shards"]) and looks_like_shards(["s3://bucket/x/"]) and not looks_like_shards(["."])

    listing = tmp_path / "lists" / "shards.txt"
    listing.parent.mkdir()
    listing.write_text("# shards to score\n../shards/00000.tar\n" + f"{tars[3]}\n")
    out = tmp_path / "listed.parquet"
    command = ["--paths-from", str(listing), str(shard_folder / "{00001..00002}.tar"), "--out", str(out)]
    assert score(*command, weights=weights(MODEL)) == 0
    rows = read_result_file(out)
    assert sorted({row["shard"] for row in rows}) == [tars[0], tars[1], tars[2], tars[3]]
    assert len(rows) == 8 and all(row["error"] is None for row in rows)


def test_the_python_api_scores_shards_as_the_cli_does(shard_folder, tmp_path, weights):
    """Scorer.score_shards: the same rows (shard, key, kept fields, score) as `iqart score`."""
    w = weights(MODEL)
    pattern = str(shard_folder / "{00001..00003}.tar")
    out = tmp_path / "cli.parquet"
    assert score(pattern, "--keep-fields", "url", "--out", str(out), weights=w) == 0
    by_cli = {(row["shard"], row["key"]): (row["score"], row["url"]) for row in read_result_file(out)}
    rows = list(Scorer(MODEL, weights=w, batch_size=1).score_shards(pattern, keep_fields=["url"]))
    assert {(row.shard, row.key): (row.score, row.fields["url"]) for row in rows} == by_cli
    assert len(by_cli) == 6


@pytest.mark.parametrize(
    "pattern",
    ["*.tar", "{00007..00009}.tar", "00009.tar", "empty", "none-such-folder", "0000[5-9].parquet"],
)
def test_a_name_that_gives_no_shard_exits_2_before_any_work(shard_folder, tmp_path, weights, capsys, pattern):
    (shard_folder / "empty").mkdir()
    name = str(shard_folder / pattern) if pattern != "*.tar" else str(shard_folder / "empty" / pattern)
    out = tmp_path / "never.csv"
    with pytest.raises(NoShardsError):
        list_shards([name])
    assert score(name, "--out", str(out), weights=weights(MODEL)) == 2
    captured = capsys.readouterr()
    assert name in captured.err or os.path.dirname(name) in captured.err, captured.err
    assert "scored" not in captured.out  # no run began
    assert not out.exists() and not journal_path(out).exists()


def test_a_folder_of_img2dataset_parquet_tables_is_scored_as_shards(tmp_path, weights, rng):
    """img2dataset's parquet output: NNNNN.parquet with NNNNN_stats.json, no image files."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    for index in range(2):
        write_img2dataset_parquet(folder / f"{index:05d}.parquet", photos(rng, 2, first=2 * index))
        (folder / f"{index:05d}_stats.json").write_text("{}")
    assert looks_like_shards([str(folder)])
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(photos(rng, 1)[0].data)
    write_img2dataset_parquet(tmp_path / "photos" / "index.parquet", photos(rng, 1))
    assert not looks_like_shards([str(tmp_path / "photos")])  # images with a table beside them: images
    out = tmp_path / "rows.csv"
    assert score(str(folder), "--out", str(out), weights=weights(MODEL)) == 0
    rows = read_result_file(out)
    assert [(Path(r["shard"]).name, r["key"]) for r in rows] == [
        (f"{i // 2:05d}.parquet", f"{i:09d}") for i in range(4)
    ]


# -- what goes wrong -----------------------------------------------------------------------------------


def test_samples_that_cannot_be_scored_are_error_rows_naming_shard_and_key(tmp_path, weights, rng, monkeypatch, capsys):
    """No image member, an image that does not decode, one over the pixel budget, metadata to
    keep that is not JSON: each an error row naming shard and key, in a shard whose other
    samples are scored."""
    good = photos(rng, 3, png_every=0)
    big_pixels = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    samples = [
        photo_members(good[0]),
        [("no-image.json", b'{"url": "https://x/1"}'), ("no-image.txt", b"caption only")],
        photo_members(good[1]),
        [("broken.jpg", b"\xff\xd8\xff\xe0 this is not a JPEG after all"), ("broken.json", b"{}")],
        [("too-big.jpg", encode(big_pixels, "jpg", rng))],
        [("bad-meta.jpg", good[2].data), ("bad-meta.json", b'{"url": "https://x/2", ')],
        photo_members(good[2]),
    ]
    shard = write_with_tarfile(tmp_path / "mixed-00000.tar", samples)
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64)  # our photos are at most 56 x 56
    out = tmp_path / "rows.csv"
    assert score(str(shard), "--keep-fields", "url", "--out", str(out), weights=weights(MODEL)) == 0
    rows = rows_by_key(out)
    assert list(rows) == [good[0].key, "no-image", good[1].key, "broken", "too-big", "bad-meta", good[2].key]
    assert "its .json member is not JSON" in rows["bad-meta"]["error"]
    assert rows["no-image"]["url"] == "https://x/1"  # what could be kept is kept
    assert all(rows[p.key]["error"] is None and rows[p.key]["score"] is not None for p in good)
    assert all(row["shard"] == str(shard) for row in rows.values())
    assert "no image member" in rows["no-image"]["error"] and "json, txt" in rows["no-image"]["error"]
    assert rows["broken"]["error"] and rows["broken"]["score"] is None
    assert "80x80 exceeds the 4,096-pixel limit" in rows["too-big"]["error"]
    err = capsys.readouterr().err
    assert f"{shard} [too-big]" in err and f"{shard} [no-image]" in err


def damaged_copy(source: Path, target: Path, damage) -> Path:
    data = bytearray(source.read_bytes())
    damage(data)
    target.write_bytes(bytes(data))
    return target


def test_a_truncated_tar_scores_every_sample_before_the_cut_then_one_shard_row(tmp_path, weights, rng):
    items = photos(rng, 8)
    intact = write_with_tarfile(tmp_path / "intact.tar", [photo_members(p) for p in items])
    spans = tar_member_spans(intact)
    cut = int(rng.integers(spans[4][1], spans[-2][2]))  # from inside the second sample to the last member
    cut_shard = tmp_path / "shards" / "00000.tar"
    cut_shard.parent.mkdir()
    cut_shard.write_bytes(intact.read_bytes()[:cut])
    after = write_with_tarfile(tmp_path / "shards" / "00001.tar", [photo_members(p) for p in photos(rng, 3, first=8)])
    out = tmp_path / "rows.parquet"
    assert score(str(tmp_path / "shards" / "{00000..00001}.tar"), "--out", str(out), weights=weights(MODEL)) == 0

    rows = read_result_file(out)
    first = [row for row in rows if row["shard"] == str(cut_shard)]
    # every sample whose members all end before the cut is scored, none after it
    whole = [items[i].key for i in range(len(items)) if spans[3 * i + 2][2] <= cut]
    scored = [row["key"] for row in first if row["key"] is not None]
    assert scored[: len(whole)] == whole and len(scored) <= len(whole) + 1
    assert all(row["error"] is None for row in first if row["key"] is not None)
    (shard_row,) = [row for row in first if row["key"] is None]
    match = SHARD_ERROR.search(shard_row["error"])
    assert match, shard_row["error"]
    offset = int(match.group(1))
    last_whole_member = spans[3 * len(whole) - 1][1] if whole else 0
    assert last_whole_member <= offset <= cut  # where reading stopped: not before the last whole sample's end
    assert int(match.group(2)) == len(scored)
    # and the next shard went on
    assert sorted(row["key"] for row in rows if row["shard"] == str(after)) == [f"{i:09d}" for i in range(8, 11)]


@pytest.mark.parametrize("damage", ["bad checksum", "zeroed header", "cut at a member's end"])
def test_a_corrupt_tar_scores_the_samples_before_the_damage_and_names_its_offset(tmp_path, weights, rng, damage):
    """Damage that tarfile's own iteration takes for the end of the archive (a bad header after
    the first, a zeroed header, a shard ending where a member ends) is damage too."""
    items = photos(rng, 6)
    intact = write_with_tarfile(tmp_path / "intact.tar", [photo_members(p) for p in items])
    spans = tar_member_spans(intact)
    sample = int(rng.integers(1, 5))
    header = spans[3 * sample][1]  # the header of that sample's first member

    def corrupt(data: bytearray) -> None:
        if damage == "bad checksum":
            data[header + 100 : header + 108] = b"\xff" * 8  # the mode field: the checksum no longer holds
        elif damage == "zeroed header":
            data[header : header + 512] = bytes(512)
        else:
            del data[header:]

    folder = tmp_path / "shards"
    folder.mkdir()
    shard = damaged_copy(intact, folder / "a.tar", corrupt)
    write_with_tarfile(folder / "b.tar", [photo_members(p) for p in photos(rng, 2, first=6)])
    out = tmp_path / "rows.parquet"
    assert score(str(folder), "--out", str(out), weights=weights(MODEL)) == 0
    rows = read_result_file(out)
    first = [row for row in rows if row["shard"] == str(shard)]
    assert [row["key"] for row in first] == [p.key for p in items[:sample]] + [None]
    match = SHARD_ERROR.search(first[-1]["error"])
    assert match and int(match.group(1)) == header and int(match.group(2)) == sample, first[-1]["error"]
    reason = {"bad checksum": "damaged member header", "zeroed header": "all-zero header block"}.get(
        damage, "without its end-of-archive marker"
    )
    assert reason in match.group(3)
    assert len([row for row in rows if row["shard"] == str(folder / "b.tar")]) == 2


def test_a_shard_that_cannot_be_read_is_one_error_row_and_the_run_goes_on(tmp_path, weights, rng):
    """A missing shard of a range, a file that is no tar at all, a Parquet table without the
    image column: one row each naming the shard and why."""
    folder = tmp_path / "shards"
    folder.mkdir()
    write_with_tarfile(folder / "00000.tar", [photo_members(p) for p in photos(rng, 2)])
    (folder / "00002.tar").write_bytes(b"<html>503 Service Unavailable</html>")
    write_with_tarfile(folder / "00003.tar", [photo_members(p) for p in photos(rng, 2, first=2)])
    out = tmp_path / "rows.csv"
    assert score(str(folder / "{00000..00003}.tar"), "--out", str(out), weights=weights(MODEL)) == 0
    rows = read_result_file(out)
    by_shard = {}
    for row in rows:
        by_shard.setdefault(Path(row["shard"]).name, []).append(row)
    assert [row["error"] for row in by_shard["00000.tar"] + by_shard["00003.tar"]] == [None] * 4
    (missing,) = by_shard["00001.tar"]
    assert missing["key"] is None and "no such file" in missing["error"]
    (not_tar,) = by_shard["00002.tar"]
    assert not_tar["key"] is None and "shard damaged at byte 0" in not_tar["error"]

    table = write_img2dataset_parquet(tmp_path / "t.parquet", photos(rng, 2))
    out = tmp_path / "parquet.csv"
    assert score(str(table), "--image-column", "png", "--out", str(out), weights=weights(MODEL)) == 1
    (row,) = read_result_file(out)
    assert row["shard"] == str(table) and "no column 'png' (--image-column)" in row["error"]


def test_a_shard_whose_read_stalls_is_given_up_after_the_timeout(tmp_path, weights, rng):
    """A stream that sends nothing (a FIFO nobody writes: opening it blocks, as a hung remote read
    does) costs --decode-timeout seconds and one row; the next shard goes on."""
    folder = tmp_path / "shards"
    folder.mkdir()
    os.mkfifo(folder / "00000.tar")
    write_with_tarfile(folder / "00001.tar", [photo_members(p) for p in photos(rng, 2)])
    out = tmp_path / "rows.csv"
    try:
        started = time.monotonic()
        command = [str(folder / "{00000..00001}.tar"), "--decode-timeout", "1", "--out", str(out)]
        assert score(*command, weights=weights(MODEL)) == 0
        assert time.monotonic() - started < 30
    finally:
        descriptor = os.open(folder / "00000.tar", os.O_WRONLY | os.O_NONBLOCK)  # the abandoned reader gets EOF
        os.close(descriptor)
    rows = read_result_file(out)
    stalled = [row for row in rows if row["shard"] == str(folder / "00000.tar")]
    assert len(stalled) == 1 and "shard read stalled: nothing for 1 s after 0 samples" in stalled[0]["error"]
    assert len([row for row in rows if row["error"] is None]) == 2


def test_a_local_url_with_a_password_never_shows_it(tmp_path, weights):
    """An unreachable https shard named with user:password: its row and messages name the URL
    without the password."""
    secret = "pa55-w0rd-never-shown"
    out = tmp_path / "rows.csv"
    url = f"https://reader:{secret}@127.0.0.1:9/shards/00000.tar"
    assert score(url, "--out", str(out), weights=weights(MODEL)) == 1
    text = out.read_text()
    assert secret not in text
    (row,) = read_result_file(out)
    assert "127.0.0.1:9/shards/00000.tar" in row["shard"] and "cannot read the shard" in row["error"]


# -- one output per shard, and resume -----------------------------------------------------------


def test_out_dir_writes_one_output_per_shard_and_resume_skips_them(shard_folder, tmp_path, weights, capsys):
    out_dir = tmp_path / "scores"
    tars = str(shard_folder / "{00000..00004}.tar")
    w = weights(MODEL)
    assert score(tars, "--out-dir", str(out_dir), "--keep-fields", "url", weights=w) == 0
    outputs = sorted(out_dir.iterdir())
    assert [p.name for p in outputs] == [f"{i:05d}.parquet" for i in range(5)]  # nothing else: no journal left
    for index, path in enumerate(outputs):
        rows = read_result_file(path)
        assert {row["shard"] for row in rows} == {str(shard_folder / f"{index:05d}.tar")}
        assert len(rows) == 2 and all(row["error"] is None and row["url"].startswith("https://") for row in rows)
    stamps = {path.name: path.stat().st_mtime_ns for path in outputs}
    capsys.readouterr()

    assert score(tars, "--out-dir", str(out_dir), "--resume", weights=w) == 0
    assert "all 5 shards already scored" in capsys.readouterr().out
    assert {path.name: path.stat().st_mtime_ns for path in out_dir.iterdir()} == stamps

    (out_dir / "00002.parquet").unlink()
    assert score(tars, "--out-dir", str(out_dir), "--resume", weights=w) == 0
    assert "1 shards, scored 2, failed 0, 4 shards already done" in capsys.readouterr().out

    other = weights(MODEL, 1)
    assert score(tars, "--out-dir", str(out_dir), "--resume", weights=other) == 2
    assert "do not mix" in capsys.readouterr().err
    assert {path.name: path.stat().st_mtime_ns for path in out_dir.iterdir() if path.name != "00002.parquet"} == {
        name: stamp for name, stamp in stamps.items() if name != "00002.parquet"
    }


@pytest.mark.parametrize("out_format", ["csv", "jsonl"])
def test_a_damaged_shard_is_read_again_on_resume_and_leaves_no_stale_error(
    tmp_path, weights, rng, out_format, monkeypatch
):
    items = photos(rng, 4)
    folder = tmp_path / "shards"
    folder.mkdir()
    intact = write_with_tarfile(tmp_path / "intact.tar", [photo_members(p) for p in items])
    (folder / "00000.tar").write_bytes(intact.read_bytes()[: tar_member_spans(intact)[6][1] + 100])
    out_dir = tmp_path / "scores"
    monkeypatch.chdir(tmp_path)
    common = ["--out-dir", f"file://{out_dir}", "--out-format", out_format, "--resume"]  # a local folder as a URL
    assert score(str(folder / "00000.tar"), *common, weights=weights(MODEL)) == 0
    rows = read_result_file(out_dir / f"00000.{out_format}")
    assert [row["key"] for row in rows] == [items[0].key, items[1].key, None]
    shutil.copy(intact, folder / "00000.tar")  # the shard is whole again (downloaded anew)
    assert score(str(folder / "00000.tar"), *common, weights=weights(MODEL)) == 0
    rows = read_result_file(out_dir / f"00000.{out_format}")
    assert [row["key"] for row in rows] == [p.key for p in items] and all(row["error"] is None for row in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["intact.tar", "scores", "shards"]


def test_resume_finishes_a_shard_left_unfinished_sample_by_sample(tmp_path, weights, rng, capsys):
    """A run killed part-way through a shard leaves its journal; --resume keeps those rows and
    scores only the samples after them (the journal is left the way a kill leaves it: written
    by the run's own code, then closed without the final file)."""
    items = photos(rng, 9)
    shard = write_with_tarfile(tmp_path / "00001.tar", [photo_members(p) for p in items])
    earlier = write_with_tarfile(tmp_path / "00000.tar", [photo_members(p) for p in photos(rng, 2, first=9)])
    out_dir = tmp_path / "scores"
    w = weights(MODEL)
    done = int(rng.integers(2, 7))
    scorer = Scorer(MODEL, weights=w, batch_size=1)
    card = get_card(MODEL)
    with PerShardOutputs(str(out_dir), [str(shard)], "parquet", MODEL, weights_sha256(MODEL, w), card.task) as sink:
        rows = score_shards(scorer, [str(shard)], sink, SampleFormat())
        first = [next(rows) for _ in range(done)]
        rows.close()  # stopped here: the shard's journal holds `done` rows, its output does not exist
    unfinished = journal_path(out_dir / "00001.parquet")
    assert not (out_dir / "00001.parquet").exists() and unfinished.exists()
    left = unfinished.read_bytes()

    both = [str(earlier), str(shard)]
    assert score(*both, "--out-dir", str(out_dir), "--resume", weights=weights(MODEL, 1)) == 2  # other weights
    assert "do not mix" in capsys.readouterr().err
    assert sorted(out_dir.iterdir()) == [unfinished] and unfinished.read_bytes() == left  # refused before any work

    assert score(*both, "--out-dir", str(out_dir), "--resume", weights=w) == 0
    assert f"2 shards, scored {2 + len(items) - done}, failed 0" in capsys.readouterr().out
    rows = read_result_file(out_dir / "00001.parquet")
    assert [row["key"] for row in rows] == [p.key for p in items]
    assert [row["score"] for row in rows[:done]] == [row.score for row in first]
    assert sorted(p.name for p in out_dir.iterdir()) == ["00000.parquet", "00001.parquet"]


# -- memory ---------------------------------------------------------------------------------------------


def stream_position(path: Path) -> int:
    """How far this process has read the open file `path` (its descriptor's offset)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                with open(f"/proc/self/fdinfo/{fd}") as info:
                    return int(re.search(r"pos:\s+(\d+)", info.read()).group(1))
        except OSError:
            continue
    raise AssertionError(f"{path} is not open")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="reads file offsets from /proc (Linux)")
def test_the_reader_holds_a_bounded_number_of_samples_whatever_the_shard_size(tmp_path, rng):
    """While the pipeline takes no samples, the reader thread stops QUEUE_SAMPLES (and the one
    sample being grouped) ahead: a shard of any size costs the memory of a few samples."""
    member = 16 * 1024
    count = 40 * QUEUE_SAMPLES
    blob = rng.integers(0, 256, member, dtype=np.uint8).tobytes()
    shard = write_with_tarfile(tmp_path / "big.tar", [[(f"{i:07d}.jpg", blob)] for i in range(count)])
    size = shard.stat().st_size
    jobs = shard_jobs([str(shard)], SampleFormat())
    taken = [next(jobs) for _ in range(10)]
    position, deadline = -1, time.monotonic() + 30
    while time.monotonic() < deadline:  # until the reader blocks on the full queue
        time.sleep(0.2)
        now = stream_position(shard)
        if now == position:
            break
        position = now
    per_sample = member + 512
    assert position <= (len(taken) + QUEUE_SAMPLES + 2) * per_sample + 64 * 1024, (position, size)
    assert position < size / 10
    rest = sum(1 for _ in jobs)
    assert len(taken) + rest == count


def is_open(path: Path) -> bool:
    try:
        stream_position(path)
        return True
    except AssertionError:
        return False


def test_the_reader_ends_when_the_pipeline_stops_taking_samples(tmp_path, rng):
    """A reader left with a full queue (the pipeline stopped: an interrupted run, an iterator
    dropped) ends instead of waiting for ever holding its samples, also when its shard ends in
    damage after the queue filled."""
    samples = [[(f"{i:05d}.jpg", rng.bytes(600))] for i in range(QUEUE_SAMPLES + 2)]
    intact = write_with_tarfile(tmp_path / "intact.tar", samples)
    shard = tmp_path / "cut.tar"
    shard.write_bytes(intact.read_bytes()[: tar_member_spans(intact)[-1][1] + 700])  # the last sample is cut
    before = set(threading.enumerate())
    jobs = shard_jobs([str(shard)], SampleFormat())
    next(jobs)
    (reader,) = set(threading.enumerate()) - before
    deadline = time.monotonic() + 30
    while is_open(shard):  # the reader has read to the damage and waits to hand on its last word
        if time.monotonic() > deadline:
            where = "".join(traceback.format_stack(sys._current_frames()[reader.ident]))
            pytest.fail(f"the reader did not read to the damage in 30 s; it is at:\n{where}")
        time.sleep(0.05)
    jobs.close()
    reader.join(timeout=10)
    assert not reader.is_alive(), "the reader thread still waits on its queue"


def test_parquet_columns_of_other_names_and_a_row_without_a_key(tmp_path, weights, rng):
    """--key-column and --image-column as named (a capital letter too); a row without a key is
    keyed by its row number."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = photos(rng, 3, png_every=2)
    table = pa.table(
        {
            "id": [items[0].key, None, items[2].key],
            "Image": [p.data for p in items],
            "caption": [p.meta["caption"] for p in items],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    out = tmp_path / "rows.jsonl"
    command = [str(tmp_path / "t.parquet"), "--image-column", "Image", "--key-column", "id"]
    assert score(*command, "--keep-fields", "caption", "--out", str(out), weights=weights(MODEL)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["key"] for row in rows] == [items[0].key, "1", items[2].key]
    assert [row["caption"] for row in rows] == [p.meta["caption"] for p in items]
    assert all(row["error"] is None for row in rows) and items[1].ext == "png"


def test_a_samples_image_is_its_first_member_with_an_image_extension(tmp_path, weights, rng):
    """Two image members in one sample (a .png, then a .jpg of another photo): the row is the
    first one's score, as WebDataset's rule takes the first matching member."""
    first, second = photos(rng, 2)
    folder = tmp_path / "files"
    folder.mkdir()
    for photo in (first, second):
        (folder / f"{photo.key}.{photo.ext}").write_bytes(photo.data)
    assert score(str(folder), "--out", str(tmp_path / "files.csv"), weights=weights(MODEL)) == 0
    by_file = {Path(row["path"]).stem: row["score"] for row in read_result_file(tmp_path / "files.csv")}
    assert by_file[first.key] != by_file[second.key]
    members = [("00000.a.png" if first.ext == "png" else f"00000.a.{first.ext}", first.data)]
    members.append((f"00000.{second.ext}", second.data))
    shard = write_with_tarfile(tmp_path / "00000.tar", [members])
    out = tmp_path / "rows.csv"
    assert (
        score(str(shard), "--image-ext", f"a.{first.ext},{second.ext}", "--out", str(out), weights=weights(MODEL)) == 0
    )
    (row,) = read_result_file(out)
    assert row["key"] == "00000" and row["score"] == by_file[first.key]


def test_one_output_resumes_without_reading_the_shards_its_journal_says_are_done(tmp_path, weights, rng):
    """A run into one file, stopped after its first shard was read to the end: --resume keeps that
    shard's rows from the journal and does not read it again (here it is gone: reading it would
    be an error row), and scores the next shard."""
    from iqart.engine.results.output import ResultOutput
    from iqart.engine.results.shard_outputs import OneOutput

    items = photos(rng, 4)
    shard_a = write_with_tarfile(tmp_path / "00000.tar", [photo_members(p) for p in items[:2]])
    write_with_tarfile(tmp_path / "00001.tar", [photo_members(p) for p in items[2:]])
    out, w = tmp_path / "rows.csv", weights(MODEL)
    output = ResultOutput(out, MODEL, weights_sha256(MODEL, w), "nr", shards=True)
    try:
        first = list(score_shards(Scorer(MODEL, weights=w, batch_size=1), [str(shard_a)], OneOutput(output)))
    finally:
        output.close()  # not finished: the journal stays, as after a kill
    assert len(first) == 2 and journal_path(out).is_file()
    shard_a.unlink()
    both = str(tmp_path / "{00000..00001}.tar")  # a range: one missing shard in it is no usage error
    assert score(both, "--resume", "--out", str(out), weights=w) == 0
    rows = read_result_file(out)
    assert sorted(row["key"] for row in rows) == sorted(p.key for p in items)
    assert all(row["error"] is None for row in rows), [row["error"] for row in rows]
