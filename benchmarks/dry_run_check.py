"""Checks, without a GPU, the Python commands of benchmarks/gpu_verify.sh: `python3 dry_run_check.py
ARGS...` checks what `python3 ARGS...` would import and parse on the device, and
`python3 dry_run_check.py --commands FILE --rows ROWS` checks each command listed in FILE (JSON
lines: name, env, argv) in this one process, in order but those given carried packages last (one
start of torch instead of one per step, which keeps the dry run fast enough for the default test
suite), appending a summary row per command to ROWS.

- `SCRIPT.py ARGS`: runs the script's top level (its imports) without its main, parses ARGS with
  its `build_parser()`, and calls its `dry_run(args)` if it has one (checks that need no GPU);
- `-m pytest ARGS`: collects the tests with ARGS (imports, options, markers), runs none; pytest
  plugins installed here that the device image lacks are left out, as they are there;
- `-m iqart.engine.cli.entry bench ARGS` (the `iqart` command): parses ARGS with iqart's parser
  and builds each model
  named, on the CPU, which imports the model code (open_clip) the way the real run will.
Exits non-zero if a check fails, with the reason.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
import traceback


def check_script(path: str, args: list[str]) -> None:
    namespace = runpy.run_path(path, run_name="gpu_verify_dry_run")
    if "build_parser" not in namespace:
        raise SystemExit(f"{path}: no build_parser(); the dry run cannot check its arguments")
    parsed = namespace["build_parser"]().parse_args(args)
    if "dry_run" in namespace:
        namespace["dry_run"](parsed)


def plugins_the_device_lacks() -> list[str]:
    """`-p no:NAME` for each pytest plugin installed here whose module the device image lacks
    (benchmarks/device_image blocks it): pytest there never sees it; here, loading it would stop
    the collection."""
    from importlib.metadata import entry_points

    finder = next((f for f in sys.meta_path if type(f).__name__ == "DeviceImageFinder"), None)
    if finder is None:
        return []
    return [
        arg
        for plugin in entry_points(group="pytest11")
        if finder.why_missing(plugin.module.partition(".")[0])
        for arg in ("-p", f"no:{plugin.name}")
    ]


def check_pytest(args: list[str]) -> None:
    import pytest

    # `python3 -m pytest` puts the working directory (the checkout) first on sys.path, which is
    # how test modules import `tests.*`; collecting in this process must see the same path.
    sys.path.insert(0, os.getcwd())
    code = pytest.main(["--collect-only", "-q", *plugins_the_device_lacks(), *args])
    if code != 0:
        raise SystemExit(f"pytest {' '.join(args)}: collection failed (exit {int(code)})")


def check_iqart(args: list[str]) -> None:
    from iqart.engine.cli.main import build_parser

    parsed = build_parser().parse_args(args)
    if parsed.command == "bench":
        import torch

        from iqart.engine.bench.runners import build_runner  # noqa: F401  (the import the run makes)
        from iqart.train.models.zoo import build_model, get_card

        for name in parsed.models or ["qualiclip"]:
            card = get_card(name)
            with torch.device("meta"):  # the modules and shapes, without the seconds of weight init
                model = build_model(name)
            print(
                f"bench: {name} ({card.backbone}) builds: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
                "parameters"
            )


def check(argv: list[str]) -> None:
    if argv[:2] == ["-m", "pytest"]:
        check_pytest(argv[2:])
    elif argv[:2] in (["-m", "iqart.engine.cli.entry"], ["-m", "iqart.engine.cli.main"]):
        check_iqart(argv[2:])
    elif argv and argv[0].endswith(".py"):
        check_script(argv[0], argv[1:])
    else:
        raise SystemExit(f"dry_run_check: cannot check `python3 {' '.join(argv)}`")
    print(f"dry run ok: python3 {' '.join(argv)}")


def apply_env(env: dict[str, str]) -> None:
    """A step's variables, for the rest of this process: PYTHONPATH entries go on sys.path."""
    for key, value in env.items():
        if key == "PYTHONPATH":
            sys.path[:0] = [entry for entry in value.split(os.pathsep) if entry and entry not in sys.path]
        else:
            os.environ[key] = value


def check_commands(path: str, rows_path: str) -> int:
    failed = 0
    with open(path) as f:
        commands = [json.loads(line) for line in f if line.strip()]
    # Steps given carried packages last: once imported, a carried module would stay importable
    # for the checks after it, hiding an import they must not make.
    commands.sort(key=lambda command: "IQART_CARRIED_SITE" in command["env"])
    for command in commands:
        started = time.perf_counter()
        print(f"== {command['name']}: python3 {' '.join(command['argv'])}", flush=True)
        try:
            apply_env(command["env"])
            check(command["argv"])
            status, cause = "ok", ""
        except SystemExit as exc:
            status, cause = ("ok", "") if exc.code in (None, 0) else ("FAILED", str(exc.code))
        except Exception as exc:  # any import or check error: its cause goes into the summary
            traceback.print_exc()
            status, cause = "FAILED", f"{type(exc).__name__}: {exc}"
        failed += status != "ok"
        print(f"== {command['name']}: {status} {cause}", flush=True)
        with open(rows_path, "a") as rows:
            cause = " ".join(cause.split()).replace("|", "/")[:400]
            rows.write(f"| {command['name']} (dry) | {status} | {time.perf_counter() - started:.0f} | {cause} |\n")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--commands"] and len(argv) == 4 and argv[2] == "--rows":
        return check_commands(argv[1], argv[3])
    check(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
