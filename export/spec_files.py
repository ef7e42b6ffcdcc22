"""Reading an artifact's spec.json and hashing its files: the part of the artifact contract the
engine needs at run time, kept free of the model code (and so of open_clip) for GPU machines
that run TensorRT plans without the training stack."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_spec(artifact_dir: str | os.PathLike) -> dict:
    path = Path(artifact_dir) / "spec.json"
    if not path.is_file():
        raise FileNotFoundError(f"{artifact_dir}: not an iqart artifact (no spec.json)")
    return json.loads(path.read_text())
