"""Resident memory and CPU time of a run's processes, read from ``/proc`` (Linux): what the
benchmarks that measure a CLI run sample while it runs (``bench_projection.py``,
``bench_memory_limit.py``, ``bench_stage_memory.py``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def tree_pids(pid: int) -> set[int]:
    """``pid`` and every descendant of it."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        found.add(current)
    return found


def status_bytes(pid: int, field: str) -> int:
    """A kB field of ``/proc/<pid>/status`` in bytes (0 where the process is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:"))) * 1024
    except (OSError, StopIteration):
        return 0


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` (0 where it is gone)."""
    return status_bytes(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    """The most resident bytes ``pid`` has held, as the kernel records it (``VmHWM``: no spike
    between two samples is missed); 0 where it is gone."""
    return status_bytes(pid, "VmHWM")


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """The CPU seconds (user and system) ``pid`` itself has used so far, its children's not
    included (0 where it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14 and 15 of stat(5)


@contextmanager
def sampling(sample: Callable[[], None], every: float) -> Iterator[None]:
    """Call ``sample`` every ``every`` seconds in a thread while the block runs; stopped after it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            sample()

    sampler = threading.Thread(target=loop, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
