"""Makes this Python import only what the GPU machine's image has, for `gpu_verify.sh --dry-run`.

The device image is PyTorch on Python 3.12 with the distributions listed in packages.txt beside
this file, and no package registry. The dry run puts this directory first on PYTHONPATH, so
Python imports this module at start-up (the `site` module's sitecustomize hook) in the dry
run's every process. With IQART_DEVICE_PACKAGES naming that list, a top-level module becomes
unimportable when every distribution installed here that provides it is missing from the list,
as are the standard-library modules Python 3.12 removed. The standard library, this checkout's
folders (tests, benchmarks; iqart through gpu_verify.sh's link) and modules no distribution
provides stay importable: the checkout travels.

IQART_CARRIED_DISTS names the distributions the real run carries as wheels, and
IQART_CARRIED_SITE where it gets them from: the directory the carried wheels were installed
into (their modules are importable from there only), or `installed` to let this machine's own
copies stand in for carried wheels not fetched yet. Only the steps that need the model code set
IQART_CARRIED_SITE; it is read at each import, so one process can check the other steps first.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
import sys
from pathlib import Path

# Standard-library modules that Python 3.12 (the device's) no longer has; this machine's may.
REMOVED_IN_PYTHON_312 = frozenset({"asynchat", "asyncore", "imp", "smtpd"})
CHECKOUT = Path(__file__).resolve().parents[2]  # travels to the device: its folders import there
# A module the device has under another distribution's name than this machine's.
DEVICE_DISTRIBUTION_OF = {"cpuinfo": "py-cpuinfo"}  # here: the py-cpuinfo2 fork


def normalise(name: str) -> str:
    """A distribution's name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: str) -> frozenset[str]:
    with open(path) as f:
        return frozenset(normalise(line.strip()) for line in f if line.strip() and not line.startswith("#"))


class DeviceImageFinder:
    """First on sys.meta_path: refuses the top-level modules the device image lacks, unless carried."""

    def __init__(self, device: frozenset[str], carried: frozenset[str]):
        self.device = device | {"iqart"}  # the checkout itself travels
        self.carried = carried
        self._providers: dict[str, list[str]] | None = None

    def providers(self, name: str) -> list[str]:
        """The distributions installed here that provide top-level module `name` (read once, lazily:
        a process that imports only the standard library never pays for the scan)."""
        if self._providers is None:
            import importlib.metadata

            self._providers = {
                module: [normalise(d) for d in dists]
                for module, dists in importlib.metadata.packages_distributions().items()
            }
        return self._providers.get(name, [])

    def why_missing(self, name: str) -> str | None:
        """Why the device image has no module `name`, or None if it has (or the checkout brings) it."""
        if name in REMOVED_IN_PYTHON_312:
            return "Python 3.12 removed it from the standard library"
        if name in sys.stdlib_module_names or name in sys.builtin_module_names:
            return None
        if DEVICE_DISTRIBUTION_OF.get(name) in self.device or (CHECKOUT / name).is_dir():
            return None
        providers = self.providers(name)
        if not providers or any(dist in self.device for dist in providers):
            return None
        return f"the GPU image lacks {', '.join(sorted(set(providers)))}"

    def find_spec(self, name, path=None, target=None):
        if "." in name:
            return None  # a submodule is reached only through its package, which was checked
        why = self.why_missing(name)
        if why is None:
            return None
        site = os.environ.get("IQART_CARRIED_SITE")
        providers = set(self.providers(name))
        if site and providers and providers <= self.carried:
            spec = importlib.machinery.PathFinder.find_spec(name, None if site == "installed" else [site])
            if spec is not None:
                return spec
            why += f" and the carried wheels in {site} do not provide it"
        raise ModuleNotFoundError(
            f"No module named {name!r} ({why}: blocked by benchmarks/device_image for the dry run)", name=name
        )


if os.environ.get("IQART_DEVICE_PACKAGES"):
    sys.meta_path.insert(
        0,
        DeviceImageFinder(
            read_names(os.environ["IQART_DEVICE_PACKAGES"]),
            frozenset(map(normalise, filter(None, re.split(r"[\s,]+", os.environ.get("IQART_CARRIED_DISTS", ""))))),
        ),
    )
