"""The transfer tool's bad-input error, raised by every module and reported by :mod:`.cli`."""


class UsageError(Exception):
    """Bad input: printed as one line ``error: ...``, exit code 2."""
