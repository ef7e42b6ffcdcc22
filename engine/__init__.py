"""iqart's engine: `Scorer` and the backends, image pipeline, result files, benchmark harness and CLI.

`Scorer` resolves on first access, so importing a submodule (iqart.engine.pipeline.images,
iqart.engine.backends.plugin) does not load ONNX Runtime and the export code.
"""

__all__ = ["Scorer"]


def __getattr__(name: str):
    if name == "Scorer":
        from iqart.engine.scorer import Scorer

        return Scorer
    raise AttributeError(f"module 'iqart.engine' has no attribute {name!r}")
