"""`iqart export`: write a model's artifact directory (graphs + spec.json), atomically.

The directory is the contract between export, engine and C++ users (docs/design.md): everything is
written into a temporary sibling and renamed into place, so a failed export leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import onnx
import torch

from iqart.export.native_attention import NATIVE_GRAPH, NATIVE_OPSET, attention_nodes
from iqart.export.onnx_graphs import EXPORTER, OPSET, build_graphs, input_names
from iqart.export.plugin_node import PLUGIN_DOMAIN, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION, TRT_GRAPH
from iqart.export.spec_files import read_spec, sha256_file
from iqart.train.models.prompts import adjective_prompts, antonym_prompts
from iqart.train.models.zoo import ModelCard, get_card, load_model, resolve_weights
from iqart.train.storage import honour_umask

SPEC_VERSION = 2  # 2: every graph has a second output, attributes (names in spec.json)
__all__ = ["GRAPH_FILES", "INT8_GRAPH", "SPEC_VERSION", "build_spec", "export_artifact", "read_spec", "sha256_file"]
GRAPH_FILES = ("model.onnx", "model.fp16.onnx", TRT_GRAPH, NATIVE_GRAPH)
INT8_GRAPH = (
    "model.int8.onnx"  # optional: written by `iqart quantize` or on first int8 use (iqart.export.int8_artifact)
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


ATTRIBUTE_MEANING = {
    "qualiclip": "per antonym pair (named by its positive prompt), the probability of the positive prompt "
    "against the negative one, softmax(100 cos); the score is their mean",
    "bpclip": "per quality dimension, the softmax mass of its good adjectives among its adjectives (ours), then "
    "the 40 adjective similarities (100 cos, 'adj_' + adjective) that the score head reads",
}


def _io_spec(card: ModelCard, attribute_names: list[str]) -> tuple[list[dict], list[dict]]:
    height, width = card.resize.size if card.resize.kind == "fixed" else ("H", "W")
    image = {"dtype": "uint8", "shape": ["N", height, width, 3], "layout": "NHWC", "color": "RGB"}
    inputs = [{"name": name, **image} for name in input_names(card)]
    attributes = {
        "name": "attributes",
        "dtype": "float32",
        "shape": ["N", len(attribute_names)],
        "names": attribute_names,
        "meaning": ATTRIBUTE_MEANING[card.family],
    }
    return inputs, [{"name": "score", "dtype": "float32", "shape": ["N"]}, attributes]


def build_spec(
    card: ModelCard,
    weights_sha256: str,
    graph_hashes: dict,
    fp16_report: dict,
    plugin_nodes: int,
    native_nodes: int,
    attribute_names: list[str],
) -> dict:
    inputs, outputs = _io_spec(card, attribute_names)
    return {
        "spec_version": SPEC_VERSION,
        "name": card.name,
        "version": _version("iqart"),
        "task": card.task,
        "family": card.family,
        "backbone": card.backbone,
        "inputs": inputs,
        "outputs": outputs,
        "preprocessing": "inside the graph: cast to float, /255, CLIP mean/std, NHWC->NCHW",
        "resize": card.resize.to_json(),
        "score_range": list(card.score_range),
        "higher_better": card.higher_better,
        "prompts": antonym_prompts() if card.family == "qualiclip" else adjective_prompts(),
        "sha256": {"weights": weights_sha256, **graph_hashes},
        "opset": OPSET,
        "fp16": fp16_report,
        "plugin": {
            "name": PLUGIN_NAME,
            "namespace": PLUGIN_NAMESPACE,
            "version": PLUGIN_VERSION,
            "onnx_domain": PLUGIN_DOMAIN,
            "nodes": plugin_nodes,
            "fields": ["num_heads", "scale"],
        },
        "native_attention": {"graph": NATIVE_GRAPH, "op": "Attention", "opset": NATIVE_OPSET, "nodes": native_nodes},
        "exporter": EXPORTER,
        "versions": {pkg: _version(pkg) for pkg in ("torch", "onnx", "onnxruntime", "open_clip_torch")},
    }


def export_artifact(
    name: str,
    out_dir: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    model: torch.nn.Module | None = None,
) -> Path:
    """Export `name` into `out_dir` (replaced if it exists). `model` skips loading weights
    (used by tests and benchmarks with random weights; the spec then records no weights hash)."""
    card = get_card(name)
    weights_sha = None
    if model is None:
        path = resolve_weights(name, weights)
        model = load_model(name, path)
        weights_sha = sha256_file(path)
    graphs, fp16_report = build_graphs(model, card)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    honour_umask(staging, directory=True)  # mkdtemp makes it 0700; an artifact is no secret
    try:
        hashes = {}
        for filename in GRAPH_FILES:
            onnx.save(graphs[filename], staging / filename)
            hashes[filename] = sha256_file(staging / filename)
        plugin_nodes = sum(n.op_type == PLUGIN_NAME for n in graphs[TRT_GRAPH].graph.node)
        spec = build_spec(
            card,
            weights_sha,
            hashes,
            fp16_report,
            plugin_nodes,
            len(attention_nodes(graphs[NATIVE_GRAPH])),
            model.attribute_names(),
        )
        (staging / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
        (staging / "plans").mkdir()
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
