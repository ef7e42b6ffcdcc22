"""`Scorer`: one object that scores images with a zoo model on any backend.

    scorer = Scorer("qualiclip-tiny")                  # ONNX Runtime, exported on first use
    scorer.score(["a.jpg", pil_image, uint8_array])    # -> float32 scores, input order
    for row in scorer.score_files(["photos/"]): ...    # streaming rows; bad files are error rows

The ONNX Runtime and TensorRT backends run the model's artifact, exported once per weight file
into the cache (iqart.engine.artifact_cache); the torch backend runs the PyTorch reference directly.
Weights default to what the zoo resolves (in-repo demo weights, or the official release).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from iqart.engine.artifact_cache import cached_artifact, cached_int8_graph
from iqart.engine.backends.plan_cache import DEFAULT_MAX_SIDE
from iqart.engine.backends.registry import BACKENDS as BACKEND_TABLE
from iqart.engine.backends.registry import BackendOptions
from iqart.engine.backends.tensorrt_import import LIBRARIES as TENSORRT_LIBRARIES
from iqart.engine.backends.torch_backend import check_fused_precision
from iqart.engine.hardware import default_workers
from iqart.engine.pipeline.batch_scoring import DECODE_TIMEOUT_S, PipelineStats, score_jobs
from iqart.engine.pipeline.gpu_decode import GpuDecoder, gpu_decoder_for
from iqart.engine.pipeline.images import as_array, find_images
from iqart.engine.pipeline.inputs import as_rgb_images
from iqart.engine.pipeline.jobs import ScoreJob, ScoreRow, pair_with_references
from iqart.engine.sources.samples import IMAGE_EXTENSIONS
from iqart.engine.sources.shard_locations import list_shards
from iqart.engine.sources.shard_reader import sample_formats
from iqart.engine.sources.shard_scoring import NoRecord, score_shards
from iqart.train.models.prompts import attribute_names
from iqart.train.models.zoo import get_card, load_model

BACKENDS = tuple(BACKEND_TABLE)
PRECISION_CHOICES = {name: entry.precisions for name, entry in BACKEND_TABLE.items()}


class Scorer:
    """Scores images with `model` on `backend` ("onnxruntime", "openvino", "torch", "tensorrt" or "tensorrt-rtx").

    `device=None` uses a CUDA GPU when the backend can, else the CPU. `precision`: torch fp32
    (default), fp16 or bf16 autocast; onnxruntime fp32 (model.onnx, default), fp16, or int8 (CPU;
    calibrated on first use, see iqart.export.int8_artifact); openvino (CPU) fp32, bf16 or int8 (the
    same int8 graph); tensorrt and tensorrt-rtx fp16 only. `max_side` bounds native-resolution images for
    TensorRT's profile; `attention` ("plugin", "native" or "unfused") picks the TensorRT graph (default: the
    plugin when its library is built or buildable here, else native). `threads`: the CPU engines' intra-op
    threads (default: one per physical core), for processes that share the cores with others.
    """

    def __init__(
        self,
        model: str = "qualiclip",
        backend: str = "onnxruntime",
        device: str | None = None,
        batch_size: int = 8,
        *,
        weights: str | os.PathLike | None = None,
        precision: str | None = None,
        workers: int | None = None,
        fused_attention: bool = False,
        max_side: int = DEFAULT_MAX_SIDE,
        threads: int | None = None,
        attention: str | None = None,
    ):
        self.card = get_card(model)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
        precision = precision or PRECISION_CHOICES[backend][0]
        if precision not in PRECISION_CHOICES[backend]:
            raise ValueError(f"the {backend} backend runs {', '.join(PRECISION_CHOICES[backend])}, not {precision!r}")
        if fused_attention and backend != "torch":
            raise ValueError("fused_attention applies to the torch backend (the tensorrt backend always fuses)")
        if fused_attention:
            check_fused_precision(precision)  # before any device is touched
        if attention is not None and backend not in TENSORRT_LIBRARIES:
            raise ValueError("attention= picks the tensorrt backends' graph (plugin, native or unfused)")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.workers = workers or default_workers()
        self._decoders: dict[tuple, GpuDecoder | None] = {}
        self.artifact = None
        entry = BACKEND_TABLE[backend]
        entry.preflight(device)  # say what is missing before spending time on an export
        options = BackendOptions(batch_size, max_side, attention, threads, fused_attention)
        if entry.runs_artifact:
            self.artifact = cached_artifact(model, weights)
            if precision == "int8":
                cached_int8_graph(self.artifact)
            self.backend = entry.create(self.artifact, device, precision, options)
        else:
            self.backend = entry.create(load_model(model, weights), device, precision, options)

    name = property(lambda self: self.card.name)
    task = property(lambda self: self.card.task, doc='"nr" (no-reference) or "fr" (full-reference)')
    score_range = property(lambda self: self.card.score_range)
    higher_better = property(lambda self: self.card.higher_better)
    lower_better = property(lambda self: self.card.lower_better)
    resize = property(lambda self: self.card.resize)

    def __repr__(self) -> str:
        return (
            f"Scorer({self.name!r}, backend={self.backend.name!r}, device={str(self.backend.device)!r}, "
            f"precision={self.backend.precision!r}, batch_size={self.batch_size})"
        )

    @property
    def attribute_names(self) -> list[str]:
        """What `explain` returns per image, in order: QualiCLIP's 7 antonym pairs (named by the
        positive prompt; their mean is the score), BPCLIP's 6 quality dimensions then its 40
        adjective similarities ("adj_..."). spec.json says the same of the exported graphs."""
        return attribute_names(self.card.family)

    def score(self, images: Any, references: Any = None) -> np.ndarray:
        """float32 scores, one per image, in input order. `images`: a path, PIL image, array,
        tensor, or a list of them (arrays/tensors may be batches). Full-reference models take
        `references` in the same form and number. A bad image raises ImageError naming it."""
        return self._batched(images, references, explain=False)[0]

    def explain(self, images: Any, references: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), attributes (N, K)) float32, in input order, from the same run: column j of
        `attributes` is `attribute_names[j]`. Takes what `score` takes."""
        return self._batched(images, references, explain=True)

    def _batched(self, images: Any, references: Any, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        upright = as_rgb_images(images)
        refs = self._references(upright, references)
        inputs = [as_array(image, self.resize) for image in upright]
        scores = np.empty(len(inputs), dtype=np.float32)
        attributes = np.empty((len(inputs), len(self.attribute_names)), dtype=np.float32) if explain else None
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(inputs):
            by_shape.setdefault(image.shape, []).append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = np.stack([inputs[i] for i in chunk])
                batch_refs = None if refs is None else np.stack([refs[i] for i in chunk])
                if explain:
                    scores[chunk], attributes[chunk] = self.backend.explain(batch, batch_refs)
                else:
                    scores[chunk] = self.backend(batch, batch_refs)
        return scores, attributes

    def _references(self, images: list[Image.Image], references: Any) -> list[np.ndarray] | None:
        """Model-sized references, after checking each pair matches as given (before resizing)."""
        if self.task == "nr":
            if references is not None:
                raise ValueError(f"{self.name} is a no-reference model: references do not apply")
            return None
        if references is None:
            raise ValueError(f"{self.name} is a full-reference model: pass references")
        refs = as_rgb_images(references)
        if len(refs) != len(images):
            raise ValueError(f"{len(images)} images but {len(refs)} references")
        for index, (image, ref) in enumerate(zip(images, refs, strict=True)):
            if image.size != ref.size:
                raise ValueError(
                    f"pair {index}: image {image.width}x{image.height} and reference "
                    f"{ref.width}x{ref.height} differ in size"
                )
        return [as_array(ref, self.resize) for ref in refs]

    def jobs(
        self, paths: Sequence[str | os.PathLike], references: str | os.PathLike | Sequence | None = None
    ) -> list[ScoreJob]:
        """Jobs for files and folders (searched recursively). Full-reference models pair each with
        `references`: a folder mirrored by relative path, or a list of files in the same order."""
        if self.task == "nr":
            if references is not None:
                raise ValueError(f"{self.name} is a no-reference model: references do not apply")
            return [ScoreJob(path) for path, _ in find_images(paths)]
        if references is None:
            raise ValueError(f"{self.name} is a full-reference model: pass references (a folder or a list)")
        if isinstance(references, (str, os.PathLike)):
            return pair_with_references(find_images(paths), references)
        if len(references) != len(paths):
            raise ValueError(f"{len(paths)} images but {len(references)} references")
        return [ScoreJob(Path(path), Path(reference)) for path, reference in zip(paths, references, strict=True)]

    def score_files(
        self,
        paths: Sequence[str | os.PathLike],
        references: Any = None,
        stats: PipelineStats | None = None,
        *,
        decode: str = "iqart",
        decode_timeout: float | None = DECODE_TIMEOUT_S,
        decode_device: str | None = None,
        explain: bool = False,
    ) -> Iterator[ScoreRow]:
        """Rows as batches finish (decoding overlaps inference); a bad file is a row with its error,
        and so is one whose decode takes over `decode_timeout` seconds. `decode="official"`
        decodes as the official QualiCLIP script does (iqart.engine.pipeline.images.open_image).
        `decode_device`: "cuda" decodes JPEGs with nvJPEG, "cpu" with PIL; default cuda for the
        backends on a GPU (torch on CUDA, tensorrt), else cpu (see decoder). `explain=True`: each
        row's `attributes` holds the attributes by name (see attribute_names)."""
        return self.score_jobs(
            self.jobs(paths, references),
            stats,
            decode=decode,
            decode_timeout=decode_timeout,
            decode_device=decode_device,
            explain=explain,
        )

    def score_jobs(
        self,
        jobs: Iterable[ScoreJob],
        stats: PipelineStats | None = None,
        *,
        decode: str = "iqart",
        decode_timeout: float | None = DECODE_TIMEOUT_S,
        decode_device: str | None = None,
        explain: bool = False,
    ) -> Iterator[ScoreRow]:
        gpu = self.decoder(decode_device, decode)  # before the first row: a bad decode device fails at the call
        return score_jobs(
            jobs,
            self.backend,
            self.resize,
            self.batch_size,
            self.workers,
            stats,
            decode=decode,
            decode_timeout=decode_timeout,
            gpu=gpu,
            explain=self.attribute_names if explain else None,
        )

    def score_shards(
        self,
        shards: str | Sequence[str],
        stats: PipelineStats | None = None,
        *,
        image_ext: Sequence[str] = IMAGE_EXTENSIONS,
        ref_ext: str | None = None,
        keep_fields: Sequence[str] = (),
        image_column: str = "jpg",
        key_column: str = "key",
        decode: str = "iqart",
        decode_timeout: float | None = DECODE_TIMEOUT_S,
        decode_device: str | None = None,
        explain: bool = False,
    ) -> Iterator[ScoreRow]:
        """Rows for every sample of WebDataset tar shards or Parquet image tables: paths, globs,
        brace ranges (`shards/{00000..00099}.tar`), folders, or fsspec URLs (`s3://...`). Each row
        names `shard` and `key` (plus `fields`: the `keep_fields` of the sample's .json member or
        Parquet row). Full-reference models take the reference from the sample's `ref_ext`
        member (Parquet: that column). A sample or shard that cannot be scored is a row with its
        error (iqart.engine.sources.shard_reader says what each failure costs)."""
        names = [shards] if isinstance(shards, str) else list(shards)
        if (self.task == "fr") != (ref_ext is not None):
            raise ValueError(
                f"{self.name} is a {'full' if self.task == 'fr' else 'no'}-reference model: "
                f"{'pass ref_ext, the reference member' if self.task == 'fr' else 'ref_ext does not apply'}"
            )
        urls = list_shards(names)
        fmt, columns = sample_formats(urls, tuple(image_ext), ref_ext, tuple(keep_fields), image_column, key_column)
        return score_shards(
            self,
            urls,
            NoRecord(),
            fmt,
            columns,
            stats,
            decode=decode,
            decode_timeout=decode_timeout,
            decode_device=decode_device,
            explain=explain,
        )

    def decoder(self, decode_device: str | None = None, decode: str = "iqart") -> GpuDecoder | None:
        """The GPU decoder that `decode_device` gives this scorer, or None (the CPU path):
        iqart.engine.pipeline.gpu_decode.gpu_decoder_for. ValueError for "cuda" without a GPU
        decoder; the default falls back to the CPU with one line on stderr."""
        key = (decode_device, decode)
        if key not in self._decoders:
            self._decoders[key] = gpu_decoder_for(decode_device, self.backend, decode)
        return self._decoders[key]
