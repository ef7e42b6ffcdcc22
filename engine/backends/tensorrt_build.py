"""Building TensorRT plans from an artifact's graphs: one build path for TensorRT and TensorRT for RTX.

Three graphs, chosen by `attention`:
- "plugin": model.trt.onnx, each attention core one FusedCrossAttention node served by our
  plugin library (iqart.engine.backends.plugin), registered before parsing;
- "native": model.trt-native.onnx, each core an ONNX `Attention` op that the parser maps to
  TensorRT's own fused attention (IAttention). Needs nothing but the pip wheels;
- "unfused": model.fp16.onnx, attention as MatMul-Softmax-MatMul, fused only if TensorRT finds it.
The default is the plugin when its library is built or can be built here (TensorRT's headers
present), else native.

Everything a build depends on besides the graph and profile lives in `BuildSettings`, which is
both what configures the builder and what the plan key hashes: a change to how plans are built
changes every key, so old plans are rebuilt rather than reused. The profile is not among them: it
is the key's other half, and a plan serves every request its profile covers (PlanCache.select).
TensorRT builds on (and for) the GPU it runs on; TensorRT for RTX builds ahead of time without a GPU, for the compute
capabilities in `RTX_TARGETS`, and its plans are JIT-specialised when they first run.

Networks are strongly typed (the precision lives in the graph: fp16 with fp32 islands; there is
no FP16 builder flag). TensorRT is imported only inside functions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from iqart.engine.backends.plan_cache import (
    GRAPHS,
    NO_PLUGIN,
    Environment,
    PlanCache,
    PlanKey,
    PlanMismatchError,
    Profile,
    fixed_size,
)
from iqart.engine.backends.plugin import load_plugin, plugin_status
from iqart.engine.backends.tensorrt_import import TENSORRT, TENSORRT_RTX, TensorRTLibrary, TensorRTUnavailableError
from iqart.engine.filelock import exclusive_lock
from iqart.export.spec_files import read_spec, sha256_file

ATTENTION_MODES = tuple(GRAPHS)  # ("plugin", "native", "unfused")
WORKSPACE_BYTES = 4 << 30
# TensorRT for RTX targets: every capability its ComputeCapability enum lists except SM75, where
# its compiler refuses our fp32 score head ("Cannot compile operation '/MatMul' for Turing (SM75):
# FP32 GEMM is not supported"). Ampere (A100, A10, RTX 30), Ada (L4, L40S, RTX 40), Blackwell RTX.
RTX_TARGETS = ("SM80", "SM86", "SM89", "SM120", "SM121")
AHEAD_OF_TIME = "any GPU of its targets (built ahead of time)"  # Environment.gpu of TensorRT-RTX plans


def target_capabilities(targets: tuple[str, ...]) -> str:
    """("SM80", "SM120") -> "8.0,12.0": Environment.sm of a TensorRT-RTX plan."""
    return ",".join(f"{name[2:-1]}.{name[-1]}" for name in targets)


@dataclass(frozen=True)
class BuildSettings:
    """All that configures a build besides the graph and the profile: what `_configure` applies
    and what must match for a cached plan to be reused (Environment.settings holds its digest)."""

    workspace_bytes: int
    network_flags: tuple[str, ...] = ()  # TensorRT 11 and TensorRT-RTX: every network is strongly typed
    builder_flags: tuple[str, ...] = ()
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX targets; empty: the GPU it builds on
    timing_cache: bool = True  # TensorRT tunes tactics on the GPU; TensorRT-RTX defers them to its JIT

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


InputShapes = tuple[tuple[tuple[int, ...], ...], ...]  # per network input: its (min, opt, max) shapes


def settings_for(library: TensorRTLibrary) -> BuildSettings:
    """TensorRT-RTX builds ahead of time for RTX_TARGETS (no GPU, no tactic timing); TensorRT for
    the GPU it builds on."""
    if library is TENSORRT_RTX:
        return BuildSettings(WORKSPACE_BYTES, compute_capabilities=RTX_TARGETS, timing_cache=False)
    return BuildSettings(WORKSPACE_BYTES)


def input_shapes(spec: dict, profile: Profile) -> InputShapes:
    """The (min, opt, max) NHWC shapes of every input of the artifact's graph under `profile`."""
    return tuple(profile.input_shapes(fixed_size(spec)) for _ in spec["inputs"])


