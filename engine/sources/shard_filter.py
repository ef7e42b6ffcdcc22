"""`iqart filter`'s work: which samples to keep, judged from `iqart score` rows, and copying them
out of their tar shards into new shards, with an index of what went where.

The rows say which sample scored what by (shard, key); the shards are read again, front to back,
and a sample whose key is kept is copied whole (every member, byte for byte). Only shards with a
kept sample are read. A row with an error is never kept; a key that has several rows in one
shard (two samples with one key) is judged by its worst row, so a sample is never kept on the
strength of another one's score.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from iqart.engine.results.formats import read_result_file
from iqart.engine.results.shard_outputs import OUTPUT_FORMATS
from iqart.engine.sources.shard_locations import open_shard, redact
from iqart.engine.sources.webdataset_tar import ShardDamaged, iter_tar_records
from iqart.train.models.zoo import get_card

INDEX_NAME = "shard_index.parquet"
INDEX_COLUMNS = ("shard", "key", "source_shard", "score", "model", "weights_sha256")


class FilterInputError(ValueError):
    """Scores that `iqart filter` cannot work from (not shard rows, several models, no such file)."""


@dataclass
class Scores:
    """Every scored sample by shard and key (None: the key has an error row, never kept), and
    the model whose scores they are."""

    model: str
    weights_sha256: str
    higher_better: bool
    by_shard: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def scored(self) -> int:
        return sum(score is not None for keys in self.by_shard.values() for score in keys.values())

    def add(self, shard: str, key: str, score: float | None) -> None:
        keys = self.by_shard.setdefault(shard, {})
        if score is not None and score != score:  # NaN: no quality to rank
            score = None
        if key in keys:
            earlier = keys[key]
            worse = min if self.higher_better else max
            score = None if earlier is None or score is None else worse(earlier, score)
        keys[key] = score


def result_files(location: str) -> list[str]:
    """The result files `location` names: itself if it is one, else the result files in the
    folder (what `iqart score --out-dir` wrote: hidden journals and temporary files left out),
    sorted; local or an fsspec URL."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    if not fs.exists(path):
        raise FilterInputError(f"--scores {location}: no such file or folder")
    if not fs.isdir(path):
        return [location]
    found = sorted(
        entry
        for entry in fs.ls(path, detail=False)
        if not os.path.basename(entry).startswith(".") and entry.rsplit(".", 1)[-1].lower() in OUTPUT_FORMATS
    )
    if not found:
        raise FilterInputError(f"--scores {location}: the folder holds no result file (.{', .'.join(OUTPUT_FORMATS)})")
    local = not ("://" in location and not location.startswith("file://"))
    return [entry if local else fs.unstrip_protocol(entry) for entry in found]


def _local_rows(location: str) -> Iterator[dict]:
    """The rows of one result file, fetched first if it is remote."""
    if "://" not in location or location.startswith("file://"):
        yield from read_result_file(location.removeprefix("file://"))
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    folder = tempfile.mkdtemp(prefix="iqart-scores-")
    try:
        copy = os.path.join(folder, os.path.basename(path))
        fs.get_file(path, copy)
        yield from read_result_file(copy)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_scores(locations: list[str]) -> Scores:
    """Every row of the result files `locations` name, as Scores. FilterInputError for rows about
    files rather than shard samples, for scores of more than one model or weights, for an
    unreadable file."""
    scores: Scores | None = None
    for location in locations:
        try:
            rows = list(_local_rows(location))
        except (OSError, ValueError) as exc:
            raise FilterInputError(f"--scores: {exc}") from None
        if rows and ("shard" not in rows[0] or "key" not in rows[0]):
            raise FilterInputError(
                f"--scores {location}: its rows name image files (a path column), not samples of shards "
                "(shard and key columns): `iqart filter` copies samples out of the tar shards `iqart score` read"
            )
        for row in rows:
            if scores is None:
                try:
                    card = get_card(row.get("model"))
                except ValueError as exc:
                    raise FilterInputError(f"--scores {location}: {exc}") from None
                scores = Scores(card.name, row.get("weights_sha256"), card.higher_better)
            if (row.get("model"), row.get("weights_sha256")) != (scores.model, scores.weights_sha256):
                raise FilterInputError(
                    f"--scores: {location} holds scores of {row.get('model')} (weights sha256 "
                    f"{str(row.get('weights_sha256'))[:12]}) beside scores of {scores.model} (weights sha256 "
                    f"{scores.weights_sha256[:12]}); scores of different models or weights do not rank together"
                )
            if row.get("key") is None:  # a row about a whole shard (damaged, unreadable): no sample
                continue
            scores.add(row["shard"], row["key"], None if row.get("error") else row.get("score"))
    if scores is None:
        raise FilterInputError(f"--scores {', '.join(locations)}: no rows")
    return scores


