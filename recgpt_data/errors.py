"""Errors the CLI reports as one clear line (no traceback), and the exit status of each kind.

| exit | meaning |
|---|---|
| 0 | done |
| 1 | an unexpected error (a bug: the traceback is shown, without local variables) |
| 2 | usage: bad input, unknown names, unsafe names, bad specs, a refusal, a folder another run holds |
| 3 | the file system: a folder that cannot be read or written, read-only, not a folder, disk full |
| 4 | the network: the Hugging Face Hub cannot be reached |
| 130 | interrupted (Ctrl-C) |
"""

from __future__ import annotations

import errno

EXIT_USAGE = 2
EXIT_FILESYSTEM = 3
EXIT_NETWORK = 4
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """The input cannot be used as given: a missing file, an unknown format or stage, a bad spec."""


def filesystem_message(exc: OSError) -> str:
    """One line for a failed file operation: what failed, on which path, and what to do for a full disk."""
    where = f": {exc.filename}" if exc.filename else ""
    extra = f" -> {exc.filename2}" if exc.filename2 else ""
    text = f"{exc.strerror or exc}{where}{extra}"
    if exc.errno == errno.ENOSPC:
        text += " (free some space, or point --out at another disk, then run again: finished work is kept)"
    return text
