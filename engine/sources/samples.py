"""A shard's sample, and the job (or the reason there is none) it becomes.

A sample is what WebDataset calls one: the members of a tar shard that share a key, or one row
of a Parquet table. Which member is the image, which the reference, and which metadata fields
go into the row are the user's choice (`SampleFormat`); the defaults fit img2dataset's output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from iqart.engine.pipeline.images import EncodedImage
from iqart.engine.pipeline.jobs import ScoreJob

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp")
METADATA_EXTENSION = "json"  # img2dataset's per-sample metadata member


@dataclass
class Sample:
    """One sample: its members by extension (`jpg`, `ref.jpg`, `json`, ...) in shard order, and
    for Parquet rows the row's other columns."""

    shard: str
    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    columns: dict | None = None


@dataclass(frozen=True)
class SampleFormat:
    """Which member is the image (the first whose extension is listed), which the reference
    (full-reference models), and which metadata fields each row keeps."""

    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    reference_extension: str | None = None
    keep_fields: tuple[str, ...] = ()

    def __post_init__(self):
        # compared with each member's extension lower-cased (a Parquet column may be named `Image`)
        object.__setattr__(self, "image_extensions", tuple(ext.lower() for ext in self.image_extensions))


def sample_job(sample: Sample, fmt: SampleFormat) -> ScoreJob:
    """The sample as a job. One that cannot be scored (no image member, no reference, unreadable
    metadata) is a job with its `problem`, which becomes its error row in order."""
    fields, problem = _kept_fields(sample, fmt.keep_fields)
    image_ext = next((ext for ext in sample.members if ext.lower() in fmt.image_extensions), None)
    if image_ext is None:
        have = ", ".join(sample.members) or "none"
        problem = problem or f"no image member (looked for {', '.join(fmt.image_extensions)}; members: {have})"
    reference = None
    if fmt.reference_extension is not None:
        if fmt.reference_extension in sample.members:
            reference = _encoded(sample, fmt.reference_extension)
        else:
            problem = problem or f"no reference member .{fmt.reference_extension}"
    image = _encoded(sample, image_ext) if image_ext is not None else EncodedImage(sample.key, b"")
    return ScoreJob(image, reference, shard=sample.shard, sample=sample.key, fields=fields, problem=problem)


def shard_job(shard: str, problem: str) -> ScoreJob:
    """A shard that could not be read (or stopped part-way): one error row for it."""
    return ScoreJob(EncodedImage(shard, b""), shard=shard, problem=problem)


def _encoded(sample: Sample, ext: str) -> EncodedImage:
    return EncodedImage(f"{sample.key}.{ext}", sample.members[ext])


def _kept_fields(sample: Sample, names: tuple[str, ...]) -> tuple[tuple[tuple[str, object], ...], str | None]:
    if not names:
        return (), None
    if sample.columns is not None:
        source = sample.columns
    elif METADATA_EXTENSION in sample.members:
        try:
            source = json.loads(sample.members[METADATA_EXTENSION])
        except ValueError as exc:
            return tuple((name, None) for name in names), f"its .json member is not JSON ({exc})"
        if not isinstance(source, dict):
            return tuple((name, None) for name in names), "its .json member is not a JSON object"
    else:
        source = {}
    return tuple((name, _scalar(source.get(name))) for name in names), None


def _scalar(value: object) -> object:
    """A field as a result column holds it: text, a number, or None (nested values as JSON)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return json.dumps(value, default=str)
