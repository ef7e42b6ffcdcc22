"""How well each attribute of the demo models ranks the levels of held-out degradations.

An attribute means something if it falls as its degradation gets stronger. For each model
(QualiCLIP: its 7 antonym-pair probabilities and the score, their mean; BPCLIP-NR: its six
dimension scores and the score) and each degradation type of the blur, compression and noise
groups (train/data/degradations.py, 5 levels each), on crops of the photos both demo trainings
held out (`holdout_images` in train/configs/), the SRCC between the attribute and -level:

- "per crop": over the 5 levels of one crop, averaged over the crops (does the attribute order
  the levels of one content?), the measure `iqart eval --synthetic` reports for the score;
- "pooled": over all crops and levels of the type together (does it also compare contents?).

An attribute that does not change over the levels counts 0, as train.evaluate counts a score.
Crops, degradations and their random draws follow train.evaluate.synthetic_ranking exactly
(same seed, same order), so the score rows equal `iqart eval --synthetic` for the same crop,
crops per image and seed. Measured as it is; nothing here is chosen per attribute.

    python benchmarks/attribute_srcc.py                  # table to stdout, JSON to benchmarks/results/
    python benchmarks/attribute_srcc.py --crops-per-image 1 --json /tmp/a.json   # quicker
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import tomllib
import torch
from scipy import stats

from iqart.train.data.degradations import GROUPS, NUM_LEVELS, degrade_levels
from iqart.train.data.pristine import load_pristine, quantize, random_crop
from iqart.train.evaluate import _srcc
from iqart.train.models.bpclip import BPCLIP
from iqart.train.models.preprocess import normalize_float
from iqart.train.models.quality_maps import bpclip_dimension_count
from iqart.train.models.zoo import load_model

MODELS = ("qualiclip-tiny", "bpclip-nr-tiny")
KINDS = GROUPS["blur"] + GROUPS["compression"] + GROUPS["noise"]
CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "attribute-srcc.json"


def held_out_photos(models: tuple[str, ...] = MODELS) -> list[str]:
    """The photos every named model's training config held out (the same two for both)."""
    held = None
    for name in models:
        with open(CONFIGS / f"{name}.toml", "rb") as file:
            photos = tomllib.load(file)["holdout_images"]
        held = photos if held is None else [photo for photo in held if photo in photos]
    return held


@torch.no_grad()
def score_and_attributes(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 16
) -> tuple[list[str], np.ndarray]:
    """Names ("score" first) and values (N, 1 + attributes) of float images in [0, 1]: the
    score and, for QualiCLIP, the 7 pair probabilities; for BPCLIP, the six dimension scores."""
    names = model.attribute_names()
    keep = bpclip_dimension_count(model) if isinstance(model, BPCLIP) else len(names)
    rows = []
    for start in range(0, len(images), batch_size):
        score, attributes = model.explain_head(model.embed(normalize_float(images[start : start + batch_size])))
        rows.append(torch.cat([score[:, None], attributes[:, :keep]], dim=1))
    return ["score", *names[:keep]], torch.cat(rows).numpy()


def degraded_values(
    model: torch.nn.Module,
    images: dict[str, torch.Tensor],
    kinds: tuple[str, ...] = KINDS,
    crop: int = 224,
    crops_per_image: int = 4,
    seed: int = 1,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Names ("score" first) and, per type, the values (levels, crops, names) on its crops."""
    generator = torch.Generator().manual_seed(seed)
    crops = torch.stack(
        [random_crop(image, crop, generator) for image in images.values() for _ in range(crops_per_image)]
    )
    values = {}
    for kind in kinds:
        degraded = quantize(degrade_levels(crops, kind, generator))  # (levels, crops, 3, H, W)
        names, flat = score_and_attributes(model, degraded.reshape(-1, *crops.shape[1:]))
        values[kind] = flat.reshape(NUM_LEVELS, len(crops), len(names))
    return names, values


def ranking_rows(names: list[str], values: dict[str, np.ndarray]) -> list[dict]:
    """One row per (type, attribute): its per-crop and pooled SRCC with -level."""
    levels = np.arange(NUM_LEVELS, dtype=float)
    rows = []
    for kind, table in values.items():
        crops = table.shape[1]
        for index, name in enumerate(names):
            per_crop = [_srcc(table[:, i, index], levels) for i in range(crops)]
            pooled = _srcc(table[:, :, index].reshape(-1), np.repeat(levels, crops))
            summary = {"per_crop": float(np.mean(per_crop)), "pooled": pooled, "crops": crops}
            rows.append({"kind": kind, "attribute": name, **summary})
    return rows


def agreement_with_score(names: list[str], values: dict[str, np.ndarray]) -> dict[str, float]:
    """Each attribute's SRCC with the score over every degraded crop of every type: near 1, the
    attribute orders images as the score does and adds little beside it."""
    pooled = np.concatenate([table.reshape(-1, len(names)) for table in values.values()])
    return {name: float(stats.spearmanr(pooled[:, index], pooled[:, 0]).statistic) for index, name in enumerate(names)}


def machine() -> dict:
    """The CPU's model name and the vector extensions that change float results and speed."""
    model, flags = platform.processor() or "unknown", set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
    extensions = [flag for flag in wanted if flag in flags]
    return {"cpu": model, "extensions": extensions, "threads": torch.get_num_threads(), "torch": torch.__version__}


def markdown_table(rows: list[dict], attributes: list[str]) -> str:
    """Types down, attributes across; each cell "per crop (pooled)"."""
    kinds = list(dict.fromkeys(row["kind"] for row in rows))
    cell = {(row["kind"], row["attribute"]): row for row in rows}
    lines = ["| type | " + " | ".join(attributes) + " |", "|---|" + "---|" * len(attributes)]
    for kind in kinds:
        values = [cell[kind, name] for name in attributes]
        lines.append(f"| {kind} | " + " | ".join(f"{v['per_crop']:.2f} ({v['pooled']:.2f})" for v in values) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop", type=int, default=224, help="crop side in pixels (default 224)")
    parser.add_argument("--crops-per-image", type=int, default=4, help="crops of each held-out photo (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="seed of crops and degradations (default 1)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"JSON output (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    photos = held_out_photos()
    images = load_pristine("skimage:" + ",".join(photos))
    report = {
        "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "photos": photos,
        "crop": args.crop,
        "crops_per_image": args.crops_per_image,
        "seed": args.seed,
        "models": {},
    }
    for name in MODELS:
        started = time.perf_counter()
        names, values = degraded_values(load_model(name), images, KINDS, args.crop, args.crops_per_image, args.seed)
        rows, agreement = ranking_rows(names, values), agreement_with_score(names, values)
        seconds = time.perf_counter() - started
        report["models"][name] = {"attributes": names, "rows": rows, "agreement_with_score": agreement}
        report["models"][name]["seconds"] = seconds
        print(f"\n{name} ({seconds:.0f} s): SRCC with -level, per crop (pooled)")
        print(markdown_table(rows, names))
        pairs = ", ".join(f"{attribute} {value:.2f}" for attribute, value in agreement.items())
        print(f"SRCC with the score over every degraded crop: {pairs}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n-> {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
