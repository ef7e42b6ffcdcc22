"""Where iqart keeps its files and how it writes them: the iqart home folder and atomic writes.

The bottom layer of the package (engine -> export -> train may all import it; it imports no
iqart module), so that the kernel and plugin loaders find their build cache, and the plan cache
and result writers write their files, without importing the model code (and so open_clip).

`iqart_home()`: what iqart downloads, exports and builds lives under $IQART_HOME, else
~/.cache/iqart.

Atomic writes: a reader (or a crash) never sees half a file. The data goes to a temporary file in
the target's folder, is flushed to disk, and is renamed over the target; on any failure the
temporary file is removed and the target left as it was.

`tempfile` creates its files 0600 and its folders 0700 whatever the umask (it guards secrets);
our outputs are not secrets, so once written they get the mode an ordinary `open()` or `mkdir`
would have given them: shared result folders and caches stay readable by the group as the
user's umask says.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def iqart_home() -> Path:
    return Path(os.environ.get("IQART_HOME", Path.home() / ".cache" / "iqart"))


def current_umask() -> int:
    """This process's umask, read without changing it where Linux reports it (/proc), so other
    threads never see a temporarily altered umask."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(target: str | os.PathLike | int, directory: bool = False) -> None:
    """Give a file (path or descriptor) or folder made by `tempfile` the mode open() or mkdir()
    would have given it: 0666 or 0777 less the umask."""
    mode = (0o777 if directory else 0o666) & ~current_umask()
    if isinstance(target, int):
        os.fchmod(target, mode)
    else:
        os.chmod(target, mode)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace `path` with `data` (str is written as UTF-8) in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        honour_umask(fd)
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
