"""The exceptions the CLI turns into a one-line message and a non-zero exit, and the warnings it prints.

They live here, free of torch, so that the command line can name them without importing the heavy modules.
"""


class LayerprofError(Exception):
    """A problem with the user's input or environment: say what was wrong and what would be right."""

    exit_code = 2


class LayerprofWarning(UserWarning):
    """Something the user should know; the command line prints it as one yellow line."""


class SplitWarning(LayerprofWarning):
    """A split that is valid but probably not what the user wants."""


class DeviceWarning(LayerprofWarning):
    """The device or machine will not give the figures the user expects (a GPU torch cannot use, a busy CPU)."""


class DeviceFailure(LayerprofError):
    """The GPU is in a state no later cell can recover from; what was measured is saved."""

    exit_code = 1
