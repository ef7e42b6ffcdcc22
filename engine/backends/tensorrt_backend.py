"""The tensorrt backend: FP16 plans built from one of an artifact's TensorRT graphs, run on a CUDA stream.

Two ways to run attention (`attention=`):
- "plugin": model.trt.onnx, each attention core one FusedCrossAttention node served by our
  plugin library (iqart.engine.backends.plugin), registered before parsing and before deserialising;
- "native": model.trt-native.onnx, each core an ONNX `Attention` op that TensorRT's parser maps
  to its own fused attention (IAttention). Needs nothing but `pip install tensorrt`.
The default is the plugin when its library is built or can be built here (TensorRT's headers
present), else native; the backend says which and why (`attention_reason`).

Written against the TensorRT 11 API: networks are strongly typed (the precision lives in the
graph: fp16 with fp32 islands; there is no FP16 builder flag), tensors are addressed by name
(`set_input_shape`, `set_tensor_address`) and run with `execute_async_v3`. Device buffers are
torch CUDA tensors; no pycuda. Plans are cached in the artifact (iqart.engine.backends.plan_cache),
keyed by graph, GPU, TensorRT, plugin build and profile, and built on first use unless told not
to. TensorRT is imported only inside functions, so the rest of iqart works without it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from iqart.engine.backends.feeds import graph_feeds
from iqart.engine.backends.plan_cache import (
    DEFAULT_MAX_SIDE,
    GRAPHS,
    NO_PLUGIN,
    Environment,
    PlanCache,
    PlanKey,
    PlanMismatchError,
    Profile,
    fixed_size,
    profile_for,
)
from iqart.engine.backends.plugin import load_plugin, plugin_status
from iqart.engine.backends.tensorrt_import import TensorRTUnavailableError, import_tensorrt
from iqart.engine.filelock import exclusive_lock
from iqart.export.spec_files import read_spec, sha256_file

__all__ = ["ATTENTION_MODES", "TensorRTBackend", "TensorRTUnavailableError", "build_plan", "choose_attention",
           "import_tensorrt"]
ATTENTION_MODES = tuple(GRAPHS)  # ("plugin", "native")
WORKSPACE_BYTES = 4 << 30


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


def cuda_device(device: str | None) -> torch.device:
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("the tensorrt backend needs a CUDA GPU; torch.cuda.is_available() is False")
    device = torch.device(device or "cuda")
    if device.type != "cuda":
        raise ValueError(f"the tensorrt backend runs on CUDA devices, not {device}")
    return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())


def environment(artifact: Path, device: torch.device, trt_version: str, attention: str) -> Environment:
    """What a plan for this artifact's `attention` graph on `device` is specific to. For the
    plugin graph this loads the plugin library, whose build key is part of the plan's key."""
    major, minor = torch.cuda.get_device_capability(device)
    graph = GRAPHS[attention]
    plugin = load_plugin().key if attention == "plugin" else NO_PLUGIN
    return Environment(sha256_file(artifact / graph), torch.cuda.get_device_name(device), f"{major}.{minor}",
                       trt_version, graph, plugin)


class _Logger:
    """One TensorRT logger per process (TensorRT expects a single one)."""

    instance = None

    @classmethod
    def get(cls, trt):
        if cls.instance is None:
            cls.instance = trt.Logger(trt.Logger.WARNING)
        return cls.instance


def build_plan(artifact: str | os.PathLike, profile: Profile, device: str | None = None,
               attention: str | None = None) -> Path:
    """Build (or find already built) the plan for `profile` on this GPU; returns its path."""
    trt = import_tensorrt()
    artifact = Path(artifact)
    cuda = cuda_device(device)
    attention, _ = choose_attention(attention, artifact)
    env = environment(artifact, cuda, trt.__version__, attention)
    cache = PlanCache(artifact)
    key = PlanKey(env, profile)
    with exclusive_lock(cache.directory / ".build.lock"):  # one build per artifact at a time
        if cache.record_path(key).is_file() and cache.plan_path(key).is_file():  # built while we waited
            return cache.plan_path(key)
        with torch.cuda.device(cuda):
            plan, timing = _build(trt, artifact / env.graph, read_spec(artifact), profile, cache.timing_cache_path(env))
        path = cache.store(key, plan)
        cache.store_timing_cache(env, timing)
    return path


