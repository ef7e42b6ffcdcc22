"""Where images come from besides loose files: WebDataset tar shards and Parquet tables of
encoded images, on a local disk or behind any fsspec URL, streamed front to back."""
