"""iqart's engine: `Scorer` scores images with any backend; `list_models()` names the models.

Both are resolved on first access, so importing a submodule (engine.images, engine.plugin)
does not load ONNX Runtime and the export code.
"""

__all__ = ["Scorer", "list_models"]


def __getattr__(name: str):
    if name == "Scorer":
        from engine.scorer import Scorer

        return Scorer
    if name == "list_models":
        from train.zoo import list_models

        return list_models
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
