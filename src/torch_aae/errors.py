"""The library's own error type: every expected failure (bad data, bad config, bad checkpoint)
raises AAEError with a one-line message; the CLI prints it and exits non-zero."""


class AAEError(Exception):
    """A problem with the user's input, files or configuration, explained in one line."""
