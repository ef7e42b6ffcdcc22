"""Reading weight files and matching them to a model, with errors that say what is wrong.

Files are read with `torch.load(weights_only=True)`: a checkpoint is data, never code.
Accepted layouts are detected from the keys:
- QualiCLIP's official release: `clip_model.<CLIP key>` for every tensor plus `prompts_features`;
- a plain open_clip / OpenAI CLIP state dict (`visual.*`, `transformer.*`, `token_embedding.*`);
- iqart's own checkpoints: {"model": name, "state_dict": {...}} as written by `save_checkpoint`.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

MAX_LISTED_KEYS = 8


class CheckpointError(ValueError):
    """A weight file cannot be read or does not fit the model; the message names file and keys."""


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model_state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: not a state dict (found {type(obj).__name__})")
    tensors = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    return tensors


def _is_torchscript_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weight file, on the CPU, with `module.` prefixes and wrappers removed.

    OpenAI's released `RN50.pt` is a TorchScript archive; its tensors are read through
    `torch.jit.load`, which runs no Python code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weight file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    if _is_torchscript_archive(path):
        try:
            return _unwrap(torch.jit.load(str(path), map_location="cpu").state_dict(), path)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: unreadable TorchScript archive ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or non-torch files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or wrong format?): {reason}"
        ) from None
    return _unwrap(obj, path)


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return shown + (f" and {more} more" if more > 0 else "")


def check_fit(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming every missing, unexpected and mis-shaped key."""
    missing = sorted(k for k in expected if k not in found)
    unexpected = sorted(k for k in found if k not in expected)
    mismatched = sorted(
        f"{k} (model {tuple(expected[k].shape)}, file {tuple(found[k].shape)})"
        for k in expected
        if k in found and found[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listed(mismatched)}")
    if problems:
        raise CheckpointError(f"{source}: does not fit the model: " + "; ".join(problems))


def select_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix`, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def is_clip_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    return "visual.conv1.weight" in state and "token_embedding.weight" in state


def is_official_qualiclip(state: Mapping[str, torch.Tensor]) -> bool:
    return "prompts_features" in state and any(k.startswith("clip_model.") for k in state)


def save_checkpoint(path: str | os.PathLike, model_name: str, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Write an iqart checkpoint atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        payload = {"model": model_name, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
