"""Scoring from tar shards against the same images as loose files, and memory while reading a
large shard against a small one.

    python3 benchmarks/bench_shards.py [--images 512] [--rounds 9] [--big-mb 1024] [--small-mb 10] [--json FILE]

1. Throughput: `--images` JPEGs as img2dataset writes them by default (256x256, quality 95; crops
   of scikit-image's photos), once as loose files and once as WebDataset tar shards (each sample
   `KEY.jpg` + `KEY.json` + `KEY.txt`, 256 samples a shard). One Scorer (qualiclip-tiny, demo
   weights, onnxruntime on the CPU) scores both through `Scorer.score_jobs`, the call `iqart
   score` makes: file jobs for the files, `shard_jobs` (the reader thread and its bounded queue)
   for the shards. After one warm-up pass of each, the two alternate for `--rounds` rounds, the
   order swapped every round; images/s are medians, the ratio the median of per-round ratios.
2. Peak RSS: a shard of about `--big-mb` MB and one of about `--small-mb` MB, built from the same
   photos at full size (JPEG quality 90 and 95, about 70 KB a sample, so both hold more samples
   than the reader's queue), each read to its end by a child process through `shard_jobs` (every
   sample read, grouped and turned into a job, then dropped after 1 ms, so that the reader runs
   ahead and its queue is full, as under a scorer slower than the disk); the child reports its
   peak RSS (VmHWM) before the first read and after the last, and wait4 gives the whole child's
   (benchmarks/peak_rss.py). Each shard is deleted once measured.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_rss import run_measured  # noqa: E402  (this folder is not a package)

MODEL, BACKEND = "qualiclip-tiny", "onnxruntime"
SAMPLES_PER_SHARD = 256
CONSUMER_DELAY_S = 0.001  # the RSS child takes jobs slower than the reader reads, as scoring does: the queue fills
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # in scikit-image's package: no download


def photos() -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)() for name in PHOTOS]


def jpeg(array: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def img2dataset_images(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct 256x256 JPEGs: random crops of the photos, resized as img2dataset does."""
    rng = np.random.default_rng(seed)
    sources = photos()
    images = []
    for index in range(count):
        photo = sources[index % len(sources)]
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 2, min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        images.append(jpeg(np.asarray(crop.resize((256, 256), Image.Resampling.LANCZOS))))
    return images


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def add_sample(tar: tarfile.TarFile, key: str, image: bytes) -> None:
    add_member(tar, f"{key}.jpg", image)
    add_member(tar, f"{key}.json", json.dumps({"url": f"https://example.com/{key}.jpg", "key": key}).encode())
    add_member(tar, f"{key}.txt", f"a photo, sample {key}".encode())


def write_files_and_shards(folder: Path, images: list[bytes]) -> tuple[list[Path], list[str]]:
    files_dir, shards_dir = folder / "files", folder / "shards"
    files_dir.mkdir()
    shards_dir.mkdir()
    files = []
    for index, data in enumerate(images):
        path = files_dir / f"{index:09d}.jpg"
        path.write_bytes(data)
        files.append(path)
    shards = []
    for start in range(0, len(images), SAMPLES_PER_SHARD):
        path = shards_dir / f"{start // SAMPLES_PER_SHARD:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for index in range(start, min(start + SAMPLES_PER_SHARD, len(images))):
                add_sample(tar, f"{index:09d}", images[index])
        shards.append(str(path))
    return files, shards


def throughput(files: list[Path], shards: list[str], rounds: int) -> dict:
    from iqart.engine.pipeline.jobs import ScoreJob
    from iqart.engine.scorer import Scorer
    from iqart.engine.sources.samples import SampleFormat
    from iqart.engine.sources.shard_reader import shard_jobs

    scorer = Scorer(MODEL, BACKEND, "cpu")

    def run(kind: str) -> float:
        jobs = [ScoreJob(path) for path in files] if kind == "files" else shard_jobs(shards, SampleFormat())
        started = time.perf_counter()
        rows = list(scorer.score_jobs(jobs))
        elapsed = time.perf_counter() - started
        assert len(rows) == len(files) and all(row.ok for row in rows), [r.error for r in rows if not r.ok][:3]
        return len(rows) / elapsed

    return {
        "model": MODEL,
        "backend": BACKEND,
        "batch_size": scorer.batch_size,
        "decode_workers": scorer.workers,
        "images": len(files),
        "shards": len(shards),
        "image_bytes_mean": round(sum(p.stat().st_size for p in files) / len(files)),
        **interleaved(run, rounds),
    }


