"""Where a shard run keeps its rows: one result file for every shard, or one file per shard.

Per shard (`--out-dir DIR`, a folder or an fsspec URL): `DIR/STEM.parquet` (or .csv, .jsonl)
is written when its shard is complete: atomically on a local disk (ResultOutput: journal, then
one rename), as one object in object storage (written locally, then put whole). With --resume a
shard whose output exists, was written by the same model and weights and holds no row about a
damaged or unreadable shard is skipped without being read; an output of another model or weights
is refused before any work; a local shard left unfinished by a killed run resumes sample by
sample from its journal.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from iqart.engine.pipeline.jobs import ScoreRow
from iqart.engine.results.formats import read_result_file
from iqart.engine.results.journal import journal_path
from iqart.engine.results.output import OutputError, ResultOutput, check_provenance
from iqart.engine.sources.shard_locations import is_url, redact, shard_stem

OUTPUT_FORMATS = ("parquet", "csv", "jsonl")


class OneOutput:
    """Every shard's rows in one result file (ResultOutput); a shard read to its end is journaled
    as done, so a resumed run does not read it again."""

    def __init__(self, output: ResultOutput):
        self.output = output

    def is_shard_done(self, shard: str) -> bool:
        return redact(shard) in self.output.done_shards  # rows name shards without credentials

    def start_shard(self, shard: str) -> None:
        pass

    def is_sample_done(self, shard: str, key: str) -> bool:
        return self.output.is_sample_done(shard, key)

    def write(self, row: ScoreRow) -> None:
        self.output.write(row)

    def complete_shard(self, shard: str, clean: bool) -> None:
        if clean:
            self.output.shard_done(shard)


def _journal_header(path: Path) -> dict | None:
    """The first record of a journal a killed run left (what produced its rows), if any."""
    try:
        with open(path, "rb") as f:
            header = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


class PerShardOutputs:
    """One result file per shard in `out_dir`. Use as a context manager: outputs left open by
    an interrupted run are closed (their journals stay for --resume). Shards are known by their
    URLs without credentials (redact), as rows name them: is_shard_done takes a URL as given, the
    other methods the names the shard reader hands on (already without credentials)."""

    def __init__(
        self,
        out_dir: str,
        shards: Iterable[str],
        fmt: str,
        model: str,
        weights_sha256: str,
        task: str,
        keep_fields: tuple[str, ...] = (),
        resume: bool = False,
        attributes: tuple[str, ...] = (),
    ):
        if fmt not in OUTPUT_FORMATS:
            raise OutputError(f"--out-format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}")
        self.out_dir, self.fmt, self.task, self.keep_fields = out_dir.rstrip("/"), fmt, task, keep_fields
        self.model, self.weights_sha256, self.resume = model, weights_sha256, resume
        self.attributes = attributes
        self.remote = is_url(out_dir) and not out_dir.startswith("file://")
        if out_dir.startswith("file://"):  # a local folder: written as a path (os.makedirs took the URL as one)
            self.out_dir = self.out_dir.removeprefix("file://")
        self.shards = [redact(shard) for shard in shards]
        self.names = self._output_names(self.shards)
        self._staging = Path(tempfile.mkdtemp(prefix="iqart-shard-out-")) if self.remote else None
        if not self.remote:
            os.makedirs(self.out_dir, exist_ok=True)
        self.open: dict[str, ResultOutput] = {}
        self.done: set[str] = self._finished_shards() if resume else set()

    def _output_names(self, shards: list[str]) -> dict[str, str]:
        names: dict[str, str] = {}
        seen: dict[str, str] = {}
        for shard in shards:
            name = f"{shard_stem(shard)}.{self.fmt}"
            if name in seen:
                raise OutputError(
                    f"--out-dir: {seen[name]} and {shard} would both write {name}; score them into separate folders"
                )
            seen[name] = shard
            names[shard] = name
        return names

    def target(self, shard: str) -> str:
        return f"{self.out_dir}/{self.names[redact(shard)]}"

    def _local(self, shard: str) -> Path:
        return (self._staging / self.names[redact(shard)]) if self.remote else Path(self.target(shard))

    def _finished_shards(self) -> set[str]:
        """Shards whose output exists, by this model and weights, with no row about a damaged
        shard; OutputError for an output of another model or weights (scores must not mix)."""
        done = set()
        for shard in self.shards:
            if not self.remote:  # an unfinished shard's journal: refused now, not when the run reaches it
                header = _journal_header(journal_path(self.target(shard)))
                if header is not None:
                    self._check_provenance(header, str(journal_path(self.target(shard))))
            rows = self._existing_rows(shard)
            if rows is None:
                continue
            for row in rows:
                self._check_provenance(row, self.target(shard))
            if not any(row.get("key") is None and row.get("error") for row in rows):
                done.add(shard)
        return done

    def _check_provenance(self, record: dict, where: str) -> None:
        provenance = {"model": self.model, "weights_sha256": self.weights_sha256}
        check_provenance(record, provenance, where, "use another --out-dir")

    def _existing_rows(self, shard: str) -> list[dict] | None:
        try:
            if not self.remote:
                path = Path(self.target(shard))
                return read_result_file(path) if path.is_file() else None
            import fsspec

            fs, path = fsspec.core.url_to_fs(self.target(shard))
            if not fs.exists(path):
                return None
            copy = self._staging / f".existing.{self.names[shard]}"
            fs.get_file(path, str(copy))
            try:
                return read_result_file(copy)
            finally:
                copy.unlink(missing_ok=True)
        except ValueError as exc:
            raise OutputError(f"--resume: {exc}") from None

    # -- the ShardSink protocol ------------------------------------------------------------------

    def is_shard_done(self, shard: str) -> bool:
        return redact(shard) in self.done

    def start_shard(self, shard: str) -> None:
        shard = redact(shard)
        self.open[shard] = ResultOutput(
            self._local(shard),
            self.model,
            self.weights_sha256,
            self.task,
            resume=self.resume and not self.remote,
            shards=True,
            keep_fields=self.keep_fields,
            attributes=self.attributes,
        )

    def is_sample_done(self, shard: str, key: str) -> bool:
        return self.open[shard].is_sample_done(shard, key)

    def write(self, row: ScoreRow) -> None:
        self.open[row.shard].write(row)

    def complete_shard(self, shard: str, clean: bool) -> None:
        shard = redact(shard)
        output = self.open.pop(shard)
        try:
            if clean:
                output.shard_done(shard)
            output.finish()
        finally:
            output.close()
        if self.remote:
            import fsspec

            fs, path = fsspec.core.url_to_fs(self.target(shard))
            local = self._local(shard)
            fs.put_file(str(local), path)
            local.unlink()
        if clean:
            self.done.add(shard)

    # -- lifetime --------------------------------------------------------------------------------

    def __enter__(self) -> PerShardOutputs:
        return self

    def __exit__(self, *exc) -> None:
        for output in self.open.values():
            output.close()
        self.open.clear()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
