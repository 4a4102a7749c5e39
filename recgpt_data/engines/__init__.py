"""Engines decide only where the buckets of a partitioned stage run: on this machine (``local``, the
default: in this process, or in ``--workers N`` processes) or as tasks on a Ray cluster (``ray``).
The stage code and the bytes it writes are the same under each."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from recgpt_data.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")


class WorkerCrash(RuntimeError):
    """A worker process died while running a task (killed, out of memory, or a crash in native code)."""


class Engine(Protocol):
    """Runs ``fn`` over tasks, yielding each result as it completes (in any order)."""

    name: str

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


def get_engine(name: str = "local", address: str | None = None, workers: int = 1) -> Engine:
    """The engine ``name``; ``address`` picks a running Ray cluster (``auto``, ``ray://host:10001``),
    ``workers`` the local engine's worker processes."""
    if name not in ENGINES:
        raise UsageError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    if name == "local":
        if address is not None:
            raise UsageError("--address is for --engine ray")
        from recgpt_data.engines.local import LocalEngine

        return LocalEngine(workers)
    if workers != 1:
        raise UsageError("--workers is for --engine local (Ray places tasks on the cluster's workers itself)")
    from recgpt_data.engines.ray import RayEngine

    return RayEngine(address)
