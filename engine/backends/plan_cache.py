"""TensorRT plans cached in an artifact's plans/ directory, and the key that says when one fits.

A plan is only valid for the graph it was built from, the library (TensorRT or TensorRT for RTX)
and version that wrote it, the GPU architecture it was tuned on (TensorRT) or the compute
capabilities it targets (TensorRT for RTX, built ahead of time), the build settings (workspace,
builder flags, targets: hashed, so a change to how plans are built retires the old ones without
anyone bumping a version), and for the plugin graph only for the plugin library
it was built with (the plan stores the plugin's serialized fields and the workspace size the
plugin's code asked for: a plan from an older plugin could let the new kernel write past that
workspace): all of that is the Environment, which must match. The optimisation profile is the
key's other half and need only cover the request: a plan built for batches 1..32 serves 8.
Each plan `X.plan` has a sidecar `X.json` holding its key and the
plan's sha256, written after the plan (the sidecar's presence means the plan is complete).
Before a plan is deserialised its sidecar is checked against this machine, so a plan copied
from another GPU or TensorRT version gives a message saying so rather than TensorRT's error.
Pure Python: no TensorRT or GPU needed, so all of it is tested on CPU machines.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from iqart.engine.backends.tensorrt_import import LIBRARIES
from iqart.export.native_attention import NATIVE_GRAPH  # attention as ONNX Attention ops, TensorRT's own fused kernels
from iqart.export.plugin_node import TRT_GRAPH  # attention as FusedCrossAttention plugin nodes
from iqart.train.storage import write_atomic, write_json_atomic

PLANS_DIR = "plans"
UNFUSED_GRAPH = "model.fp16.onnx"  # attention as the fp16 graph's MatMul-Softmax-MatMul
GRAPHS = {"plugin": TRT_GRAPH, "native": NATIVE_GRAPH, "unfused": UNFUSED_GRAPH}
NO_PLUGIN = "none"  # Environment.plugin of a plan built without our plugin library
DEFAULT_MAX_SIDE = 1024  # native resolution: larger images need a plan built with --max-side
OPT_SIDE = 512  # the size TensorRT tunes kernels for, within the range


class PlanMismatchError(RuntimeError):
    """No cached plan fits this graph, GPU, TensorRT version and profile (and building was not allowed),
    or a plan file does not match its record."""


Range = tuple[int, int, int]  # (min, opt, max)


def _check_range(what: str, values: Range, floor: int) -> Range:
    values = tuple(int(v) for v in values)
    if len(values) != 3 or not floor <= values[0] <= values[1] <= values[2]:
        raise ValueError(f"{what} must be min <= opt <= max, each >= {floor}; got {values}")
    return values


@dataclass(frozen=True)
class Profile:
    """A TensorRT optimisation profile: the batch range and, for native-resolution models, the
    range of image height and width (fixed-size models take the spec's size)."""

    batch: Range
    side: Range | None = None

    def __post_init__(self):
        object.__setattr__(self, "batch", _check_range("batch sizes", self.batch, 1))
        if self.side is not None:
            object.__setattr__(self, "side", _check_range("image sides", self.side, 1))

    def covers(self, other: Profile) -> bool:
        """Every shape `other` accepts, this profile accepts too."""
        if self.batch[0] > other.batch[0] or self.batch[2] < other.batch[2]:
            return False
        if (self.side is None) != (other.side is None):
            return False
        return self.side is None or (self.side[0] <= other.side[0] and self.side[2] >= other.side[2])

    def accepts(self, batch: int, height: int, width: int) -> str | None:
        """None when the shape fits; otherwise why not, for the error row."""
        if not self.batch[0] <= batch <= self.batch[2]:
            return f"batch of {batch} is outside the plan's batch range {self.batch[0]}..{self.batch[2]}"
        if self.side is not None and not all(self.side[0] <= s <= self.side[2] for s in (height, width)):
            return (
                f"{width}x{height} is outside the plan's image sides {self.side[0]}..{self.side[2]} "
                f"(build a plan for larger images with `iqart build DIR --max-side N`)"
            )
        return None

    def input_shapes(self, fixed_size: tuple[int, int] | None) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) NHWC shapes for `IOptimizationProfile.set_shape`."""
        if self.side is None:
            if fixed_size is None:
                raise ValueError("a native-resolution model needs a profile with image sides")
            return tuple((n, *fixed_size, 3) for n in self.batch)
        return tuple((n, s, s, 3) for n, s in zip(self.batch, self.side, strict=True))

    def to_json(self) -> dict:
        return {"batch": list(self.batch), "side": None if self.side is None else list(self.side)}

    @classmethod
    def from_json(cls, data: dict) -> Profile:
        return cls(tuple(data["batch"]), None if data.get("side") is None else tuple(data["side"]))


def fixed_size(spec: dict) -> tuple[int, int] | None:
    """(H, W) when the artifact's graph takes one image size, None when H and W are dynamic."""
    height, width = spec["inputs"][0]["shape"][1:3]
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def profile_for(spec: dict, batch: Range, max_side: int = DEFAULT_MAX_SIDE) -> Profile:
    """The profile to build for an artifact: `batch` as given, and for dynamic-size graphs image
    sides from the smallest image iqart scores up to `max_side`."""
    from iqart.engine.pipeline.images import MIN_SIDE  # here: the pipeline imports the model zoo (open_clip)

    if fixed_size(spec) is not None:
        return Profile(batch)
    if max_side < MIN_SIDE:
        raise ValueError(f"max side must be at least {MIN_SIDE}, not {max_side}")
    return Profile(batch, (MIN_SIDE, min(OPT_SIDE, max_side), max_side))


