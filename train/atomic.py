"""Atomic file writes: a reader (or a crash) never sees half a file.

The data goes to a temporary file in the target's folder, is flushed to disk, and is renamed
over the target; on any failure the temporary file is removed and the target left as it was.
Every package writes its outputs through here (engine -> export -> train may all import it).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace `path` with `data` (str is written as UTF-8) in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, data: object) -> None:
    """`data` as indented JSON with a final newline, written atomically."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")
