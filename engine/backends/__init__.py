"""Backends: each turns uint8 RGB NHWC batches into float32 scores (torch, ONNX Runtime, TensorRT),
with the TensorRT plan cache and the loaders of our CUDA kernel (torch op, TensorRT plugin)."""
