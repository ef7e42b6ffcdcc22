"""iqart: fast, faithful inference for the CLIP-based image-quality models QualiCLIP and BPCLIP.

    import iqart
    iqart.list_models()                                  # names of the zoo's models
    scorer = iqart.Scorer("qualiclip-tiny")              # scores paths, PIL images, arrays, tensors
    metric = iqart.create_metric("qualiclip-tiny")       # pyiqa-style callable

This file is the package root: the build maps the repository's top-level folders `train/`,
`export/` and `engine/` to `iqart.train`, `iqart.export` and `iqart.engine`. The public names
below resolve on first access, so `import iqart.engine.backends.fused_op` on a GPU box loads
neither ONNX Runtime nor open_clip.
"""

__all__ = ["Scorer", "create_metric", "list_models"]


def __getattr__(name: str):
    if name == "Scorer":
        from iqart.engine.scorer import Scorer

        return Scorer
    if name == "create_metric":
        from iqart.engine.metric import create_metric

        return create_metric
    if name == "list_models":
        from iqart.train.models.zoo import list_models

        return list_models
    if name == "__version__":
        from importlib.metadata import version

        return version("iqart")
    raise AttributeError(f"module 'iqart' has no attribute {name!r}")
