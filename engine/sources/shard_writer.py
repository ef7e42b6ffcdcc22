"""Writing WebDataset tar shards: samples copied member by member, at most N a shard, named
00000.tar, 00001.tar, ... in a folder on a local disk or behind any fsspec URL.

A member is written with the header it was read with (name, mode, times, owner, PAX records)
and its data unchanged: nothing is decoded or re-encoded, so a copied sample is the source's
bytes. A shard appears only complete: on a local disk it is written to a temporary file beside
its name, fsynced and renamed; in object storage it is written locally first and then put as one
object (a multipart upload cut short would otherwise leave a partial object, or none, depending
on the filesystem). A run stopped part-way leaves the complete shards and no partial one.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable

from iqart.engine.results.journal import fsync_dir
from iqart.train.storage import honour_umask

SHARD_NAME = "{:05d}.tar"  # img2dataset's and webdataset's usual names


class OutputFolder:
    """A folder to put finished files into, local or an fsspec URL: `new_file(name)` gives a local
    path to write, `commit(name, path)` makes it `FOLDER/name` whole, `discard(path)` drops it."""

    def __init__(self, location: str):
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.fs, root = fsspec.core.url_to_fs(location)
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            self.root = os.path.abspath(root)
            os.makedirs(self.root, exist_ok=True)
            self._staging = None
        else:
            self.root = location.rstrip("/")
            self._fs_root = root.rstrip("/")
            self._staging = tempfile.mkdtemp(prefix="iqart-shards-out-")

    def url(self, name: str) -> str:
        """How rows and indexes name the file: an absolute local path, or the URL."""
        return os.path.join(self.root, name) if self.local else f"{self.root}/{name}"

    def existing(self) -> list[str]:
        """The names of the files already in the folder (none if it does not exist yet)."""
        if self.local:
            return sorted(os.listdir(self.root))
        if not self.fs.exists(self._fs_root):
            return []
        return sorted(os.path.basename(p.rstrip("/")) for p in self.fs.ls(self._fs_root, detail=False))

    def new_file(self, name: str) -> str:
        if self.local:
            fd, path = tempfile.mkstemp(dir=self.root, prefix=f".{name}.", suffix=".tmp")
            honour_umask(fd)
            os.close(fd)
            return path
        return os.path.join(self._staging, name)

    def commit(self, name: str, path: str) -> None:
        if self.local:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(path, os.path.join(self.root, name))
            fsync_dir(self.root)  # the rename itself survives a power loss
        else:
            self.fs.put_file(path, f"{self._fs_root}/{name}")
            os.unlink(path)

    def discard(self, path: str) -> None:
        if os.path.exists(path):
            os.unlink(path)

    def close(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)


class ShardWriter:
    """Samples into tar shards of at most `samples_per_shard` samples each. `add(key, members,
    info)` copies one sample; when a shard is complete (full, or at `finish()`),
    `on_shard(url, [(key, info), ...])` is told what it holds. Used as a context manager, an
    exception discards the shard in progress and keeps those already complete."""

    def __init__(
        self,
        folder: OutputFolder,
        samples_per_shard: int = 10_000,
        on_shard: Callable[[str, list[tuple[str, object]]], None] | None = None,
    ):
        if samples_per_shard < 1:
            raise ValueError(f"samples per shard must be at least 1, not {samples_per_shard}")
        self.folder, self.samples_per_shard, self.on_shard = folder, samples_per_shard, on_shard
        self.shards: list[str] = []  # URLs of the complete shards, in order
        self._tar: tarfile.TarFile | None = None
        self._path: str | None = None
        self._held: list[tuple[str, object]] = []

    def add(self, key: str, members: list[tuple[tarfile.TarInfo, bytes]], info: object = None) -> str:
        """Copy one sample (its members as read, headers and data); the URL of its shard."""
        if self._tar is not None and len(self._held) >= self.samples_per_shard:
            self._complete()
        if self._tar is None:
            self._path = self.folder.new_file(SHARD_NAME.format(len(self.shards)))
            self._tar = tarfile.TarFile(self._path, "w", format=tarfile.PAX_FORMAT)  # open across add() calls
        for header, data in members:
            self._tar.addfile(header, io.BytesIO(data))
        self._held.append((key, info))
        return self.folder.url(SHARD_NAME.format(len(self.shards)))

    def _complete(self) -> None:
        name = SHARD_NAME.format(len(self.shards))
        self._tar.close()
        self._tar = None
        self.folder.commit(name, self._path)
        url = self.folder.url(name)
        self.shards.append(url)
        held, self._held = self._held, []
        if self.on_shard is not None:
            self.on_shard(url, held)

    def finish(self) -> None:
        """Complete the shard in progress, if it holds any sample."""
        if self._tar is not None:
            self._complete()

    def discard(self) -> None:
        """Drop the shard in progress (a stopped run): the complete ones stay."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            self.folder.discard(self._path)
            self._held = []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.discard()
