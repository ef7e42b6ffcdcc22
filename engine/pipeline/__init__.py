"""The image pipeline: finding files, decoding them upright in RGB, sizing them for a model,
pairing full-reference jobs, and streaming batches through a backend with decoding overlapped."""
