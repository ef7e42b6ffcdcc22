"""The journal: every row on disk the moment it is produced, in a hidden file beside the output.

Scoring millions of images on preemptible machines means the process can die at any moment
(SIGKILL, the OOM killer, power loss). So rows are not held back for the final file: each is
appended to `.NAME.journal` beside the output as one JSON line with one write() (a killed
process loses nothing it wrote: the data is in the kernel), and the file is fsynced at least
every SYNC_INTERVAL_S seconds (power loss costs at most those seconds) and whenever the run
stops. The final file is written from the journal at the end (iqart.engine.results.output).

The journal is also the output's lock: it is opened and flock()ed before anything else, so a
second process aiming at the same output is refused at once, and the kernel releases the lock
when the holder dies however it dies. Its first line records what produced the rows (model,
weights sha256), so a resumed run can refuse to mix. A line cut short by a crash is ignored on
reading and cut off before the next append.

Records after the header: a file's row (it has `path`), a shard sample's row (`shard` and `key`;
`key` is null for a row about the whole shard), and a shard's completion (`shard_done`: the
shard's URL, written after its last row). The header names the format: iqart-journal-2 holds all
three; iqart-journal-1 (file rows only) is read the same way.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

SYNC_INTERVAL_S = 2.0  # the most work (in seconds) that power loss can cost
JOURNAL_FORMAT = "iqart-journal-2"
READABLE_FORMATS = ("iqart-journal-1", JOURNAL_FORMAT)
RECORD_FIELDS = ("path", "shard", "shard_done")  # a record has at least one of these


class OutputInUseError(ValueError):
    """Another live process holds this output's journal."""


def journal_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.journal")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in `folder` survive power loss."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An append-only, locked file of JSON lines: a header, then one line per row."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd
        self._dirty = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    @classmethod
    def open_locked(cls, path: str | os.PathLike, owner: str) -> Journal:
        """Open (creating) and lock the journal at `path`; OutputInUseError naming `owner` (the
        output) when another process holds it. Retries when the file it locked was removed by
        a finishing holder meanwhile, so two processes can never both believe they own it."""
        path = Path(path)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputInUseError(
                    f"{owner} is being written by another iqart process (it holds {path.name}); "
                    "wait for it, or choose another --out"
                ) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                return cls(path, fd)
            os.close(fd)

    def read(self) -> tuple[dict | None, list[dict], int]:
        """(header or None, records in order, damaged lines). Cuts a torn last line off the file, so the
        next append starts on a line of its own."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        with os.fdopen(os.dup(self._fd), "rb") as f:
            data = f.read()
        header, rows, damaged, good_end, offset = None, [], 0, 0, 0
        for line in data.splitlines(keepends=True):
            offset += len(line)
            if not line.endswith(b"\n"):
                damaged += bool(line.strip(b"\0 \t\r"))
                break
            try:
                record = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                damaged += bool(line.strip(b"\0 \t\r\n"))  # power loss can leave zeros
                continue
            good_end = offset
            if isinstance(record, dict) and record.get("format") in READABLE_FORMATS:
                header = header or record
            elif isinstance(record, dict) and any(field in record for field in RECORD_FIELDS):
                rows.append(record)
            else:
                damaged += 1
        if good_end < len(data):
            os.ftruncate(self._fd, good_end)
        return header, rows, damaged

    def start(self, header: dict) -> None:
        """Empty the journal and write its header: a fresh run."""
        os.ftruncate(self._fd, 0)
        self._write({"format": JOURNAL_FORMAT, **header})
        self.sync()
        fsync_dir(self.path.parent)

    def append(self, row: dict) -> None:
        self._write(row)
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_periodically, name="iqart-journal-sync", daemon=True)
            self._syncer.start()

    def _write(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode("ascii")  # ASCII: \\udcxx keeps non-UTF-8 names exact
        with self._lock:
            os.lseek(self._fd, 0, os.SEEK_END)
            written = os.write(self._fd, line)
            while written < len(line):  # a regular file takes it whole; this only guards the rule
                written += os.write(self._fd, line[written:])
            self._dirty = True

    def _sync_periodically(self) -> None:
        while not self._stop.wait(SYNC_INTERVAL_S):
            self.sync()

    def sync(self) -> None:
        """fsync outside the lock, so rows keep being appended while the disk catches up."""
        with self._lock:
            if self._fd < 0 or not self._dirty:
                return
            self._dirty = False
            fd = self._fd
        os.fsync(fd)

    def remove(self) -> None:
        """Delete the journal (its rows are in the final file) and release the lock."""
        os.unlink(self.path)
        self.close()

    def close(self) -> None:
        """Sync and release the lock; the file stays for --resume."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()  # before the descriptor goes: the syncer may be in fsync
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)  # closing the last descriptor releases the flock
                self._fd = -1