@dataclass(frozen=True)
class Environment:
    """What a plan is specific to, apart from its profile."""

    graph_sha256: str
    gpu: str  # e.g. "NVIDIA H100 80GB HBM3"; TensorRT-RTX plans: AHEAD_OF_TIME (any GPU of `sm`)
    sm: str  # compute capability, e.g. "9.0"; TensorRT-RTX plans: the targets, e.g. "8.0,8.6,8.9,12.0"
    tensorrt: str  # the library's version, e.g. "11.0.0" or "1.7.1.116"
    graph: str = TRT_GRAPH  # which of the artifact's TensorRT graphs
    plugin: str = NO_PLUGIN  # iqart.engine.backends.plugin.build_key() of the library loaded, or NO_PLUGIN
    library: str = "tensorrt"  # or "tensorrt-rtx"
    settings: str = ""  # digest of the build settings (iqart.engine.backends.tensorrt_build.BuildSettings)

    @property
    def arch(self) -> str:
        """The compute capabilities as nvcc names them: "9.0" -> "sm_90", "8.0,8.6" -> "sm_80+sm_86"."""
        return "+".join("sm_" + sm.replace(".", "") for sm in self.sm.split(","))

    @property
    def library_tag(self) -> str:
        """Short name in file names: "trt" (TensorRT) or "trtrtx" (TensorRT for RTX)."""
        return self.library.replace("tensorrt", "trt").replace("-", "")

    def describe(self) -> str:
        plugin = "no plugin" if self.plugin == NO_PLUGIN else f"plugin build {self.plugin}"
        return (
            f"{self.gpu} ({self.arch}) with {LIBRARIES[self.library].title} {self.tensorrt}, {self.graph} "
            f"{self.graph_sha256[:12]}, {plugin}"
        )


