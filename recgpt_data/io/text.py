"""Text files written piece by piece and put in place whole: a temporary name, then a rename."""

from __future__ import annotations

import os
from pathlib import Path


class AtomicTextWriter:
    """Append UTF-8 text to the local ``path``; nothing is visible at ``path`` until :meth:`close`.
    As a context manager it closes on success and :meth:`abort` s on an error, so a failed write
    never puts a partial file in place."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed by close/abort)

    def write(self, text: str) -> None:
        self.stream.write(text)

    def close(self) -> None:
        self.stream.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop what was written: the temporary file goes, ``path`` is left as it was."""
        self.stream.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicTextWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
