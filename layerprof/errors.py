"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class LayerprofError(Exception):
    """A problem with the user's input or environment: say what was wrong and what would be right."""

    exit_code = 2
