"""Makes this Python look like the GPU machine's image for `benchmarks/gpu_verify.sh --dry-run`.

The device image has PyTorch, numpy, onnx, onnxruntime, pytest, ninja, nvcc and
compute-sanitizer, but not open_clip_torch, ftfy or wcwidth, and no package registry. The dry
run puts this directory first on PYTHONPATH, so Python imports this module at start-up (the
`site` module's sitecustomize hook) in the dry run's every process, and the packages named in
IQART_BLOCK_PACKAGES become unimportable, as they are there.

IQART_CARRIED_SITE names where the real run gets them from: the directory the carried wheels
were installed into (they are importable from there only), or `installed` to let this machine's
own copies stand in for carried wheels not fetched yet. Only the `iqart bench` step sets it; it
is read at each import, so one process can check the other steps first, then that one.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

BLOCKED = frozenset(filter(None, os.environ.get("IQART_BLOCK_PACKAGES", "").split(",")))


class DeviceImageFinder:
    """First on sys.meta_path: refuses the blocked top-level packages unless carried."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in BLOCKED or "." in name:
            return None  # a submodule is reached only through its package, which was checked
        carried = os.environ.get("IQART_CARRIED_SITE")
        if carried:
            spec = importlib.machinery.PathFinder.find_spec(name, None if carried == "installed" else [carried])
            if spec is not None:
                return spec
        raise ModuleNotFoundError(f"No module named {name!r} (the GPU image lacks it: blocked by "
                                  f"benchmarks/device_image for the dry run)", name=name)


if BLOCKED:
    sys.meta_path.insert(0, DeviceImageFinder())
