"""WebDataset tar shards, streamed front to back: members grouped into samples by key.

The format as the webdataset library defines it: a member's key is its path up to the first dot
of its last component (`a/b.c.jpg`: key `a/b`, extension `c.jpg`); a sample is a run of
consecutive members with the same key; members whose names start with `__` are metadata and
anything that is not a regular file is skipped. The tar is read as a stream (`r|*`: no seeking,
gzip allowed), one member at a time, and the reader forgets each header once read, so a shard of
any size costs the memory of one sample.

A shard cut short or corrupt part-way: every sample before the damage is yielded (not one cut
inside a member of its own), then ShardDamaged says where (the byte offset of the member or
header being read) and why. TarFile's own iteration ends quietly at a bad header after the
first, as if the archive were complete, so a shard cut inside a header (or at a member's end) or
with a damaged header would count as read in full with its later samples lost; headers are read
here so that these raise: a valid archive ends with its end-of-archive marker (zero blocks) and
nothing but zeros after it.
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
    count, offset, in_member = 0, 0, False
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:  # reads the first header (strictly)
            info = tar.next()
            while info is not None:
                offset = info.offset
                name = info.name
                if info.isreg() and not posixpath.basename(name).startswith("__"):
                    key, _ = split_member_name(name)
                    if current is not None and key != current[0]:  # complete: another key begins
                        yield current
                        count += 1
                        current = None
                    if current is None:
                        current = (key, [])
                    in_member = True
                    reader = tar.extractfile(info)
                    data = reader.read() if reader is not None else b""
                    if len(data) != info.size:
                        raise tarfile.ReadError(f"member {name} is cut short ({len(data)} of {info.size} bytes)")
                    in_member = False
                    current[1].append((info, data))
                tar.members = []  # a long shard must not pile up headers
                _skip_to_next_header(tar)
                offset = tar.offset
                info = _next_member(tar)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        # A sample cut inside one of its members is dropped; one whose members were all read
        # before a damaged header is kept (every byte of it is intact).
        if current is not None and current[1] and not in_member:
            yield current
            count += 1
        raise ShardDamaged(offset, f"{type(exc).__name__}: {exc}", count) from None
    if current is not None and current[1]:
        yield current


def _skip_to_next_header(tar: tarfile.TarFile) -> None:
    """Past the rest of the member just read (what was not read of it, and its padding), as
    TarFile.next does; ReadError if the stream ends first."""
    if tar.offset != tar.fileobj.tell():
        tar.fileobj.seek(tar.offset - 1)
        if not tar.fileobj.read(1):
            raise tarfile.ReadError("unexpected end of data")


def _next_member(tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    """The next member's header, or None at the end-of-archive marker; ReadError where TarFile's
    own `next()` would end quietly: a header cut short or damaged, the stream's end before the
    marker, data after it."""
    try:
        return tar.tarinfo.fromtarfile(tar)
    except tarfile.EOFHeaderError:  # a zero block: the end-of-archive marker
        _check_end(tar.fileobj, tar.offset + tarfile.BLOCKSIZE)
        return None
    except tarfile.EmptyHeaderError:
        raise tarfile.ReadError("the shard ends without its end-of-archive marker (cut short?)") from None
    except tarfile.HeaderError as exc:
        raise tarfile.ReadError(f"damaged member header ({exc})") from None


def _check_end(fileobj, position: int) -> None:
    """After the end-of-archive marker a tar holds only zeros (its padding); anything else is a
    header that was zeroed out, with members after it that would be lost."""
    while chunk := fileobj.read(1 << 20):
        if chunk.count(0) != len(chunk):
            first = position + next(index for index, byte in enumerate(chunk) if byte)
            raise tarfile.ReadError(f"data at byte {first} after an all-zero header block (a zeroed header?)")
        position += len(chunk)


def iter_tar_samples(stream: BinaryIO, shard: str) -> Iterator[Sample]:
    """The samples of the tar `stream` (named `shard` in what they yield), in shard order; of two
    members with the same extension in one sample, the first."""
    for key, members in iter_tar_records(stream):
        sample = Sample(shard, key)
        for info, data in members:
            sample.members.setdefault(split_member_name(info.name)[1], data)
        yield sample
