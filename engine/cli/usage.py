"""The one exception every `iqart` subcommand raises for a mistake in its command line."""


class UsageError(Exception):
    """A mistake in the command line; reported without a traceback (exit code 2)."""
