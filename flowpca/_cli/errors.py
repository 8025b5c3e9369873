"""The error the command line reports as one line on standard error."""


class CommandError(Exception):
    """A problem with the user's files or data, reported without a traceback."""
