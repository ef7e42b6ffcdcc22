"""`iqart filter`: kept samples copied out of real tar shards byte for byte, keys and headers
unchanged; --min and --top-fraction; shards of at most --samples-per-shard; error rows never
kept; the index; damaged and moved shards; output in an fsspec filesystem; bad usage."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from iqart.engine.cli.main import main
from iqart.engine.sources.shard_filter import INDEX_COLUMNS, INDEX_NAME, Scores, choose
from iqart.engine.sources.shard_locations import list_shards
from iqart.engine.sources.shard_writer import OutputFolder, ShardWriter
from iqart.engine.sources.webdataset_tar import iter_tar_records
from tests.helpers import EXAMPLE_IMAGES

MODEL, WEIGHTS = "qualiclip-tiny", "ab" * 32
COLUMNS = ["shard", "key", "score", "error", "model", "weights_sha256"]


def write_shard(path: Path, samples: dict[str, dict[str, bytes]], rng) -> Path:
    """A tar shard as img2dataset lays one out: each sample's members consecutive, in order,
    with varied modes and times so that copied headers can be told apart."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mode = len(data), int(rng.choice([0o644, 0o600, 0o664]))
                info.mtime, info.uname = int(rng.integers(1_000_000, 2_000_000_000)), "curator"
                tar.addfile(info, io.BytesIO(data))
    return path


def random_samples(rng, count: int, prefix: str = "") -> dict[str, dict[str, bytes]]:
    """Samples of three members each (`jpg`, `json`, `txt`); filter never decodes, so the image is
    any bytes. Some keys have folders and extensions with several dots, as WebDataset allows."""
    samples = {}
    for index in range(count):
        key = f"{prefix}{index:09d}" if index % 4 else f"{prefix}sub/{index:09d}"
        samples[key] = {
            "jpg" if index % 3 else "ref.jpg": rng.bytes(int(rng.integers(1, 3000))),
            "json": b'{"url": "https://example.com/%d.jpg"}' % index,
            "txt": f"caption {index}".encode(),
        }
    return samples


