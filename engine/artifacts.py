"""The artifact cache: each model is exported once per weight file and reused after that.

Artifacts live in $IQART_HOME/artifacts/<model>-<weights sha256[:16]>/ (default
~/.cache/iqart). Keying by the weights' content, not their path, means retrained weights get a
fresh export and the same weights under another name reuse the old one. An artifact counts only
when its spec.json records those weights, the current spec version and every graph file, so an
outdated or damaged directory is exported again. Export is atomic and runs under a lock: when
several processes start at once, one exports and the others wait and reuse it.
"""

from __future__ import annotations

import os
from pathlib import Path

from iqart.engine.filelock import exclusive_lock
from iqart.export.artifact import GRAPH_FILES, INT8_GRAPH, SPEC_VERSION, export_artifact, read_spec, sha256_file
from iqart.train.checkpoints import CheckpointError
from iqart.train.zoo import iqart_home, resolve_weights


def artifact_dir(name: str, weights_sha256: str) -> Path:
    return iqart_home() / "artifacts" / f"{name}-{weights_sha256[:16]}"


def is_complete(directory: Path, name: str, weights_sha256: str) -> bool:
    try:
        spec = read_spec(directory)
    except (OSError, ValueError):
        return False
    return (spec.get("spec_version") == SPEC_VERSION and spec.get("name") == name
            and spec.get("sha256", {}).get("weights") == weights_sha256
            and all((directory / graph).is_file() for graph in GRAPH_FILES))


def cached_artifact(name: str, weights: str | os.PathLike | None = None) -> Path:
    """The artifact directory for `name` with these weights (default: as the zoo resolves them),
    exported on first use."""
    path = resolve_weights(name, weights)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    digest = sha256_file(path)
    directory = artifact_dir(name, digest)
    if is_complete(directory, name, digest):
        return directory
    with exclusive_lock(directory.with_name(directory.name + ".lock")):
        if not is_complete(directory, name, digest):  # another process may have exported it meanwhile
            export_artifact(name, directory, path)
    return directory


def cached_int8_graph(directory: Path) -> Path:
    """The artifact's model.int8.onnx, calibrated (with its parity report) on first use, with
    the default image sets (iqart.export.int8_artifact); `iqart quantize` chooses them instead."""
    graph = directory / INT8_GRAPH
    if graph.is_file():
        return graph
    from iqart.export.int8_artifact import add_int8_graph  # onnxruntime.quantization: only when needed

    with exclusive_lock(directory.with_name(directory.name + ".lock")):
        if not graph.is_file():
            add_int8_graph(directory)
    return graph
