"""The artifact cache: each model is exported once per weight file and reused after that.

Artifacts live in $IQART_HOME/artifacts/<model>-<weights sha256[:16]>/ (default
~/.cache/iqart). Keying by the weights' content, not their path, means retrained weights get a
fresh export and the same weights under another name reuse the old one. An artifact counts only
when its spec.json records those weights, the current spec version and every graph file, and
each graph's sha256 matches the one spec.json records (checked before every load: a cache on a
full disk, or copied half-way, holds truncated graphs that ONNX Runtime would reject with a
traceback); an outdated or damaged directory is exported again, saying so once. Export is atomic
and runs under a lock: when several processes start at once, one exports and the others wait
and reuse it. The cache's folders get the umask's mode (the export stages in a 0700 temp folder).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from iqart.engine.filelock import exclusive_lock
from iqart.export.artifact import GRAPH_FILES, INT8_GRAPH, SPEC_VERSION, export_artifact, read_spec, sha256_file
from iqart.train.models.checkpoints import CheckpointError
from iqart.train.models.zoo import resolve_weights
from iqart.train.storage import iqart_home


def artifact_dir(name: str, weights_sha256: str) -> Path:
    return iqart_home() / "artifacts" / f"{name}-{weights_sha256[:16]}"


def is_complete(directory: Path, name: str, weights_sha256: str) -> bool:
    return check_artifact(directory, name, weights_sha256) is None


def check_artifact(directory: Path, name: str, weights_sha256: str) -> str | None:
    """None when `directory` is a usable artifact of `name` with these weights; else what is
    wrong with it ("missing" when there is nothing there)."""
    if not directory.exists():
        return "missing"
    try:
        spec = read_spec(directory)
    except (OSError, ValueError) as exc:
        return f"unreadable spec.json ({exc})"
    if (
        spec.get("spec_version") != SPEC_VERSION
        or spec.get("name") != name
        or spec.get("sha256", {}).get("weights") != weights_sha256
    ):
        return "exported by another iqart version or for other weights"
    for graph in GRAPH_FILES:
        if not (directory / graph).is_file():
            return f"{graph} is missing"
        if file_sha256(directory / graph) != spec["sha256"].get(graph):
            return f"{graph} does not match the sha256 in spec.json (truncated or damaged)"
    return None


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process while its size and mtime stay the same: every
    Scorer checks its artifact's graphs, and hashing them each time would cost ~0.1 s per 100 MiB."""
    info = path.stat()
    return _file_sha256(str(path), info.st_size, info.st_mtime_ns)


def weights_sha256(name: str, weights: str | os.PathLike | None = None) -> str:
    """The sha256 of the weight file `name` runs with (as the zoo resolves it): what result files
    record, so that --resume never mixes the scores of different weights."""
    path = resolve_weights(name, weights)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    return file_sha256(path)


def cached_artifact(name: str, weights: str | os.PathLike | None = None) -> Path:
    """The artifact directory for `name` with these weights (default: as the zoo resolves them),
    exported on first use, and again when its graphs fail their sha256 check."""
    path = resolve_weights(name, weights)
    digest = weights_sha256(name, weights)
    directory = artifact_dir(name, digest)
    if is_complete(directory, name, digest):
        return directory
    with exclusive_lock(directory.with_name(directory.name + ".lock")):
        problem = check_artifact(directory, name, digest)  # another process may have exported it meanwhile
        if problem is not None:
            if problem != "missing":
                print(f"iqart: cached artifact {directory}: {problem}; exporting it again", file=sys.stderr)
            export_artifact(name, directory, path)  # honours the umask itself
    return directory


def cached_int8_graph(directory: Path) -> Path:
    """The artifact's model.int8.onnx, calibrated (with its parity report) on first use, with
    the default image sets (iqart.export.int8_artifact); `iqart quantize` chooses them instead."""
    graph = directory / INT8_GRAPH
    if _int8_intact(directory):
        return graph
    from iqart.export.int8_artifact import add_int8_graph  # onnxruntime.quantization: only when needed

    with exclusive_lock(directory.with_name(directory.name + ".lock")):
        if not _int8_intact(directory):
            if graph.is_file():
                print(
                    f"iqart: {graph} does not match the sha256 in spec.json (truncated or damaged); "
                    "calibrating it again",
                    file=sys.stderr,
                )
            add_int8_graph(directory)
    return graph


def _int8_intact(directory: Path) -> bool:
    """model.int8.onnx is there and is the file spec.json records (a truncated copy is not)."""
    graph = directory / INT8_GRAPH
    if not graph.is_file():
        return False
    expected = read_spec(directory).get("sha256", {}).get(INT8_GRAPH)
    return expected is None or file_sha256(graph) == expected
