"""Engines decide only where the buckets of a partitioned stage run: in this process (``local``,
the default) or as tasks on a Ray cluster (``ray``). The stage code and the bytes it writes are
the same under each."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from recgpt_data.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")


class Engine(Protocol):
    """Runs ``fn`` over tasks, yielding each result as it completes (in any order)."""

    name: str

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


def get_engine(name: str = "local", address: str | None = None) -> Engine:
    """The engine ``name``; ``address`` picks a running Ray cluster (``auto``, ``ray://host:10001``)."""
    if name == "local":
        if address is not None:
            raise UsageError("--address is for --engine ray")
        from recgpt_data.engines.local import LocalEngine

        return LocalEngine()
    if name == "ray":
        from recgpt_data.engines.ray import RayEngine

        return RayEngine(address)
    raise UsageError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
