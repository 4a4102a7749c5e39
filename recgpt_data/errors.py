"""Errors the CLI reports as one clear line (no traceback): bad input, unknown names, bad specs."""


class UsageError(Exception):
    """The input cannot be used as given: a missing file, an unknown format or stage, a bad spec."""
