"""Every model's forward pass can be captured as a CUDA graph: after a warm-up pass it makes no
tensor from host data, moves nothing between devices and waits for nothing on the host.

CUDA refuses a stream synchronisation while a graph is being captured, and a host-to-device copy
is one; so is `.item()`. The GPU benchmarks capture the whole forward (iqart bench's
torch-fp16-fused-graph runner, the SDPA graph of benchmarks/bench_fused_attention.py), so any of
these in a model breaks them on the GPU. This test finds them on the CPU: it runs the forward the
runners capture (uint8 NHWC -> preprocessing -> model) under a mode that sees every torch call,
once to warm up (tables made once per size may be made then), then records.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from iqart.train.models.bpclip import sinusoidal_2d
from iqart.train.models.preprocess import CLIP_MEAN, uint8_nhwc_to_model_input
from iqart.train.models.zoo import build_model, get_card, list_models

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
MAKES_FROM_HOST = {torch.tensor, torch.as_tensor, torch.asarray, torch.frombuffer, Tensor.new_tensor}
WAITS_FOR_HOST = {
    Tensor.item,
    Tensor.tolist,
    Tensor.numpy,
    Tensor.__bool__,
    Tensor.__int__,
    Tensor.__float__,
    Tensor.__index__,
    Tensor.nonzero,
    torch.nonzero,
    Tensor.unique,
    torch.unique,
    Tensor.masked_select,
    torch.masked_select,
    Tensor.equal,
    torch.equal,
    torch.allclose,
    Tensor.allclose,
}
MOVES = {Tensor.to, Tensor.cuda, Tensor.cpu, Tensor.pin_memory}


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


class HostTraffic(TorchFunctionMode):
    """Records what a CUDA graph capture cannot hold: tensors made from host data, tensors that
    reach torch from outside it (torch.from_numpy is not a torch call: its tensor shows up as an
    operand nobody made), moves between devices, and calls that wait for the device.

    Warm-up (`recording` False) only learns the tensors that exist: parameters, inputs and
    everything made then, tables cached for later passes included."""

    def __init__(self, known: list[Tensor]):
        super().__init__()
        self.known = {id(t): t for t in known}  # strong references keep every id unique
        self.recording = False
        self.events: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        operands = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        if self.recording:
            if func in MAKES_FROM_HOST:
                self.events.append(f"{_name(func)}: a tensor made from host data")
            if func in WAITS_FOR_HOST:
                self.events.append(f"{_name(func)}: waits for the device")
            for tensor in operands:
                if id(tensor) not in self.known:
                    self.events.append(f"{_name(func)}: an operand made outside torch (e.g. torch.from_numpy)")
        result = func(*args, **kwargs)
        if self.recording:
            if func in MOVES and isinstance(result, Tensor) and result.device != args[0].device:
                self.events.append(f"{_name(func)}: moves {args[0].device} -> {result.device}")
            if func is Tensor.copy_ and args[0].device != args[1].device:
                self.events.append(f"copy_: copies {args[1].device} -> {args[0].device}")
        else:
            self.known.update((id(t), t) for t in operands)
        self.known.update((id(t), t) for t in tree_leaves(result) if isinstance(t, Tensor))
        return result


def host_traffic(forward, inputs: list[Tensor], known: list[Tensor]) -> list[str]:
    """What `forward(*inputs)` does that a capture cannot hold, on its second call."""
    with torch.inference_mode(), HostTraffic([*known, *inputs]) as mode:
        forward(*inputs)
        mode.recording = True
        forward(*inputs)
    return mode.events


def captured_forward(model: torch.nn.Module, dtype: torch.dtype | None):
    """What the GPU runners capture (engine/bench/runners.py, CudaGraphRunner._forward): the
    preprocessing and the model under autocast, from uint8 NHWC tensors already on the device."""

    def forward(*images: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return model(*(uint8_nhwc_to_model_input(x) for x in images))

    return forward


@pytest.fixture(scope="module")
def models():
    return {name: build_model(name, seed=3).eval() for name in list_models()}


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", list_models())
def test_forward_holds_nothing_a_cuda_graph_cannot(models, name, precision, rng):
    model = models[name]
    count = 2 if get_card(name).task == "fr" else 1
    images = [torch.from_numpy(rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)) for _ in range(count)]
    known = [*model.parameters(), *model.buffers()]
    events = host_traffic(captured_forward(model, PRECISIONS[precision]), images, known)
    assert events == [], f"{name} {precision}: " + "; ".join(sorted(set(events)))


class _HostCopies(torch.nn.Module):
    """Two forms a capture cannot hold, as the models could write them: CLIP's mean made from a
    Python tuple on each pass, and BPCLIP's positional table made in NumPy and moved on each pass."""

    def forward(self, images: Tensor) -> Tensor:
        x = images.float().permute(0, 3, 1, 2)
        mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        table = sinusoidal_2d(x.shape[2], x.shape[3], 4, device=x.device).to(x.dtype)
        return (x - mean).mean() + table.sum()


@pytest.mark.parametrize(
    ("forward", "expected"),
    [
        (_HostCopies(), ["tensor: a tensor made from host data", "an operand made outside torch"]),
        (lambda x: x.float().sum().item(), ["item: waits for the device"]),
        (lambda x: x.float().to("meta").sum(), ["to: moves cpu -> meta"]),
        (lambda x: bool(x.float().sum() > 0), ["__bool__: waits for the device"]),
    ],
)
def test_the_recorder_sees_each_kind_of_host_traffic(forward, expected):
    images = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    events = " ".join(host_traffic(forward, [images], []))
    assert all(part in events for part in expected), events


def test_the_recorder_lets_through_a_table_made_in_warm_up():
    """A table made on the first pass and reused is what capture allows (made before it starts)."""
    cache: dict[tuple, Tensor] = {}

    def forward(x: Tensor) -> Tensor:
        if x.shape not in cache:
            cache[x.shape] = torch.from_numpy(np.ones(x.shape[1:], np.float32))
        return x.float() + cache[x.shape]

    assert host_traffic(forward, [torch.zeros(1, 4, 4, 3, dtype=torch.uint8)], []) == []
