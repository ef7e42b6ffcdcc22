"""Backends: each turns uint8 RGB NHWC batches into float32 scores (torch, ONNX Runtime, OpenVINO,
TensorRT, TensorRT for RTX), found by name in one table (registry), with the TensorRT plan cache
and the loaders of our CUDA kernel (torch op, TensorRT plugin)."""
