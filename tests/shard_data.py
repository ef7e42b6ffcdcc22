"""Datasets as our users keep them, written by the tools that write them: WebDataset tar shards
(by the webdataset library's own writers, and by Python's tarfile), and Parquet tables of encoded
images laid out as img2dataset's `parquet` output is (key, jpg, url, caption, status,
error_message, width, height, sha256). Shared by the local and the object-storage shard tests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from iqart.engine.cli.main import main
from iqart.engine.results.formats import read_result_file

MODEL = "qualiclip-tiny"
FR_MODEL = "bpclip-fr-tiny"


@dataclass
class Photo:
    """One sample's image: its key (img2dataset's zero-padded numbering), extension and bytes."""

    key: str
    ext: str
    data: bytes
    width: int
    height: int

    @property
    def meta(self) -> dict:
        """img2dataset's per-sample metadata (the .json member, or the Parquet row's columns)."""
        return {
            "url": f"https://images.example.com/{self.key}.{self.ext}",
            "caption": f"a photo numbered {int(self.key)}",
            "key": self.key,
            "status": "success",
            "error_message": None,
            "width": self.width,
            "height": self.height,
            "sha256": hashlib.sha256(self.data).hexdigest(),
        }


def encode(pixels: np.ndarray, ext: str, rng: np.random.Generator, exif_orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if ext == "png":
        image.save(buffer, "PNG")
    else:
        exif = Image.Exif()
        if exif_orientation is not None:
            exif[0x0112] = exif_orientation
        image.save(buffer, "JPEG", quality=int(rng.integers(60, 96)), exif=exif.tobytes())
    return buffer.getvalue()


def photos(rng: np.random.Generator, count: int, first: int = 0, png_every: int = 3) -> list[Photo]:
    """`count` small photos of random sizes and content (every `png_every`-th a PNG, one JPEG
    turned by its EXIF orientation, so decoding must read the header as for a file)."""
    made = []
    for index in range(first, first + count):
        height, width = (int(side) for side in rng.integers(32, 57, size=2))
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        smooth = np.kron(coarse, np.ones((16, 16, 1), dtype=np.uint8))[:height, :width]
        noise = rng.integers(-20, 21, (height, width, 3))
        pixels = np.clip(smooth.astype(int) + noise, 0, 255).astype(np.uint8)
        ext = "png" if png_every and index % png_every == png_every - 1 else "jpg"
        orientation = 6 if index == first + 1 and ext == "jpg" else None
        made.append(Photo(f"{index:09d}", ext, encode(pixels, ext, rng, orientation), width, height))
    return made


def write_with_webdataset(path: Path, items: list[Photo]) -> Path:
    """A shard written by webdataset's TarWriter: KEY.jpg (or .png), KEY.json, KEY.txt."""
    import webdataset as wds

    with wds.TarWriter(str(path)) as writer:
        for photo in items:
            writer.write(
                {"__key__": photo.key, photo.ext: photo.data, "json": photo.meta, "txt": photo.meta["caption"]}
            )
    return path


def write_with_tarfile(path: Path, samples: list[list[tuple[str, bytes]]]) -> Path:
    """A shard written member by member with Python's tarfile: each sample a list of
    (member name, bytes), in order."""
    with tarfile.open(path, "w") as tar:
        for members in samples:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


def photo_members(photo: Photo) -> list[tuple[str, bytes]]:
    return [
        (f"{photo.key}.{photo.ext}", photo.data),
        (f"{photo.key}.json", json.dumps(photo.meta).encode()),
        (f"{photo.key}.txt", photo.meta["caption"].encode()),
    ]


def write_img2dataset_parquet(path: Path, items: list[Photo], row_group_size: int | None = None) -> Path:
    """A Parquet table as img2dataset's parquet output writes it: the encoded image in `jpg`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: [photo.meta[name] for photo in items] for name in items[0].meta}
    columns["jpg"] = [photo.data for photo in items]
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("jpg", pa.binary()),
            ("url", pa.string()),
            ("caption", pa.string()),
            ("status", pa.string()),
            ("error_message", pa.string()),
            ("width", pa.int64()),
            ("height", pa.int64()),
            ("sha256", pa.string()),
        ]
    )
    pq.write_table(pa.table(columns, schema=schema), path, row_group_size=row_group_size)
    return path


def score(*args: str, weights: Path, model: str = MODEL) -> int:
    """`iqart score ARGS` in this process, batch size 1 (scores then depend on nothing but the
    image: no batch composition that reading order could change)."""
    return main(["score", *args, "--model", model, "-w", str(weights), "-b", "1"])


def rows_by_key(out) -> dict[str, dict]:
    return {row["key"]: row for row in read_result_file(out)}


def tar_member_spans(path: Path) -> list[tuple[str, int, int]]:
    """(member name, header offset, end of its data) of each member of an intact tar."""
    with tarfile.open(path) as tar:
        return [(info.name, info.offset, info.offset_data + info.size) for info in tar.getmembers()]