def read_and_decode(files: list[Path], shards: list[str], rounds: int) -> dict:
    """Images/s of the source side alone, on one thread: each image opened (a file, or a sample
    from the shard reader) and decoded to the model's input as the pipeline's decode workers do
    (`open_image` + `as_array`), no model. Without inference to hide it, what reading a shard
    costs beside opening files shows here. Interleaved as `throughput` is."""
    from iqart.engine.pipeline.images import as_array, open_image
    from iqart.engine.sources.samples import SampleFormat
    from iqart.engine.sources.shard_reader import shard_jobs
    from iqart.train.models.zoo import get_card

    policy = get_card(MODEL).resize

    def run(kind: str) -> float:
        started = time.perf_counter()
        sources = files if kind == "files" else (job.path for job in shard_jobs(shards, SampleFormat()))
        count = sum(as_array(open_image(source), policy).shape[0] > 0 for source in sources)
        assert count == len(files)
        return count / (time.perf_counter() - started)

    return interleaved(run, rounds)


def interleaved(run, rounds: int) -> dict:
    """`run("files")` and `run("shards")` after one warm-up each, alternating, the order swapped
    every round: every round's figures, their medians and the median per-round ratio."""
    run("files"), run("shards")
    rates: dict[str, list[float]] = {"files": [], "shards": []}
    for index in range(rounds):
        for kind in ("files", "shards") if index % 2 == 0 else ("shards", "files"):
            rates[kind].append(run(kind))
        print(
            f"  round {index + 1}: files {rates['files'][-1]:.1f}, shards {rates['shards'][-1]:.1f} images/s",
            flush=True,
        )
    ratios = [s / f for s, f in zip(rates["shards"], rates["files"], strict=True)]
    return {
        "rounds": rounds,
        "files_images_per_s": [round(r, 2) for r in rates["files"]],
        "shards_images_per_s": [round(r, 2) for r in rates["shards"]],
        "files_median": statistics.median(rates["files"]),
        "shards_median": statistics.median(rates["shards"]),
        "ratio_median": statistics.median(ratios),
        "ratios": [round(r, 3) for r in ratios],
    }


def write_big_shard(path: Path, megabytes: float) -> dict:
    """A shard of about `megabytes` MB of full-size photo JPEGs (the same few encoded images
    repeated under new keys: reading does not decode, so repetition costs nothing in realism)."""
    encoded = [jpeg(photo, quality) for photo in photos() for quality in (90, 95)]
    target, written, samples = megabytes * 1e6, 0, 0
    with tarfile.open(path, "w") as tar:
        while written < target:
            image = encoded[samples % len(encoded)]
            add_sample(tar, f"{samples:09d}", image)
            written += len(image)
            samples += 1
    return {"bytes": path.stat().st_size, "samples": samples}


def read_peak_rss(path: Path) -> dict:
    """The child's peak RSS while reading (VmHWM at the end of reading), its peak before the
    first read (after its imports), and wait4's figure for the whole child, which also counts the
    interpreter's shutdown (tearing down torch's modules adds about 170 MiB on its own, as measured)."""
    report = path.with_suffix(".json")
    code, whole_child_mib, wall = run_measured(
        [sys.executable, __file__, "--read-only", str(path), "--report", str(report)]
    )
    if code:
        raise SystemExit(f"reading {path} failed (exit {code})")
    child = json.loads(report.read_text())
    return {
        "peak_rss_mib": round(child["peak_after_reading_mib"], 1),
        "peak_before_reading_mib": round(child["peak_before_reading_mib"], 1),
        "reading_adds_mib": round(child["peak_after_reading_mib"] - child["peak_before_reading_mib"], 1),
        "wait4_maxrss_mib": round(whole_child_mib, 1),
        "samples_read": child["samples"],
        "image_bytes_read": child["image_bytes"],
        "read_s": round(child["read_s"], 2),
    }