def ahead_of_time(settings: BuildSettings) -> bool:
    """A build for listed targets needs no GPU; one without targets builds for the GPU it runs on."""
    return bool(settings.compute_capabilities)


def choose_attention(requested: str | None, artifact: str | os.PathLike) -> tuple[str, str]:
    """(mode, why): `requested` if given, else the plugin when its library is built or buildable
    here, else TensorRT's native attention. Checks that the artifact has the mode's graph."""
    if requested is not None and requested not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, not {requested!r}")
    if requested is None:
        usable, why = plugin_status()
        mode, reason = ("plugin", why) if usable else ("native", f"no plugin: {why}")
    else:
        mode, reason = requested, "as asked"
    graph = Path(artifact) / GRAPHS[mode]
    if not graph.is_file():
        raise PlanMismatchError(f"{graph} is missing: the artifact predates it; export it again with `iqart export`")
    return mode, reason


def cuda_device(device: str | None, backend: str = TENSORRT.name):
    """The torch CUDA device to run on; TensorRTUnavailableError without a GPU."""
    import torch

    if not torch.cuda.is_available():
        hint = (
            " (`iqart build --backend tensorrt-rtx` builds one without a GPU)" if backend == TENSORRT_RTX.name else ""
        )
        raise TensorRTUnavailableError(
            f"the {backend} backend runs plans on a CUDA GPU; torch.cuda.is_available() is False{hint}"
        )
    device = torch.device(device or "cuda")
    if device.type != "cuda":
        raise ValueError(f"the {backend} backend runs on CUDA devices, not {device}")
    return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())


def gpu_identity(device) -> tuple[str, str]:
    """(name, compute capability "9.0") of a torch CUDA device."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def environment(
    artifact: Path, library: TensorRTLibrary, attention: str, settings: BuildSettings, device=None
) -> Environment:
    """What a plan for this artifact's `attention` graph is specific to. TensorRT: the GPU
    `device`; TensorRT-RTX: its targets (no GPU). For the plugin graph this loads the plugin
    library, whose build key is part of the plan's key."""
    trt = library.load()
    if ahead_of_time(settings):
        gpu, sm = AHEAD_OF_TIME, target_capabilities(settings.compute_capabilities)
    else:
        gpu, sm = gpu_identity(device)
    graph = GRAPHS[attention]
    plugin = load_plugin(library).key if attention == "plugin" else NO_PLUGIN
    return Environment(
        sha256_file(artifact / graph), gpu, sm, trt.__version__, graph, plugin, library.name, settings.digest()
    )


class _Logger:
    """One logger per TensorRT library and process (TensorRT expects a single one)."""

    instances: dict = {}

    @classmethod
    def get(cls, trt):
        if trt.__name__ not in cls.instances:
            cls.instances[trt.__name__] = trt.Logger(trt.Logger.WARNING)
        return cls.instances[trt.__name__]


def build_plan(
    artifact: str | os.PathLike,
    profile: Profile,
    device: str | None = None,
    attention: str | None = None,
    library: TensorRTLibrary = TENSORRT,
) -> tuple[Path, PlanKey]:
    """Build (or find already built) the plan for exactly `profile`; returns its path and key.
    TensorRT builds on the GPU `device`; TensorRT-RTX on any machine."""
    trt = library.load()
    artifact = Path(artifact)
    settings = settings_for(library)
    shapes = input_shapes(read_spec(artifact), profile)
    cuda = None if ahead_of_time(settings) else cuda_device(device, library.name)
    attention, _ = choose_attention(attention, artifact)
    env = environment(artifact, library, attention, settings, cuda)
    cache = PlanCache(artifact)
    key = PlanKey(env, profile)
    with exclusive_lock(cache.directory / ".build.lock"):  # one build per artifact at a time
        if cache.record_path(key).is_file() and cache.plan_path(key).is_file():  # built while we waited
            return cache.plan_path(key), key
        timing_path = cache.timing_cache_path(env) if settings.timing_cache else None
        if cuda is None:
            plan, timing, io = _build(trt, artifact / env.graph, settings, shapes, timing_path)
        else:
            import torch

            with torch.cuda.device(cuda):
                plan, timing, io = _build(trt, artifact / env.graph, settings, shapes, timing_path)
        path = cache.store(key, plan, io)
        if timing is not None:
            cache.store_timing_cache(env, timing)
    return path, key


