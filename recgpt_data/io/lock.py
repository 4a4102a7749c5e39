"""The lock on an output folder: one writer at a time, whether it is a pipeline run or an ingest."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recgpt_data.errors import UsageError

LOCK_FILE = Path(".stages") / "lock"


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold ``out`` for one writer; a second one on it at the same time is refused. The lock
    (``flock`` on ``out/.stages/lock``) goes with the process, so a killed writer never leaves it behind."""
    path = Path(out) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another run is writing {out}; wait for it to finish") from None
        yield
