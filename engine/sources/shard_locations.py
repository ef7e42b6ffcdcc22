"""Shard lists from what a user types: paths, globs, brace ranges, folders of shards, local or
any fsspec URL (s3://, gs://, https://, hf://), and opening one shard as a stream.

Local shards are made absolute (rows name them whatever the working directory of a later
--resume); URLs are kept as written. A glob or folder that gives no shard is an error before any
work, naming it, and so is a local name (or brace range) of which no shard exists. A shard named
exactly (a path, one of a brace range, a list's entry) is not probed before the run: in object
storage that is a request per shard (minutes for a range of 10,000), and a shard that cannot be
read (no such object, access denied, no endpoint) is an error row of its own while the others
are scored.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath

from iqart.engine.pipeline.images import IMAGE_SUFFIXES

SHARD_KINDS = {".tar": "webdataset", ".tgz": "webdataset", ".tar.gz": "webdataset", ".parquet": "parquet"}
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_USERINFO = re.compile(r"(://)[^/@]*@")


class NoShardsError(ValueError):
    """A shard name, pattern or folder that gives nothing to read."""


def redact(url: str) -> str:
    """`https://user:secret@host/x` -> `https://host/x`: how rows, outputs and messages name a
    shard, so that no credential reaches them (the reader alone opens the URL as given)."""
    return _USERINFO.sub(r"\1", url)


def is_url(name: str) -> bool:
    return "://" in name


def shard_kind(name: str) -> str | None:
    """ "webdataset", "parquet", or None for a name that is not a shard's."""
    lowered = name.lower()
    return next((kind for suffix, kind in SHARD_KINDS.items() if lowered.endswith(suffix)), None)


def expand_braces(pattern: str) -> list[str]:
    """`a/{00000..00002}.tar` -> a/00000.tar, a/00001.tar, a/00002.tar (zero padding kept, as
    webdataset's braceexpand does); `{x,y}` lists; several braces multiply, left to right."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    inner, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    numbers = _RANGE.match(inner)
    if numbers:
        first, last = numbers.groups()
        width = len(first) if first.startswith("0") or len(first) == len(last) else 0
        step = 1 if int(last) >= int(first) else -1
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + step, step)]
    else:
        choices = inner.split(",")
    return [expanded for choice in choices for expanded in expand_braces(head + choice + tail)]


def looks_like_shards(names: list[str]) -> bool:
    """Whether the command line names shards (a URL, a shard's suffix, a brace range, or a folder
    holding tar shards, or Parquet tables and no images: img2dataset's parquet output) rather
    than image files."""
    for name in names:
        if is_url(name) or shard_kind(name) or _BRACE.search(name):
            return True
        if os.path.isdir(name):
            kinds = {shard_kind(entry.name) for entry in os.scandir(name)}
            if "webdataset" in kinds or ("parquet" in kinds and not _holds_images(name)):
                return True
    return False


def _holds_images(folder: str) -> bool:
    return any(os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES for entry in os.scandir(folder))


def _filesystem(name: str):
    import fsspec

    fs, path = fsspec.core.url_to_fs(name)
    return fs, path


def _is_local(fs) -> bool:
    protocol = fs.protocol
    return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))


def _display(fs, path: str, original: str) -> str:
    """How rows name a shard: an absolute local path, or a URL with its scheme."""
    if _is_local(fs):
        return os.path.abspath(path)
    return fs.unstrip_protocol(path) if is_url(original) else path


def list_shards(names: list[str]) -> list[str]:
    """Every shard `names` give, in order (each name's shards sorted), without duplicates.
    NoShardsError for a name that gives none (see the module's docstring)."""
    found: list[str] = []
    for name in names:
        matched: list[str] = []
        missing_local = 0
        for expanded in expand_braces(name):
            fs, path = _filesystem(expanded)
            if _GLOB_CHARS.search(path):
                hits = sorted(p for p in fs.glob(path) if shard_kind(p))
            elif shard_kind(path):
                hits = [path]
                missing_local += _is_local(fs) and not fs.exists(path)
            elif fs.isdir(path):
                hits = _shards_in_folder(fs, path)
            else:
                raise NoShardsError(f"{expanded}: no such shard or folder")
            matched += [_display(fs, hit, expanded) for hit in hits]
        if not matched:
            raise NoShardsError(f"{name}: no shard (.tar or .parquet) matches")
        if missing_local == len(matched):
            raise NoShardsError(f"{name}: no such shard")
        found += matched
    return list(dict.fromkeys(found))


def _shards_in_folder(fs, path: str) -> list[str]:
    """A folder's tar shards; if it has none, its Parquet tables (img2dataset writes a metadata
    .parquet beside each .tar: those are not images to score)."""
    entries = sorted(entry for entry in fs.ls(path, detail=False))
    tars = [entry for entry in entries if shard_kind(entry) == "webdataset"]
    return tars or [entry for entry in entries if shard_kind(entry) == "parquet"]


def open_shard(url: str):
    """The shard as a binary stream (fsspec: a local file, or a buffered remote object)."""
    import fsspec

    return fsspec.open(url, "rb").open()


def shard_stem(url: str) -> str:
    """`s3://b/x/00012.tar` -> `00012`: the name of the shard's own output file."""
    name = PurePosixPath(url.rstrip("/")).name
    for suffix in sorted(SHARD_KINDS, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
