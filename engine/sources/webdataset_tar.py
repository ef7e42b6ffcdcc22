"""WebDataset tar shards, streamed front to back: members grouped into samples by key.

The format as the webdataset library defines it: a member's key is its path up to the first dot
of its last component (`a/b.c.jpg`: key `a/b`, extension `c.jpg`); a sample is a run of
consecutive members with the same key; members whose names start with `__` are metadata and
anything that is not a regular file is skipped. The tar is read as a stream (`r|*`: no seeking,
gzip allowed), one member at a time, and the reader forgets each header once read, so a shard of
any size costs the memory of one sample.

A shard cut short or corrupt part-way: every complete sample before the damage is yielded, then
ShardDamaged says where (the byte offset of the member being read) and why.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from iqart.engine.sources.samples import Sample


class ShardDamaged(Exception):
    """The shard could not be read past `offset` bytes; `samples` samples came before it."""

    def __init__(self, offset: int, reason: str, samples: int):
        super().__init__(f"damaged at byte {offset} after {samples} samples: {reason}")
        self.offset, self.reason, self.samples = offset, reason, samples


def split_member_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name by WebDataset's rule: `a/b.c.jpg` -> (`a/b`, `c.jpg`)."""
    folder, base = posixpath.split(name)
    stem, dot, extension = base.partition(".")
    return (posixpath.join(folder, stem) if folder else stem), extension


def iter_tar_records(stream: BinaryIO) -> Iterator[tuple[str, list[tuple[tarfile.TarInfo, bytes]]]]:
    """(key, [(header, data), ...]) for each sample of the tar `stream`, in shard order: every
    regular, non-metadata member with its header as read, so `iqart filter` can copy a sample
    byte for byte and scoring groups members by the very same rule."""
    current: tuple[str, list[tuple[tarfile.TarInfo, bytes]]] | None = None
    count, offset = 0, 0
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                offset = info.offset
                name = info.name
                if not info.isreg() or posixpath.basename(name).startswith("__"):
                    tar.members = []
                    continue
                key, _ = split_member_name(name)
                reader = tar.extractfile(info)
                data = reader.read() if reader is not None else b""
                if len(data) != info.size:
                    raise tarfile.ReadError(f"member {name} is cut short ({len(data)} of {info.size} bytes)")
                tar.members = []  # a long shard must not pile up headers
                if current is not None and key != current[0]:
                    yield current
                    count += 1
                    current = None
                if current is None:
                    current = (key, [])
                current[1].append((info, data))
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ShardDamaged(offset, f"{type(exc).__name__}: {exc}", count) from None
    if current is not None:
        yield current


def iter_tar_samples(stream: BinaryIO, shard: str) -> Iterator[Sample]:
    """The samples of the tar `stream` (named `shard` in what they yield), in shard order; of two
    members with the same extension in one sample, the first."""
    for key, members in iter_tar_records(stream):
        sample = Sample(shard, key)
        for info, data in members:
            sample.members.setdefault(split_member_name(info.name)[1], data)
        yield sample
