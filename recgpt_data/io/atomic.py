"""Files written piece by piece under a temporary name beside their path and renamed into place
whole, so that a failed write never leaves a partial file where a complete one belongs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Self


class AtomicFile:
    """A local file written under ``<path>.tmp``: nothing is visible at ``path`` until :meth:`close`.
    As a context manager it closes on success and :meth:`abort` s on an error. A subclass opens its
    writer on :attr:`tmp` and closes it in :meth:`finish`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def finish(self) -> None:
        """Close the writer on :attr:`tmp`."""
        raise NotImplementedError

    def close(self) -> None:
        self.finish()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop what was written: the temporary file goes, ``path`` is left as it was."""
        with contextlib.suppress(OSError):  # a full disk can fail the close too; the file goes anyway
            self.finish()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class AtomicTextWriter(AtomicFile):
    """UTF-8 text appended to ``path`` (no newline translation)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.stream = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed by finish)

    def write(self, text: str) -> None:
        self.stream.write(text)

    def finish(self) -> None:
        self.stream.close()
