"""`iqart explain`'s work: each image decoded as scoring decodes it, the model's quality maps
(iqart.train.models.quality_maps), and per image the raw maps (.npy) and a heat-map overlay (.png).

The map is of what the model saw: the image is decoded exactly as `iqart score` decodes it
(batch_scoring.decode_job: EXIF, ICC, the model's resize policy, a JPEG bound for a fixed size
decoded reduced), so the overlay is drawn on the model's input, which for a `fixed` policy is
the resized image. The .npy holds the raw grid, float32 (channels, h, w) at
1/32 of that input, one channel per name in explain.json ("score" first); the overlay shows it
upsampled bilinearly to the input's size (cell centres on the pixels they stand for), which adds
nothing the grid does not hold, so only the grid is kept.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqart.engine.pipeline.batch_scoring import decode_job
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.train.models.preprocess import uint8_nhwc_to_model_input
from iqart.train.models.quality_maps import MAP_STRIDE, QualityMaps, quality_maps
from iqart.train.models.zoo import ModelCard
from iqart.train.storage import write_atomic, write_json_atomic

# Diverging, readable by the common colour-vision deficiencies: red where a map is low (worse),
# blue where it is high (better). Every map channel lies in [0, 1], so the scale is fixed: the
# same colour means the same value in every overlay.
COLORMAP = "RdYlBu"
OVERLAY_ALPHA = 0.55  # the map's share of each overlay pixel; the image shows through the rest
SUMMARY_FILE = "explain.json"
MAP_SUFFIX = ".map.npy"
OVERLAY_SUFFIX = ".overlay.png"


def output_stem(file: Path, root: Path) -> Path:
    """Where an image's outputs go inside the output folder, without suffix: its path below the
    folder it was found in (a file named on the command line: its name), suffix dropped."""
    return file.relative_to(root).with_suffix("")


def clashing_stems(files: list[tuple[Path, Path]]) -> list[str]:
    """Output stems that two or more inputs would share (a.jpg and a.png, or two folders' a.jpg)."""
    seen: dict[Path, list[Path]] = {}
    for file, root in files:
        seen.setdefault(output_stem(file, root), []).append(file)
    return [f"{stem} ({', '.join(map(str, sources))})" for stem, sources in seen.items() if len(sources) > 1]


def model_input(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> the CLIP-normalised (1, 3, H, W) tensor the models take."""
    return uint8_nhwc_to_model_input(torch.from_numpy(image)[None].to(device))


def explain_image(
    model: torch.nn.Module, card: ModelCard, path: Path, reference: Path | None = None
) -> tuple[np.ndarray, QualityMaps]:
    """What the model saw of one image file (uint8 RGB) and its maps (full-reference models: the
    image against its `reference`, decoded as `iqart score` decodes a pair)."""
    image, reference_image = decode_job(ScoreJob(path, reference), card.resize)
    device = next(model.parameters()).device
    references = None if reference_image is None else model_input(reference_image, device)
    return image, quality_maps(model, model_input(image, device), references)


def upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (h, w) map bilinearly upsampled to (height, width): cell (i, j) lands on the centre of
    the input region it stands for, the edges hold the outermost cells' values."""
    tensor = torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay(image: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A heat-map overlay (H, W, 3) uint8 of a map in [0, 1] on the image the model saw."""
    from matplotlib import colormaps

    height, width = image.shape[:2]
    colours = colormaps[COLORMAP](np.clip(upsample(grid, height, width), 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - OVERLAY_ALPHA) * image.astype(np.float32) + OVERLAY_ALPHA * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def _encoded(save: Callable[[io.BytesIO], None]) -> bytes:
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def write_outputs(out_dir: Path, stem: Path, maps: QualityMaps, image: np.ndarray, per_attribute: bool) -> list[Path]:
    """One image's raw maps (<stem>.map.npy) and its score channel's overlay
    (<stem>.overlay.png); with `per_attribute`, one overlay per attribute too
    (<stem>.<name>.overlay.png). `stem`: relative to `out_dir`. Returns the files written."""
    names, maps = maps.names, maps.maps[0].float().cpu().numpy()
    base = out_dir / stem
    written = [base.with_name(base.name + MAP_SUFFIX)]
    base.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(written[0], _encoded(lambda buffer: np.save(buffer, maps, allow_pickle=False)))
    channels = range(len(names)) if per_attribute else range(1)
    for channel in channels:
        name = "" if channel == 0 else "." + names[channel]
        target = base.with_name(base.name + name + OVERLAY_SUFFIX)
        picture = Image.fromarray(overlay(image, maps[channel]))
        write_atomic(target, _encoded(lambda buffer, picture=picture: picture.save(buffer, format="PNG")))
        written.append(target)
    return written


def write_summary(out_dir: Path, card: ModelCard, names: list[str], rows: list[dict], errors: list[dict]) -> Path:
    """explain.json: the model, what each .npy channel is, and per image its score and files."""
    summary = {
        "model": card.name,
        "channels": names,
        "stride": MAP_STRIDE,
        "layout": "float32 (channels, h, w); cell (i, j) stands for the model input's pixels "
        f"around ({MAP_STRIDE} i + {MAP_STRIDE // 2}, {MAP_STRIDE} j + {MAP_STRIDE // 2})",
        "colormap": f"{COLORMAP}, fixed range 0..1 (red low, blue high)",
        "images": rows,
        "errors": errors,
    }
    path = out_dir / SUMMARY_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, summary)
    return path
