"""Result files: each row journaled the moment it is produced (journal.py), one locked, checked,
resumable output per run (output.py), the final CSV, JSONL or Parquet written atomically
(writer.py, files.py) and read back for --resume and `iqart report`."""
