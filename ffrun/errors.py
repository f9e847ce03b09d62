"""The one exception type ffrun turns into a single-line message and exit status 2."""


class FfrunError(Exception):
    """Bad input or configuration: the message says what is wrong, where, and how to fix it."""