@dataclass(frozen=True)
class PlanKey:
    environment: Environment
    profile: Profile

    def to_json(self) -> dict:
        return {**asdict(self.environment), "profile": self.profile.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> PlanKey:
        """The key a record holds; KeyError for a record without every field (an older iqart's)."""
        environment = Environment(**{f.name: str(data[f.name]) for f in fields(Environment)})
        return cls(environment, Profile.from_json(data["profile"]))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def stem(self) -> str:
        """File name without suffix: readable parts first, the digest keeps it unique."""
        env = self.environment
        flavour = next((mode for mode, graph in GRAPHS.items() if graph == env.graph), "graph")
        return f"model.trt-{flavour}-{env.arch.replace('_', '')}-{env.library_tag}{env.tensorrt}-{self.digest}"


class PlanCache:
    """The plans/ directory of one artifact."""

    def __init__(self, artifact: str | os.PathLike):
        self.directory = Path(artifact) / PLANS_DIR

    def plan_path(self, key: PlanKey) -> Path:
        return self.directory / f"{key.stem}.plan"

    def record_path(self, key: PlanKey) -> Path:
        return self.directory / f"{key.stem}.json"

    def timing_cache_path(self, environment: Environment) -> Path:
        """One timing cache per GPU architecture and TensorRT version, shared by all profiles."""
        env = environment
        return self.directory / f"timing-{env.arch.replace('_', '')}-{env.library_tag}{env.tensorrt}.cache"

    def runtime_cache_path(self, key: PlanKey, sm: str) -> Path:
        """TensorRT-RTX's runtime cache of one plan on one GPU architecture: the kernels its JIT
        compiled there, kept so that the next process starts without compiling them again."""
        return self.directory / f"{key.stem}.runtime-sm{sm.replace('.', '')}.cache"

    def store_runtime_cache(self, key: PlanKey, sm: str, data: bytes) -> None:
        write_atomic(self.runtime_cache_path(key, sm), data)

    def store_timing_cache(self, environment: Environment, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.timing_cache_path(environment), data)

    def records(self) -> list[tuple[Path, PlanKey | str]]:
        """(record file, its key, or why it cannot be read) for every plan record present."""
        found = []
        for record in sorted(self.directory.glob("*.json")):
            try:
                found.append((record, PlanKey.from_json(json.loads(record.read_text()))))
            except KeyError as exc:
                found.append((record, f"unreadable record: no field {exc} (written by an older iqart: rebuild)"))
            except (OSError, ValueError, TypeError) as exc:
                found.append((record, f"unreadable record: {exc}"))
        return found

    def select(self, environment: Environment, needed: Profile) -> PlanKey | None:
        """The cached plan for this environment whose profile covers `needed`; the narrowest
        such profile (TensorRT tunes for the range it is given)."""
        fitting = [
            key
            for _, key in self.records()
            if isinstance(key, PlanKey)
            and key.environment == environment
            and key.profile.covers(needed)
            and self.plan_path(key).is_file()
        ]
        return min(fitting, key=lambda k: (k.profile.batch[2], k.profile.side or ()), default=None)

    def explain_missing(self, environment: Environment, needed: Profile) -> str:
        """Why no cached plan fits: one line per plan present, naming what differs."""
        lines = [f"no TensorRT plan in {self.directory} for {environment.describe()}, profile {needed.to_json()}"]
        for record, key in self.records():
            if isinstance(key, str):
                lines.append(f"  {record.name}: {key}")
            else:
                lines.append(
                    f"  {record.name}: {mismatch(key, environment, needed) or 'fits, but its .plan file is missing'}"
                )
        lines.append("build one with `iqart build DIR` (or let the tensorrt backend build it)")
        return "\n".join(lines)

    def store(self, key: PlanKey, plan: bytes, io: list[dict] | None = None) -> Path:
        """Write plan then record, each atomically: a record always describes a whole plan.
        `io`: the plan's inputs and outputs (iqart.engine.backends.tensorrt_build.network_io)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.plan_path(key)
        write_atomic(path, plan)
        record = {
            **key.to_json(),
            "plan_sha256": hashlib.sha256(plan).hexdigest(),
            "plan_bytes": len(plan),
            "io": io or [],
        }
        write_json_atomic(self.record_path(key), record)
        return path

    def load(self, key: PlanKey, environment: Environment) -> bytes:
        """The plan's bytes, after checking its record against this machine and its checksum."""
        record_path = self.record_path(key)
        try:
            record = json.loads(record_path.read_text())
            stored = PlanKey.from_json(record)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PlanMismatchError(f"{record_path}: cannot read the plan record ({exc})") from None
        problem = mismatch(stored, environment, key.profile)
        if problem:
            raise PlanMismatchError(f"{self.plan_path(key)}: {problem}; rebuild it with `iqart build DIR`")
        plan = self.plan_path(key).read_bytes()
        if hashlib.sha256(plan).hexdigest() != record.get("plan_sha256"):
            raise PlanMismatchError(
                f"{self.plan_path(key)}: contents do not match its record (damaged or "
                f"replaced); delete it and rebuild with `iqart build DIR`"
            )
        return plan


def mismatch(key: PlanKey, environment: Environment, needed: Profile) -> str | None:
    """Why the plan described by `key` cannot serve `environment` and `needed`, or None."""
    built = key.environment
    if built.library != environment.library:
        return f"built with {built.library}, this backend is {environment.library}"
    if built.graph != environment.graph:
        return f"built from {built.graph}, this backend runs {environment.graph}"
    if built.graph_sha256 != environment.graph_sha256:
        return (
            f"built from another graph ({built.graph_sha256[:12]}, this artifact's is {environment.graph_sha256[:12]})"
        )
    if (built.gpu, built.sm) != (environment.gpu, environment.sm):
        return f"built for {built.gpu} ({built.arch}), this GPU is {environment.gpu} ({environment.arch})"
    if built.tensorrt != environment.tensorrt:
        title = LIBRARIES[built.library].title
        return f"built with {title} {built.tensorrt}, this is {title} {environment.tensorrt}"
    if built.plugin != environment.plugin:
        return (
            f"built with plugin build {built.plugin}, the plugin library loaded now is {environment.plugin} "
            f"(the plugin changed: the plan must be rebuilt)"
        )
    if built.settings != environment.settings:
        return (
            f"built with other build settings ({built.settings}, this iqart's are {environment.settings}: "
            f"workspace, builder flags or targets changed)"
        )
    if not key.profile.covers(needed):
        return f"its profile {key.profile.to_json()} does not cover {needed.to_json()}"
    return None
