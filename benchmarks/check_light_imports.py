"""The kernel, op, plugin, plan-cache and TensorRT-graph modules import without the model code:
nothing of open_clip, ftfy or wcwidth may load with them. GPU machines without the training
stack build and run the kernels through these modules (gpu_verify.sh, first step).

    python3 benchmarks/check_light_imports.py
"""

from __future__ import annotations

import argparse
import importlib
import sys

LIGHT = (
    "iqart.engine.backends.fused_op",
    "iqart.engine.backends.plugin",
    "iqart.engine.backends.plan_cache",
    "iqart.engine.backends.tensorrt_import",
    "iqart.engine.backends.tensorrt_backend",
    "iqart.export.plugin_node",
    "iqart.export.native_attention",
    "iqart.export.spec_files",
)
HEAVY = ("open_clip", "ftfy", "wcwidth")


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__.splitlines()[0])


def check() -> None:
    for name in LIGHT:
        importlib.import_module(name)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    if heavy:
        raise SystemExit(f"importing {', '.join(LIGHT)} loaded {heavy}")
    print(f"{len(LIGHT)} modules import without {', '.join(HEAVY)}")


def dry_run(args: argparse.Namespace) -> None:
    check()  # needs no GPU: the dry run runs the real check


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