def cached_or_built_plan(
    artifact: str | os.PathLike,
    profile: Profile,
    device: str | None = None,
    attention: str | None = None,
    library: TensorRTLibrary = TENSORRT,
    build: bool = True,
) -> tuple[PlanKey, Environment]:
    """The narrowest cached plan whose profile covers `profile` (a plan built for batches 1..32
    serves a request for 8), else, if `build`, a new plan for exactly `profile`; with the
    environment it was checked against. PlanMismatchError says what each cached plan lacks."""
    artifact = Path(artifact)
    settings = settings_for(library)
    cuda = None if ahead_of_time(settings) else cuda_device(device, library.name)
    attention, _ = choose_attention(attention, artifact)
    env = environment(artifact, library, attention, settings, cuda)
    cache = PlanCache(artifact)
    key = cache.select(env, profile)
    if key is None:
        if not build:
            raise PlanMismatchError(cache.explain_missing(env, profile))
        _, key = build_plan(artifact, profile, device, attention, library)
    return key, env


def _build(
    trt, graph: Path, settings: BuildSettings, shapes: InputShapes, timing_path: Path | None
) -> tuple[bytes, bytes | None, list]:
    """Parse `graph` (the plugin already registered if it has plugin nodes) and build a plan.
    Returns the plan, the updated timing cache (or None) and the network's inputs and outputs."""
    logger = _Logger.get(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_flags(trt.NetworkDefinitionCreationFlag, settings.network_flags))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{trt.__name__} could not parse {graph}: {errors}")
    config = _configure(trt, builder, network, settings, shapes)
    timing_cache = None
    if timing_path is not None:
        timing_cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"{trt.__name__} failed to build a plan from {graph} (see its log above)")
    timing = bytes(config.get_timing_cache().serialize()) if timing_cache is not None else None
    return bytes(plan), timing, network_io(network, shapes)


def _flags(enum, names: tuple[str, ...]) -> int:
    return sum(1 << int(getattr(enum, name)) for name in names)


def _configure(trt, builder, network, settings: BuildSettings, shapes: InputShapes):
    """The builder config for `settings` and the profile's `shapes`, and nothing else."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    for name in settings.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if settings.compute_capabilities:
        config.num_compute_capabilities = len(settings.compute_capabilities)
        for index, name in enumerate(settings.compute_capabilities):
            config.set_compute_capability(getattr(trt.ComputeCapability, name), index)
    optimisation = builder.create_optimization_profile()
    if network.num_inputs != len(shapes):
        raise RuntimeError(f"the network has {network.num_inputs} inputs, the profile {len(shapes)}")
    for index, input_range in enumerate(shapes):
        optimisation.set_shape(network.get_input(index).name, *input_range)
    config.add_optimization_profile(optimisation)
    return config


def network_io(network, shapes: InputShapes) -> list[dict]:
    """The built network's inputs and outputs (name, dtype, dims with -1 dynamic, and each
    input's profile), kept in the plan's record: what a C++ user binds, readable without a GPU."""
    io = []
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        io.append(
            {
                "name": tensor.name,
                "mode": "input",
                "dtype": tensor.dtype.name,
                "shape": list(tensor.shape),
                "profile": [list(shape) for shape in shapes[index]],
            }
        )
    for index in range(network.num_outputs):
        tensor = network.get_output(index)
        io.append({"name": tensor.name, "mode": "output", "dtype": tensor.dtype.name, "shape": list(tensor.shape)})
    return io
