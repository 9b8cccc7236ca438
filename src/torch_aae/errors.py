"""The library's own error and warning types: every expected failure (bad data, bad config, bad
checkpoint) raises AAEError with a one-line message; the CLI prints it and exits non-zero. A
request that works but is likely a mistake (fp16 on a CPU) warns with AAEWarning, which the CLI
prints as one line too."""


class AAEError(Exception):
    """A problem with the user's input, files or configuration, explained in one line."""


class Interrupted(AAEError):
    """Training stopped by a signal (Ctrl-C, SIGTERM) after a checkpoint: the run can continue."""


class AAEWarning(UserWarning):
    """A request that runs but probably not as the user meant, explained in one line."""