def choose(scores: Scores, min_score: float | None = None, top_fraction: float | None = None) -> dict[str, dict]:
    """The kept samples, {shard: {key: score}}: those at least as good as `min_score` (score >=
    min_score, or <= for a model whose lower scores are better), or the floor(top_fraction x N)
    best of the N scored samples (ties broken by the order of the rows)."""
    if (min_score is None) == (top_fraction is None):
        raise ValueError("choose by exactly one of min_score and top_fraction")
    ranked = [
        (shard, key, score)
        for shard, keys in scores.by_shard.items()
        for key, score in keys.items()
        if score is not None
    ]
    if min_score is not None:
        passes = (lambda s: s >= min_score) if scores.higher_better else (lambda s: s <= min_score)
        kept = [entry for entry in ranked if passes(entry[2])]
    else:
        count = math.floor(top_fraction * len(ranked) + 1e-9)  # 0.3 x 10 is 3, not 2.9999...
        order = sorted(range(len(ranked)), key=lambda i: -ranked[i][2] if scores.higher_better else ranked[i][2])
        kept = [ranked[i] for i in sorted(order[:count])]
    chosen: dict[str, dict] = {}
    for shard, key, score in kept:
        chosen.setdefault(shard, {})[key] = score
    return chosen


@dataclass
class CopyReport:
    """What copying found: samples copied, and per source shard what could not be."""

    copied: int = 0
    problems: list[str] = field(default_factory=list)


def copy_kept(chosen: dict[str, dict], sources: dict[str, str], writer, report: CopyReport) -> Iterator[int]:
    """Copy every chosen sample, shard by shard, into `writer` (a ShardWriter; each sample's info
    is (the shard read, its score)). `sources` maps a shard as the rows name it to where to read
    it. Yields how many samples each shard gave; `report` gathers what could not be copied: a
    shard damaged part-way gives the samples before the damage but the last of them (it may be
    missing members that came after it), and a chosen key the shard does not hold is reported,
    never invented."""
    for shard, keys in chosen.items():
        url = sources.get(shard, shard)
        found: set[str] = set()
        problem = None
        held = None  # the kept sample read last: copied once another begins or the shard ends cleanly
        try:
            with open_shard(url) as stream:
                for key, members in iter_tar_records(stream):
                    if held is not None:
                        writer.add(held[0], held[1], (url, keys[held[0]]))
                        found.add(held[0])
                    held = (key, members) if key in keys else None
            if held is not None:
                writer.add(held[0], held[1], (url, keys[held[0]]))
                found.add(held[0])
        except ShardDamaged as exc:
            # The sample read just before the damage may lack members that came after it: not copied.
            problem = f"damaged at byte {exc.offset} after {exc.samples} samples ({exc.reason})"
        except FileNotFoundError:
            problem = "no such file or object"
        except OSError as exc:
            problem = f"cannot read it ({type(exc).__name__}: {redact(str(exc))})"
        missing = len(keys) - len(found)
        if problem is not None:
            report.problems.append(f"{redact(url)}: {problem}; {missing} kept samples not copied")
        elif missing:
            example = next(key for key in keys if key not in found)
            report.problems.append(
                f"{redact(url)}: {missing} kept keys are not in the shard (e.g. {example!r}): has it changed "
                "since it was scored?"
            )
        report.copied += len(found)
        yield len(found)


class IndexWriter:
    """The Parquet index of the new shards, one row a copied sample (INDEX_COLUMNS), written as
    each shard completes so that it always describes exactly the shards there are."""

    def __init__(self, folder, model: str, weights_sha256: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.folder, self.model, self.weights_sha256 = folder, model, weights_sha256
        self.schema = pa.schema([(c, pa.float64() if c == "score" else pa.string()) for c in INDEX_COLUMNS])
        self.path = folder.new_file(INDEX_NAME)
        self._writer = pq.ParquetWriter(self.path, self.schema)
        self.rows = 0

    def shard_written(self, url: str, held: list[tuple[str, tuple[str, float]]]) -> None:
        import pyarrow as pa

        rows = [
            {
                "shard": url,
                "key": key,
                "source_shard": source,
                "score": score,
                "model": self.model,
                "weights_sha256": self.weights_sha256,
            }
            for key, (source, score) in held
        ]
        self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
        self.rows += len(rows)

    def commit(self) -> str:
        self._writer.close()
        self.folder.commit(INDEX_NAME, self.path)
        return self.folder.url(INDEX_NAME)

    def discard(self) -> None:
        self._writer.close()
        self.folder.discard(self.path)
