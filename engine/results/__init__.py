"""Result files: CSV, JSONL and Parquet rows written as they come, and read back for --resume."""