def _build(trt, graph: Path, spec: dict, profile: Profile, timing_path: Path) -> tuple[bytes, bytes]:
    """Parse `graph` (the plugin already registered if it has plugin nodes) and build a plan."""
    logger = _Logger.get(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 11: every network is strongly typed
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {graph}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    optimisation = builder.create_optimization_profile()
    shapes = profile.input_shapes(fixed_size(spec))
    for i in range(network.num_inputs):
        optimisation.set_shape(network.get_input(i).name, *shapes)
    config.add_optimization_profile(optimisation)
    timing_cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build a plan from {graph} (see its log above)")
    return bytes(plan), bytes(config.get_timing_cache().serialize())


class TensorRTBackend:
    """Scores uint8 RGB NHWC batches with a cached FP16 plan (built on first use if `build`).

    `attention`: "plugin", "native" or None (the plugin if usable here, else native; see
    `attention` and `attention_reason` after construction)."""

    name = "tensorrt"
    precision = "fp16"

    def __init__(self, artifact: str | os.PathLike, device: str | None = None, batch_size: int = 8,
                 max_side: int = DEFAULT_MAX_SIDE, build: bool = True, attention: str | None = None):
        trt = import_tensorrt()
        self.artifact = Path(artifact)
        self.device = cuda_device(device)
        self.attention, self.attention_reason = choose_attention(attention, self.artifact)
        print(f"tensorrt: {self.attention} attention ({self.attention_reason})", file=sys.stderr)
        env = environment(self.artifact, self.device, trt.__version__, self.attention)
        self.profile = profile_for(read_spec(self.artifact), (1, batch_size, batch_size), max_side)
        cache = PlanCache(self.artifact)
        key = cache.select(env, self.profile)
        if key is None:
            if not build:
                raise PlanMismatchError(cache.explain_missing(env, self.profile))
            build_plan(self.artifact, self.profile, str(self.device), self.attention)
            key = cache.select(env, self.profile)
        self.plan_path = cache.plan_path(key)
        self.profile = key.profile  # the plan's own range, which may be wider than asked
        with torch.cuda.device(self.device):
            self.engine = trt.Runtime(_Logger.get(trt)).deserialize_cuda_engine(cache.load(key, env))
            if self.engine is None:
                raise PlanMismatchError(f"TensorRT could not deserialise {self.plan_path}; delete it and rebuild")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if self.engine.get_tensor_dtype("score") != trt.DataType.FLOAT:
            raise PlanMismatchError(f"{self.plan_path}: output 'score' is not float32")

    takes_cuda_tensors = True  # a GPU-decoded batch is fed where it lies (no trip through host memory)

    def __call__(self, images: np.ndarray | torch.Tensor, references: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        batch, height, width = images.shape[:3]
        problem = self.profile.accepts(batch, height, width)
        if problem:
            raise ValueError(problem)
        feeds = graph_feeds(self.input_names, images, references)
        with torch.cuda.device(self.device):
            # tensors made on the caller's stream (GPU decoding) must be complete before ours reads them
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            inputs = {name: torch.as_tensor(array, device=self.device) for name, array in feeds.items()}
            scores = torch.empty(batch, dtype=torch.float32, device=self.device)
            for name, tensor in inputs.items():
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise ValueError(f"{self.plan_path} does not accept {name} of shape {tuple(tensor.shape)}")
                self.context.set_tensor_address(name, tensor.data_ptr())
            self.context.set_tensor_address("score", scores.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run {self.plan_path} on a batch of {batch}x{height}x{width}")
            return scores.cpu().numpy()  # synchronises with the stream; the inputs lived until then
