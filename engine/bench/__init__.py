"""The benchmark harness behind `iqart bench`: interleaved timings, runners per backend, FLOP
counts and matmul peaks, and the JSON/Markdown/PNG reports."""
