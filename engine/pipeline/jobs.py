"""What to score: image files, or samples of a shard, paired with their references for
full-reference models, and the rows that come back.

A file job names its path; a shard sample's job carries its encoded bytes (EncodedImage), the
shard's URL and the sample's key, and its rows name shard and key so that they join back to the
data. Nothing between them and the rows needs to know which it is.

Pairs come from a reference folder mirrored by relative path (`--ref DIR`) or from a CSV of
`distorted,reference` columns (`--pairs FILE`). A pair whose reference is missing is not
dropped here: it fails at decode time and becomes an error row like any other bad input.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from iqart.engine.pipeline.images import EncodedImage, source_name

PAIR_COLUMNS = ("distorted", "reference")


@dataclass(frozen=True)
class ScoreJob:
    """One image to score, with its reference for full-reference models: files, or a shard
    sample's members (then `shard` and `sample` say where it came from, and `fields` holds the
    metadata kept for its row). `problem`: why it cannot be scored, known before decoding (a
    sample without an image, a damaged shard); it becomes the job's error row, in order."""

    path: Path | EncodedImage
    reference: Path | EncodedImage | None = None
    shard: str | None = None
    sample: str | None = None
    fields: tuple[tuple[str, object], ...] = ()
    problem: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        """How result files identify a file job (as written in their path/reference columns)."""
        return source_name(self.path), None if self.reference is None else source_name(self.reference)


@dataclass
class ScoreRow:
    path: str | None
    score: float | None = None
    error: str | None = None
    reference: str | None = None
    shard: str | None = None
    key: str | None = None
    fields: dict = field(default_factory=dict)
    attributes: dict = field(default_factory=dict)  # by name, when the run explains its scores

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def where(self) -> str:
        """What a message names: the file, or the shard and the sample's key."""
        if self.shard is None:
            return self.path
        return self.shard if self.key is None else f"{self.shard} [{self.key}]"

    def as_dict(self) -> dict:
        if self.shard is not None:
            row = {"shard": self.shard, "key": self.key, "score": self.score, "error": self.error, **self.fields}
        else:
            row = {"path": self.path, "reference": self.reference, "score": self.score, "error": self.error}
        return {**row, **self.attributes}


def pair_with_references(files: Iterable[tuple[Path, Path]], ref_dir: str | os.PathLike) -> list[ScoreJob]:
    """Pair each (file, root) with the reference at the same path relative to `ref_dir`."""
    ref_dir = Path(ref_dir)
    return [ScoreJob(path, ref_dir / path.relative_to(root)) for path, root in files]


def read_pairs(csv_path: str | os.PathLike) -> list[ScoreJob]:
    """Jobs from a CSV with `distorted` and `reference` columns; relative paths are resolved
    against the CSV's folder, so a pair list travels with its images."""
    csv_path = Path(csv_path)
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        missing = [c for c in PAIR_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: needs columns {','.join(PAIR_COLUMNS)}; missing {', '.join(missing)}")
        jobs = []
        for line, row in enumerate(reader, start=2):
            distorted, reference = (row[c].strip() if row[c] else "" for c in PAIR_COLUMNS)
            if not distorted or not reference:
                raise ValueError(f"{csv_path}, line {line}: empty {'distorted' if not distorted else 'reference'} path")
            jobs.append(ScoreJob(base / distorted, base / reference))
    if not jobs:
        raise ValueError(f"{csv_path}: no pairs listed")
    return jobs
