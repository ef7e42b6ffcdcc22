"""The `iqart` command line: `entry` is the console script, `main` builds the parser and dispatches
to one module per group of subcommands."""
