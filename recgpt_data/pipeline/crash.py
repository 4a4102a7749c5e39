"""The crash-test hooks: ``RECGPT_KILL_AT=stage:<key>:<point>`` kills the run with SIGKILL at a named
point of a stage (``before`` it starts, ``prepared`` once its prepare step's tasks are done, ``mid``
after each table or bucket it writes (after all its tables for a whole stage run in a worker),
``publish`` once its final-folder files are in place, ``after`` its success record), so that tests
can prove a rerun finishes with the same bytes as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

KILL_ENV = "RECGPT_KILL_AT"
KILL_POINTS = ("before", "prepared", "mid", "publish", "after")


def kill_point(key: str, point: str) -> None:
    """Kill this process with SIGKILL if ``RECGPT_KILL_AT`` names this point."""
    if os.environ.get(KILL_ENV) == f"stage:{key}:{point}":
        os.kill(os.getpid(), signal.SIGKILL)


def kill_point_problem(keys: Sequence[str]) -> str | None:
    """Why a ``RECGPT_KILL_AT`` names no stage or point of a spec with stages ``keys`` (a crash
    test's typo), or ``None``."""
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return None
    parts = wanted.split(":")
    if len(parts) != 3 or parts[0] != "stage" or parts[1] not in keys or parts[2] not in KILL_POINTS:
        return f"{KILL_ENV}={wanted!r}: want stage:<key>:<{'|'.join(KILL_POINTS)}> with a key of this spec"
    return None
