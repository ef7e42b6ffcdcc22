"""One run's output file: checked before any work, locked, journaled, resumable, final at the end.

    output = ResultOutput(out, "qualiclip", weights_sha256, task="nr", resume=True)
    todo = [job for job in jobs if not output.is_done(job.key)]
    with output:                      # journal synced and lock released however the block ends
        for row in rows: output.write(row)
        output.finish()               # the final CSV/JSONL/Parquet, atomically; journal removed

Why this shape:
- The output is checked (a directory, a missing or read-only folder) and locked before any
  image is scored, so a mistake costs nothing and two runs can never interleave one file.
- Rows go to the journal (iqart.engine.results.journal) as they come; the final file is
  written from it in one atomic rename, then the journal is removed. A run that stops early
  (a signal) writes the final file too; one that is killed leaves the journal, which
  `--resume` reads: nothing it wrote is lost and nothing is scored twice.
- Every row records the model and the sha256 of its weights, and `--resume` refuses rows of
  another model or other weights: scores of two models are not comparable.
- Rows are matched to files by resolved path (symlinks and `..` followed), so the same folder
  reached another way is recognised; the path column keeps the spelling the run used.
- Rows of shard samples are matched by (shard, key) as written. A row about a whole shard (it
  could not be read, or broke part-way) has no key; once that shard is read to its end
  (a `shard_done` record) such a row is dropped, so a shard that failed and then succeeded on
  --resume leaves no stale error.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
from pathlib import Path

from iqart.engine.pipeline.jobs import ScoreRow
from iqart.engine.results.formats import is_parquet, open_result_writer, read_result_file
from iqart.engine.results.journal import Journal, fsync_dir, journal_path

PROVENANCE = ("model", "weights_sha256")
Key = tuple[str, "str | None"]
SHARD = "\0shard"  # first element of a shard row's identity: no file path starts with NUL


class OutputError(ValueError):
    """An output that cannot be written or resumed; the message names it and says why."""


def result_columns(
    task: str, shards: bool = False, keep_fields: tuple[str, ...] = (), attributes: tuple[str, ...] = ()
) -> list[str]:
    """The columns of a result file: files' rows name path (and reference); shard samples' rows
    name shard and key (a full-reference sample holds its reference) and the kept fields; then
    the attributes asked for (--explain), then the provenance."""
    if shards:
        return ["shard", "key", "score", "error", *keep_fields, *attributes, *PROVENANCE]
    where = ["path", "reference"] if task == "fr" else ["path"]
    return [*where, "score", "error", *attributes, *PROVENANCE]


def row_identity(row: dict) -> Key | tuple[str, str, str | None]:
    """What makes two rows about the same input: (path, reference) of a file, or the shard and key."""
    if "shard" in row and "path" not in row:
        return SHARD, row["shard"], row.get("key")
    return row["path"], row.get("reference")


def check_output_path(out: str | os.PathLike) -> Path:
    """`out` as a writable file path, or OutputError saying why not, before any work is done."""
    out = Path(out)
    folder = out.parent
    if out.is_dir():
        raise OutputError(f"--out {out} is a directory; name a file (.csv, .jsonl or .parquet)")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"--out {out}: the folder {folder} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: the folder {folder} is not writable")
    if out.exists() and not out.is_file():
        raise OutputError(f"--out {out} exists and is not a regular file")
    if is_parquet(out):
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise OutputError(f"--out {out}: Parquet output needs pyarrow (pip install 'iqart[ray]')") from None
    return out


@functools.lru_cache(maxsize=65536)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def resolved(path: str | None) -> str | None:
    """The file a path names, symlinks and `..` resolved: how rows are matched to files.
    Folders are resolved once each (cached), so matching a million rows costs one lstat each."""
    if path is None:
        return None
    absolute = os.path.abspath(path)
    folder, name = os.path.split(absolute)
    real = os.path.join(_real_folder(folder), name)
    return os.path.realpath(real) if os.path.islink(real) else real


def resolved_key(key: Key) -> Key:
    if key[0] == SHARD:
        return key  # shard URLs and keys are matched as written
    return resolved(key[0]), resolved(key[1])


def merge_rows(rows: list[dict]) -> list[dict]:
    """One row per file from rows in the order they were written (final file, then journal):
    for the same path as spelled, a later row replaces an earlier one unless that had a score;
    for the same file spelled differently, rows with a score win over error rows, and of error
    rows only the last is kept. Distinct paths to one file that both have a score are kept."""
    return _merge(rows)[0]


def _merge(rows: list[dict]) -> tuple[list[dict], set[Key]]:
    """merge_rows' rows, and the resolved keys of the files that have a score (each path is
    resolved once: it costs a system call). `shard_done` records drop the earlier rows about
    their whole shard."""
    latest: dict[Key, dict] = {}
    for row in rows:
        if "shard_done" in row:
            latest.pop((SHARD, row["shard_done"], None), None)
            continue
        key = row_identity(row)
        earlier = latest.get(key)
        if earlier is None or earlier["error"] is not None:
            latest[key] = row
    files = {key: resolved_key(key) for key in latest}
    scored_files, last_error = set(), {}
    for key, row in latest.items():
        if row["error"] is None:
            scored_files.add(files[key])
        else:
            last_error[files[key]] = key
    merged = [
        row
        for key, row in latest.items()
        if row["error"] is None or (files[key] not in scored_files and last_error[files[key]] == key)
    ]
    return merged, scored_files


def check_provenance(record: dict, provenance: dict, where: str, elsewhere: str) -> None:
    """OutputError unless `record` (a row or a journal header, found at `where`) was made by the
    model and weights of `provenance`: scores of two models are not comparable. `elsewhere` says
    where else to write ("score into another --out")."""
    if not all(record.get(field) for field in PROVENANCE):
        raise OutputError(
            f"--resume: {where} does not record which model and weights made it (written by an "
            f"older iqart?); {elsewhere}, or drop --resume to replace it"
        )
    if any(record[field] != provenance[field] for field in PROVENANCE):
        raise OutputError(
            f"--resume: {where} holds scores of {record['model']} "
            f"(weights sha256 {record['weights_sha256'][:12]}), "
            f"not of {provenance['model']} (weights sha256 {provenance['weights_sha256'][:12]}); "
            f"scores of different models or weights do not mix: {elsewhere}, or drop --resume"
        )


class ResultOutput:
    """The output `out` of one run of `model` with weights `weights_sha256` (see the module
    docstring). `resume=False` starts afresh (an earlier file is replaced at the end); True
    keeps the rows of the earlier file and of a journal left by a killed run."""

    def __init__(
        self,
        out: str | os.PathLike,
        model: str,
        weights_sha256: str,
        task: str,
        resume: bool = False,
        shards: bool = False,
        keep_fields: tuple[str, ...] = (),
        attributes: tuple[str, ...] = (),
    ):
        self.path = check_output_path(out)
        self.provenance = {"model": model, "weights_sha256": weights_sha256}
        self.columns = result_columns(task, shards, keep_fields, attributes)
        self.numeric = ("score", *attributes)
        self.done_shards: set[str] = set()  # shards read to their end, by the journal's shard_done records
        self.journal = Journal.open_locked(journal_path(self.path), str(self.path))
        self.base: list[dict] = []
        self.kept: list[dict] = []
        self.done: set[Key] = set()  # resolved (path, reference) of the files with a score
        self.written = 0
        self._journal_rows = 0  # rows of a killed run found in the journal
        self._finished = False
        try:
            self._remove_stale_temporaries()
            if resume:
                self._resume()
            else:
                self._start_afresh()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------------

    def _start_afresh(self) -> None:
        _, rows, _ = self.journal.read()
        if rows:
            print(
                f"iqart: note: {self.path}: dropping {len(rows)} rows of an interrupted run (--resume keeps them)",
                file=sys.stderr,
            )
        self.journal.start({**self.provenance, "base": "none"})

    def _resume(self) -> None:
        header, rows, damaged = self.journal.read()
        if damaged:
            print(
                f"iqart: note: {self.journal.path}: {damaged} damaged line(s) ignored (cut short by a crash)",
                file=sys.stderr,
            )
        self._journal_rows = sum("shard_done" not in row for row in rows)
        if header is None:
            rows = []
            self.journal.start({**self.provenance, "base": "output"})
        else:
            self._check_provenance(header, f"the interrupted run in {self.journal.path.name}")
        if (header or {}).get("base", "output") == "output" and self.path.is_file():
            try:
                self.base = read_result_file(self.path)
            except ValueError as exc:
                raise OutputError(f"--resume: {exc}") from None
            for row in self.base:
                self._check_provenance(row, str(self.path))
        self.done_shards = {row["shard_done"] for row in rows if "shard_done" in row}
        self.kept, self.done = _merge(self.base + rows)

    def _check_provenance(self, record: dict, where: str) -> None:
        check_provenance(record, self.provenance, where, "score into another --out")

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a final write that was killed half-way (we hold the lock: they
        cannot belong to a live run)."""
        pattern = os.path.join(glob.escape(str(self.path.parent)), glob.escape(f".{self.path.name}.") + "*.tmp")
        for stale in glob.glob(pattern):
            os.unlink(stale)

    # -- running ---------------------------------------------------------------------------------

    def is_done(self, key: Key) -> bool:
        """Whether the file of this (path, reference) already has a score in the output (a fresh
        run has none: no path is resolved for it)."""
        return bool(self.done) and resolved_key(key) in self.done

    def is_sample_done(self, shard: str, key: str) -> bool:
        """Whether this shard's sample already has a score in the output."""
        return bool(self.done) and (SHARD, shard, key) in self.done

    @property
    def kept_scored(self) -> int:
        return sum(row["error"] is None for row in self.kept)

    def write(self, row: ScoreRow | dict) -> None:
        row = row.as_dict() if isinstance(row, ScoreRow) else row
        if "shard" in row and "path" not in row:
            fields = [c for c in self.columns if c not in PROVENANCE]
        else:
            fields = ["path", "reference", *(c for c in self.columns if c not in (*PROVENANCE, "path", "reference"))]
        self.journal.append({k: row.get(k) for k in fields})
        self.written += 1

    def shard_done(self, shard: str) -> None:
        """Record that every sample of `shard` has its row (written after the last of them)."""
        self.journal.append({"shard_done": shard})
        self.done_shards.add(shard)

    def finish(self) -> None:
        """Write the final file (earlier rows kept, this run's rows after them) atomically,
        then remove the journal."""
        self.journal.sync()
        _, rows, _ = self.journal.read()
        merged = merge_rows(self.base + rows)
        if rows or merged != self.base or not self.path.is_file():  # else the file already says it all
            with open_result_writer(self.path, self.columns, self.numeric) as writer:
                for row in merged:
                    writer.write({**row, **self.provenance})
            fsync_dir(self.path.parent)
        self.journal.remove()
        self._finished = True

    def close(self) -> None:
        """Sync the journal and release the lock (after finish(): already done). A journal
        that holds no rows (the run failed before scoring anything) is removed."""
        if not self._finished and not self.written and not self._journal_rows:
            self.journal.remove()  # still ours: we hold its lock
        self.journal.close()

    def __enter__(self) -> ResultOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