def peak_so_far_mib() -> float:
    """This process's peak RSS until now (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def read_only(shard: str, report: str) -> None:
    """The child of the RSS measurement: every sample of `shard` through the reader thread and
    its read-ahead into jobs, as the scoring pipeline takes them, each taken CONSUMER_DELAY_S after
    the last so that the read-ahead stays full."""
    from iqart.engine.sources.samples import SampleFormat
    from iqart.engine.sources.shard_reader import shard_jobs

    before, started = peak_so_far_mib(), time.perf_counter()
    count = payload = 0
    for job in shard_jobs([shard], SampleFormat(keep_fields=("url",))):
        if job.problem:
            raise SystemExit(f"{job.shard}: {job.problem}")
        count, payload = count + 1, payload + len(job.path.data)
        time.sleep(CONSUMER_DELAY_S)
    figures = {"read_s": time.perf_counter() - started, "peak_after_reading_mib": peak_so_far_mib()}
    figures.update(peak_before_reading_mib=before, samples=count, image_bytes=payload)
    Path(report).write_text(json.dumps(figures))


def machine() -> dict:
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "avx_flags": sorted(f for f in flags if f.startswith("avx")),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


PARTS = ("throughput", "decode", "rss")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--big-mb", type=float, default=1024)
    parser.add_argument("--small-mb", type=float, default=10)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which to run (default {','.join(PARTS)})")
    parser.add_argument("--json", metavar="FILE", help="write the figures here")
    parser.add_argument("--read-only", metavar="SHARD", help=argparse.SUPPRESS)
    parser.add_argument("--report", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_only:
        return read_only(args.read_only, args.report)
    parts = [part for part in args.parts.split(",") if part]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")

    import onnxruntime

    record: dict = {"machine": machine(), "onnxruntime": onnxruntime.__version__}
    print(json.dumps(record["machine"]))
    with tempfile.TemporaryDirectory(prefix="iqart-bench-shards-") as tmp:
        folder = Path(tmp)
        files, shards = write_files_and_shards(folder, img2dataset_images(args.images))
        size = f"{len(files)} images 256x256 ({sum(p.stat().st_size for p in files) / len(files) / 1e3:.0f} KB)"
        if "throughput" in parts:
            run_measured([sys.executable, "-c", f"from iqart import Scorer; Scorer({MODEL!r}, {BACKEND!r})"])
            t = record["throughput"] = throughput(files, shards, args.rounds)  # the artifact is cached by now
            print(
                f"scoring {size}, {MODEL} on {BACKEND}: files {t['files_median']:.1f} images/s, shards "
                f"{t['shards_median']:.1f} images/s, shards/files {t['ratio_median']:.3f} (median of "
                f"{t['rounds']} interleaved rounds)",
                flush=True,
            )
        if "decode" in parts:
            d = record["read_and_decode"] = read_and_decode(files, shards, args.rounds)
            print(
                f"read + decode only, {size}, one thread: files {d['files_median']:.1f} images/s, shards "
                f"{d['shards_median']:.1f} images/s, shards/files {d['ratio_median']:.3f}",
                flush=True,
            )
        if "rss" in parts:
            rss = record["peak_rss"] = {}
            for label, megabytes in (("small", args.small_mb), ("big", args.big_mb)):
                path = folder / f"{label}.tar"
                rss[label] = write_big_shard(path, megabytes)
                rss[label].update(read_peak_rss(path))
                path.unlink()
                r = rss[label]
                print(
                    f"{label} shard: {r['bytes'] / 1e6:.0f} MB, {r['samples']} samples: peak RSS {r['peak_rss_mib']} "
                    f"MiB ({r['peak_before_reading_mib']} MiB before reading, +{r['reading_adds_mib']} MiB), read "
                    f"in {r['read_s']} s",
                    flush=True,
                )
    record["machine"]["load_average_at_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
