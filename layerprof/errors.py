"""The exception the CLI turns into a one-line message and a non-zero exit, and the split's warning.

Both live here, free of torch, so that the command line can name them without importing the heavy modules.
"""


class LayerprofError(Exception):
    """A problem with the user's input or environment: say what was wrong and what would be right."""

    exit_code = 2


class SplitWarning(UserWarning):
    """A split that is valid but probably not what the user wants."""
