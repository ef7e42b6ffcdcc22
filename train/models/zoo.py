"""The model zoo: every model iqart can build, what it expects, and where its weights come from.

Weights are found in this order: an explicit file; the in-repo demo weights (tiny models, once
trained); the official release, downloaded only when online and cached under $IQART_HOME.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from iqart.train.models.bpclip import BPCLIP, BPCLIPConfig
from iqart.train.models.checkpoints import read_state_dict
from iqart.train.models.qualiclip import QualiCLIP
from iqart.train.storage import iqart_home

DEMO_WEIGHTS_DIR = Path(__file__).parents[1] / "weights"  # train/weights, package data of iqart.train
QUALICLIP_URL = "https://github.com/miccunifi/QualiCLIP/releases/download/weights/qualiclip.pth"
DOWNLOAD_TIMEOUT_S = 20


class MissingWeightsError(RuntimeError):
    """No weights could be found for a model; the message says how to get them."""


@dataclass(frozen=True)
class ResizePolicy:
    """How images are sized before scoring: `native`, `short_side` (N) or `fixed` ([H, W])."""

    kind: str
    size: tuple[int, ...] = ()

    def __post_init__(self):
        expected = {"native": 0, "short_side": 1, "fixed": 2}
        if self.kind not in expected or len(self.size) != expected[self.kind]:
            raise ValueError(f"bad resize policy {self.kind!r} {self.size}")

    def to_json(self) -> dict:
        if self.kind == "native":
            return {"native": True}
        return {self.kind: self.size[0] if self.kind == "short_side" else list(self.size)}


@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str  # "qualiclip" or "bpclip"
    task: str  # "nr" or "fr"
    backbone: str
    resize: ResizePolicy
    description: str
    score_range: tuple[float, float] = (0.0, 1.0)
    higher_better: bool = True
    official_url: str | None = None
    bpclip: BPCLIPConfig | None = field(default=None, repr=False)

    @property
    def demo_weights(self) -> Path:
        """Where this model's in-repo demo weights live (they may not exist yet)."""
        return DEMO_WEIGHTS_DIR / f"{self.name}.pt"

    @property
    def lower_better(self) -> bool:
        return not self.higher_better


_TINY_BPCLIP = dict(backbone="tiny", d_model=128, num_heads=2, ffn_dim=256, gate_hidden=16, head_hidden=128)
_FIXED_224 = ResizePolicy("fixed", (224, 224))
_NATIVE = ResizePolicy("native")

MODELS: dict[str, ModelCard] = {
    card.name: card
    for card in (
        ModelCard(
            "qualiclip",
            "qualiclip",
            "nr",
            "RN50",
            _NATIVE,
            "QualiCLIP (Agnolucci et al.), opinion-unaware NR-IQA, CLIP RN50, native resolution",
            official_url=QUALICLIP_URL,
        ),
        ModelCard(
            "bpclip-nr",
            "bpclip",
            "nr",
            "RN50",
            _FIXED_224,
            "BPCLIP (Song et al.) no-reference, CLIP RN50; iqart's reimplementation",
            bpclip=BPCLIPConfig(task="nr"),
        ),
        ModelCard(
            "bpclip-fr",
            "bpclip",
            "fr",
            "RN50",
            _FIXED_224,
            "BPCLIP (Song et al.) full-reference, CLIP RN50; iqart's reimplementation",
            bpclip=BPCLIPConfig(task="fr"),
        ),
        ModelCard(
            "qualiclip-tiny",
            "qualiclip",
            "nr",
            "tiny",
            _NATIVE,
            "QualiCLIP on a tiny CLIP ResNet: demo weights trained by iqart on a CPU",
        ),
        ModelCard(
            "bpclip-nr-tiny",
            "bpclip",
            "nr",
            "tiny",
            _FIXED_224,
            "BPCLIP-NR on a tiny CLIP ResNet: demo weights trained by iqart on a CPU",
            bpclip=BPCLIPConfig(task="nr", **_TINY_BPCLIP),
        ),
        ModelCard(
            "bpclip-fr-tiny",
            "bpclip",
            "fr",
            "tiny",
            _FIXED_224,
            "BPCLIP-FR on a tiny CLIP ResNet: demo weights trained by iqart on a CPU",
            bpclip=BPCLIPConfig(task="fr", **_TINY_BPCLIP),
        ),
    )
}


def list_models() -> list[str]:
    return list(MODELS)


def get_card(name: str) -> ModelCard:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}") from None


def build_model(name: str, seed: int | None = 0) -> nn.Module:
    """The named model with random (seeded) weights, in eval mode."""
    card = get_card(name)
    if card.family == "qualiclip":
        return QualiCLIP(card.backbone, seed=seed).eval()
    return BPCLIP(card.bpclip, seed=seed).eval()


def _download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    os.replace(tmp, dest)
    return dest


def how_to_get_weights(card: ModelCard) -> str:
    lines = [f"no weights for model {card.name!r}."]
    lines.append("  - pass --weights FILE (a local checkpoint; the file is read, never downloaded)")
    if card.official_url:
        lines.append(f"  - or download the official weights: {card.official_url}")
    elif card.backbone == "tiny":
        lines.append(f"  - demo weights for this model are not in this checkout yet (expected at {card.demo_weights})")
    else:
        lines.append("  - the paper's weights are not public: train this model on MOS data (see README)")
    return "\n".join(lines)


def weights_status(card: ModelCard) -> str:
    """Where this model's weights would come from now, without downloading anything."""
    if card.demo_weights.is_file():
        return "demo weights (in package)"
    if card.official_url:
        cached = iqart_home() / "weights" / Path(card.official_url).name
        return f"official, cached ({cached})" if cached.is_file() else "official, downloaded on first use"
    return "none: train it or pass --weights"


_demo_notice_given: set[str] = set()


def _say_demo_weights(card: ModelCard) -> None:
    """Once per model and process: results from demo weights are not the paper's."""
    if card.name in _demo_notice_given:
        return
    _demo_notice_given.add(card.name)
    real = (
        f"; the paper's model is {card.name.removesuffix('-tiny')!r} with --weights qualiclip.pth ({QUALICLIP_URL})"
        if card.family == "qualiclip"
        else "; BPCLIP's paper weights are not public (see README)"
    )
    print(
        f"iqart: {card.name} runs on iqart's demo weights, trained on a CPU for demos and tests{real}", file=sys.stderr
    )


def resolve_weights(name: str, weights: str | os.PathLike | None = None) -> Path:
    """The weight file to use for a model, or MissingWeightsError saying how to get one."""
    card = get_card(name)
    if weights is not None:
        return Path(weights)
    if card.demo_weights.is_file():
        _say_demo_weights(card)
        return card.demo_weights
    if card.official_url:
        cached = iqart_home() / "weights" / Path(card.official_url).name
        if cached.is_file():
            return cached
        try:
            return _download(card.official_url, cached)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise MissingWeightsError(how_to_get_weights(card) + f"\n  (download failed: {exc})") from None
    raise MissingWeightsError(how_to_get_weights(card))


def load_model(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """The named model with its weights loaded, in eval mode."""
    path = resolve_weights(name, weights)
    model = build_model(name, seed=None)
    state = read_state_dict(path)
    model.load_weights(state, str(path))
    return model.eval()
