"""The `iqart` command line: `main` dispatches to one module per group of subcommands."""