def write_scores(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({"model": MODEL, "weights_sha256": WEIGHTS, "error": "", **row})
    return path


def tar_records(path) -> list[tuple[str, bytes, int, float, str]]:
    """(name, data, mode, mtime, uname) of every member, in order."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read(), m.mode, m.mtime, m.uname) for m in tar.getmembers()]


def output_shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tar"))


@pytest.fixture
def shard_and_scores(tmp_path, rng):
    """A shard of 12 samples and scores for each: distinct, in shuffled order."""
    samples = random_samples(rng, 12)
    shard = write_shard(tmp_path / "00007.tar", samples, rng)
    scores = {key: float(value) for key, value in zip(samples, rng.permutation(12) / 10, strict=True)}
    rows = [{"shard": str(shard), "key": key, "score": score} for key, score in scores.items()]
    return shard, scores, write_scores(tmp_path / "scores.csv", rows)


def test_kept_samples_are_the_source_bytes_with_keys_and_headers_unchanged(shard_and_scores, tmp_path):
    shard, scores, scores_file = shard_and_scores
    out = tmp_path / "kept"
    assert main(["filter", "-s", str(scores_file), "--min", "0.6", "-o", str(out)]) == 0
    kept = {key for key, score in scores.items() if score >= 0.6}
    assert len(kept) == 6
    written = [record for path in output_shards(out) for record in tar_records(path)]
    source = tar_records(shard)
    assert written == [record for record in source if record[0].split(".")[0] in kept]  # names, bytes, headers
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_min_keeps_exactly_the_scores_at_or_above_it(shard_and_scores, tmp_path):
    shard, scores, scores_file = shard_and_scores
    for threshold in (0.0, 0.55, 1.1, 1.15):  # scores are 0.0, 0.1, ... 1.1
        out = tmp_path / f"min-{threshold}"
        assert main(["filter", "-s", str(scores_file), "--min", str(threshold), "-o", str(out)]) == 0
        index = pq.read_table(out / INDEX_NAME).to_pylist()
        assert {row["key"] for row in index} == {key for key, score in scores.items() if score >= threshold}
        assert len(output_shards(out)) == (1 if threshold <= 1.1 else 0)


def test_top_fraction_keeps_the_best_floor_f_n_of_all_scored_samples(tmp_path, rng):
    samples_a, samples_b = random_samples(rng, 7, "a"), random_samples(rng, 5, "b")
    shard_a = write_shard(tmp_path / "a.tar", samples_a, rng)
    shard_b = write_shard(tmp_path / "b.tar", samples_b, rng)
    values = iter(rng.permutation(12) / 11)
    rows = [
        {"shard": str(s), "key": k, "score": next(values)}
        for s, keys in ((shard_a, samples_a), (shard_b, samples_b))
        for k in keys
    ]
    scores_file = write_scores(tmp_path / "scores.csv", rows)
    out = tmp_path / "top"
    assert main(["filter", "-s", str(scores_file), "--top-fraction", "0.25", "-o", str(out)]) == 0
    best = sorted(rows, key=lambda row: -row["score"])[:3]  # floor(0.25 x 12)
    index = pq.read_table(out / INDEX_NAME).to_pylist()
    assert sorted((row["source_shard"], row["key"]) for row in index) == sorted((r["shard"], r["key"]) for r in best)
    # across both shards, in source order: shard a's kept samples first
    assert [row["key"] for row in index] == [r["key"] for r in rows if r in best]


def test_top_fraction_ties_and_rounding():
    scores = Scores(MODEL, WEIGHTS, higher_better=True)
    for index, value in enumerate([0.5, 0.9, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7]):
        scores.add("s.tar", f"k{index}", value)
    assert choose(scores, top_fraction=0.3) == {"s.tar": {"k1": 0.9, "k9": 0.7, "k8": 0.6}}  # 0.3 x 10 = 3
    kept = choose(scores, top_fraction=0.5)["s.tar"]  # 0.5 ties three ways for the last two places
    assert set(kept) == {"k1", "k9", "k8", "k0", "k2"}  # the earlier rows win
    assert choose(scores, top_fraction=0.05) == {}  # floor(0.5) = 0
    assert len(choose(scores, top_fraction=1.0)["s.tar"]) == 10


def test_a_lower_better_model_keeps_the_low_scores():
    scores = Scores("a-distortion-index", WEIGHTS, higher_better=False)
    for index, value in enumerate([3.0, 1.0, 2.0, 5.0]):
        scores.add("s.tar", f"k{index}", value)
    assert set(choose(scores, min_score=2.0)["s.tar"]) == {"k1", "k2"}
    assert set(choose(scores, top_fraction=0.5)["s.tar"]) == {"k1", "k2"}
    scores.add("s.tar", "k1", 4.0)  # a second sample with key k1: judged by the worse score
    assert set(choose(scores, min_score=2.0)["s.tar"]) == {"k2"}


def test_samples_per_shard_splits_in_source_order(shard_and_scores, tmp_path):
    shard, scores, scores_file = shard_and_scores
    out = tmp_path / "split"
    assert main(["filter", "-s", str(scores_file), "--min", "0.3", "-o", str(out), "--samples-per-shard", "3"]) == 0
    kept = [key for key in scores if scores[key] >= 0.3]  # 9, in shard order
    shards = output_shards(out)
    assert [p.name for p in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    keys_per_shard = [list(dict.fromkeys(r[0].split(".")[0] for r in tar_records(p))) for p in shards]
    assert keys_per_shard == [kept[0:3], kept[3:6], kept[6:9]]
    index = pq.read_table(out / INDEX_NAME)
    assert index.column_names == list(INDEX_COLUMNS)
    rows = index.to_pylist()
    assert [(Path(r["shard"]).name, r["key"]) for r in rows] == [
        (f"{n:05d}.tar", key) for n, keys in enumerate(keys_per_shard) for key in keys
    ]
    assert all(r["source_shard"] == str(shard) and r["score"] == scores[r["key"]] for r in rows)
    assert all(r["model"] == MODEL and r["weights_sha256"] == WEIGHTS for r in rows)
    assert all(Path(r["shard"]).is_absolute() for r in rows)


def test_error_rows_are_never_kept(tmp_path, rng):
    samples = random_samples(rng, 6)
    shard = write_shard(tmp_path / "00000.tar", samples, rng)
    keys = list(samples)
    rows = [{"shard": str(shard), "key": key, "score": 0.9} for key in keys[:3]]
    rows += [
        {"shard": str(shard), "key": keys[3], "score": "", "error": "cannot identify image file"},
        {"shard": str(shard), "key": keys[4], "score": 0.95, "error": "decode timed out"},  # an error with a score
        {"shard": str(shard), "key": keys[5], "score": 0.99},
        {"shard": str(shard), "key": keys[5], "score": "", "error": "a second sample with this key failed"},
        {"shard": str(shard), "key": "", "score": "", "error": "shard damaged at byte 9000 after 6 samples"},
    ]
    scores_file = write_scores(tmp_path / "scores.csv", rows)
    out = tmp_path / "kept"
    assert main(["filter", "-s", str(scores_file), "--min", "0", "-o", str(out)]) == 0
    assert [row["key"] for row in pq.read_table(out / INDEX_NAME).to_pylist()] == keys[:3]
    out = tmp_path / "top"
    assert main(["filter", "-s", str(scores_file), "--top-fraction", "1", "-o", str(out)]) == 0
    assert [row["key"] for row in pq.read_table(out / INDEX_NAME).to_pylist()] == keys[:3]


def member_spans(path) -> list[tuple[int, int]]:
    """(header offset, data offset) of every member, in order."""
    with tarfile.open(path) as tar:
        return [(m.offset, m.offset_data) for m in tar.getmembers()]


@pytest.mark.parametrize(
    "cut", ["inside the data of sample 3's second member", "at the header of sample 4's last member"]
)
def test_a_damaged_shard_gives_the_complete_samples_before_the_damage(tmp_path, rng, capsys, cut):
    """Cut part-way (an interrupted upload): the kept samples before the damage are copied whole,
    never one that may lack members; the run says where and exits 1."""
    samples = random_samples(rng, 8)  # three members each
    whole = write_shard(tmp_path / "whole.tar", samples, rng)
    spans = member_spans(whole)
    if cut.startswith("inside"):
        at, complete = spans[3 * 3 + 1][1] + 5, 2  # sample 2, the last read before the damage, is held back
    else:
        at, complete = spans[4 * 3 + 2][0], 4  # sample 4 lost its last member
    shard = tmp_path / "00000.tar"
    shard.write_bytes(whole.read_bytes()[:at])
    rows = [{"shard": str(shard), "key": key, "score": 1.0} for key in samples]
    scores_file = write_scores(tmp_path / "scores.csv", rows)
    out = tmp_path / "kept"
    assert main(["filter", "-s", str(scores_file), "--min", "0.5", "-o", str(out)]) == 1
    assert f"{shard}: damaged at byte" in capsys.readouterr().err
    written = [record for path in output_shards(out) for record in tar_records(path)]
    copied = list(dict.fromkeys(r[0].split(".")[0] for r in written))
    assert copied == list(samples)[:complete]
    assert written == [r for r in tar_records(whole) if r[0].split(".")[0] in copied]
    assert [row["key"] for row in pq.read_table(out / INDEX_NAME).to_pylist()] == copied


def test_shards_read_from_where_they_are_now(shard_and_scores, tmp_path, rng, capsys):
    shard, scores, scores_file = shard_and_scores
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / shard.name).write_bytes(shard.read_bytes())
    shard.unlink()
    assert main(["filter", "-s", str(scores_file), "--min", "0.5", "-o", str(tmp_path / "gone")]) == 1
    assert "no such file" in capsys.readouterr().err
    out = tmp_path / "kept"
    assert main(["filter", "-s", str(scores_file), "--min", "0.5", "-o", str(out), str(moved)]) == 0
    index = pq.read_table(out / INDEX_NAME).to_pylist()
    assert {row["key"] for row in index} == {k for k, s in scores.items() if s >= 0.5}
    assert {row["source_shard"] for row in index} == {str(moved / shard.name)}


def test_per_shard_outputs_folder_to_an_fsspec_filesystem(tmp_path, rng):
    """Scores as `iqart score --out-dir` leaves them (one Parquet file a shard, beside a hidden
    journal), new shards into an fsspec URL (the in-memory filesystem); then the scores and the
    shards read from URLs as well."""
    import pyarrow as pa

    shards, expected = [], []
    scores_dir = tmp_path / "scores"
    scores_dir.mkdir()
    for n in range(2):
        samples = random_samples(rng, 5, f"s{n}-")
        shard = write_shard(tmp_path / f"{n:05d}.tar", samples, rng)
        shards.append(shard)
        rows = [
            {"shard": str(shard), "key": k, "score": float(i), "error": None, "model": MODEL, "weights_sha256": WEIGHTS}
            for i, k in enumerate(samples)
        ]
        pq.write_table(pa.Table.from_pylist(rows), scores_dir / f"{n:05d}.parquet")
        expected += [(str(shard), k) for i, k in enumerate(samples) if i >= 2]
    (scores_dir / ".00002.parquet.journal").write_text("{}\n")
    url = f"memory://filter-test-{rng.integers(1 << 30)}/kept"
    assert main(["filter", "-s", str(scores_dir), "--min", "2", "-o", url, "--samples-per-shard", "4"]) == 0
    fs = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(url.removeprefix("memory://"), detail=False))
    assert names == ["00000.tar", "00001.tar", INDEX_NAME]
    with fsspec.open(f"{url}/{INDEX_NAME}", "rb") as f:
        index = pq.read_table(f).to_pylist()
    assert [(r["source_shard"], r["key"]) for r in index] == expected
    assert {r["shard"] for r in index} == {f"{url}/00000.tar", f"{url}/00001.tar"}
    with fsspec.open(f"{url}/00001.tar", "rb") as f, tarfile.open(fileobj=io.BytesIO(f.read())) as second:
        assert len({m.name.split(".")[0] for m in second.getmembers()}) == 2

    # scores and shards behind URLs too: the shards found by name among those given
    remote = url.rsplit("/", 1)[0]
    for path in [*scores_dir.iterdir(), *shards]:
        folder = "scores" if path.parent == scores_dir else "shards"
        fs.pipe_file(f"{remote.removeprefix('memory://')}/{folder}/{path.name}", path.read_bytes())
    again = f"{remote}/again"
    argv = ["filter", "-s", f"{remote}/scores", "--min", "2", "-o", again, "--samples-per-shard", "4"]
    assert main([*argv, f"{remote}/shards/*.tar"]) == 0
    with fsspec.open(f"{again}/{INDEX_NAME}", "rb") as f:
        index = pq.read_table(f).to_pylist()
    named = {Path(url).name: url for url in list_shards([f"{remote}/shards/*.tar"])}  # as `iqart score` names them
    assert [(r["source_shard"], r["key"]) for r in index] == [(named[Path(shard).name], key) for shard, key in expected]
    for name in ("00000.tar", "00001.tar"):
        assert fs.cat_file(f"{again.removeprefix('memory://')}/{name}") == fs.cat_file(
            f"{url.removeprefix('memory://')}/{name}"
        )


def test_a_stopped_writer_leaves_complete_shards_and_no_partial_one(tmp_path, rng):
    """A shard appears only complete: while being written it is a hidden temporary file, and an
    exception (a stop signal, a full disk) removes the one in progress; those done stay, and each
    completion reports exactly the samples it holds."""
    samples = random_samples(rng, 7)
    source = write_shard(tmp_path / "source.tar", samples, rng)
    with open(source, "rb") as stream:
        records = list(iter_tar_records(stream))
    folder, completed = tmp_path / "out", []
    writer = ShardWriter(OutputFolder(str(folder)), 3, lambda url, held: completed.append((url, held)))
    with pytest.raises(KeyboardInterrupt), writer:
        for index, (key, members) in enumerate(records):
            writer.add(key, members, index)
            visible = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
            assert visible == [f"{n:05d}.tar" for n in range(index // 3)]  # only complete shards show
            if index == 6:
                raise KeyboardInterrupt
    assert sorted(p.name for p in folder.iterdir()) == ["00000.tar", "00001.tar"]  # nothing partial or hidden
    assert [(Path(url).name, [key for key, _ in held]) for url, held in completed] == [
        ("00000.tar", list(samples)[0:3]),
        ("00001.tar", list(samples)[3:6]),
    ]
    assert tar_records(folder / "00001.tar") == [
        r for r in tar_records(source) if r[0].split(".")[0] in list(samples)[3:6]
    ]


def run_cli(argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return code, capsys.readouterr().err


def test_bad_usage_exits_2_with_a_clear_message(shard_and_scores, tmp_path, capsys):
    shard, _, scores_file = shard_and_scores
    out = str(tmp_path / "out")
    code, err = run_cli(["filter", "-s", str(scores_file), "-o", out], capsys)
    assert code == 2 and "one of the arguments --min --top-fraction is required" in err
    code, err = run_cli(["filter", "-s", str(scores_file), "--min", "0.5", "--top-fraction", "0.1", "-o", out], capsys)
    assert code == 2 and "--top-fraction: not allowed with argument --min" in err
    code, err = run_cli(["filter", "-s", str(scores_file), "--top-fraction", "0", "-o", out], capsys)
    assert code == 2 and "--top-fraction must be in (0, 1]" in err

    files = tmp_path / "files.csv"  # scores of image files: no shard or key column
    files.write_text(f"path,score,error,model,weights_sha256\n/x/a.jpg,0.5,,{MODEL},{WEIGHTS}\n")
    code, err = run_cli(["filter", "-s", str(files), "--min", "0.5", "-o", out], capsys)
    assert code == 2 and "not samples of shards (shard and key columns)" in err

    mixed = write_scores(tmp_path / "mixed.csv", [{"shard": str(shard), "key": "a", "score": 1}])
    with open(mixed, "a") as f:
        f.write(f"{shard},b,0.5,,bpclip-nr-tiny,{WEIGHTS}\n")
    code, err = run_cli(["filter", "-s", str(mixed), "--min", "0.5", "-o", out], capsys)
    assert code == 2 and "scores of different models or weights do not rank together" in err

    code, err = run_cli(["filter", "-s", str(tmp_path / "none.csv"), "--min", "0.5", "-o", out], capsys)
    assert code == 2 and "no such file or folder" in err

    assert run_cli(["filter", "-s", str(scores_file), "--min", "0.5", "-o", out], capsys)[0] == 0
    code, err = run_cli(["filter", "-s", str(scores_file), "--min", "0.5", "-o", out], capsys)
    assert code == 2 and "holds shards already" in err  # never mixed with an earlier run's shards


@pytest.mark.usefixtures("iqart_home")
def test_score_then_filter_end_to_end(tmp_path, rng):
    """`iqart score` on a shard of the example images, then `iqart filter` on its output: the kept
    samples are those scored at or above the median, copied unchanged."""
    images = sorted(EXAMPLE_IMAGES.glob("*.png"))[:6]
    samples = {f"{i:05d}": {"png": p.read_bytes(), "json": b'{"url": "u%d"}' % i} for i, p in enumerate(images)}
    shard = write_shard(tmp_path / "00000.tar", samples, rng)
    scores_dir = tmp_path / "scores"
    assert main(["score", str(shard), "-m", MODEL, "--out-dir", str(scores_dir), "--out-format", "csv"]) == 0
    with open(scores_dir / "00000.csv", newline="") as f:
        scores = {row["key"]: float(row["score"]) for row in csv.DictReader(f)}
    threshold = sorted(scores.values())[3]
    out = tmp_path / "kept"
    assert main(["filter", "-s", str(scores_dir), "--min", repr(threshold), "-o", str(out)]) == 0
    kept = {key for key, score in scores.items() if score >= threshold}
    assert len(kept) == 3
    (written,) = output_shards(out)
    assert tar_records(written) == [r for r in tar_records(shard) if r[0].split(".")[0] in kept]
