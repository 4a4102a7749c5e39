"""Engines decide only where a run's tasks go (a whole stage, one bucket of a partitioned stage, one
piece of a bucket cut, a prepare step's task): on this machine (``local``, the default: in this
process, or in ``--workers N`` processes) or on a Ray cluster (``ray``). The stage code and the bytes
it writes are the same under each; the driver holds plans and the small records tasks return."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from recgpt_data.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "ray")


class WorkerCrash(RuntimeError):
    """A worker process died while running a task (killed, out of memory, or a crash in native code)."""


def thread_environment(threads: int) -> dict[str, str]:
    """The variables that bound polars, numba and tokenizers (rayon) to ``threads`` threads each."""
    return {
        "POLARS_MAX_THREADS": str(threads),
        "NUMBA_NUM_THREADS": str(threads),
        "RAYON_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "true" if threads > 1 else "false",
    }


def worker_name() -> str:
    """Which process on which host runs this task (``host:pid``), with the Ray node's id
    (``host:pid@node``) inside a Ray worker, for the records of what ran where."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        name += f"@{ray.get_runtime_context().get_node_id()}"
    return name


class Engine(Protocol):
    """Runs ``fn`` over tasks, yielding each result as it completes (in any order); ``in_process``
    says that the tasks run in this process, one after another. ``here=True`` keeps the tasks on
    the driver's machine: tasks that read or write files on its local disk (the work folder of a
    run whose output is in object storage) cannot run on another node. ``sized`` gives the engine
    for one stage's tasks, which may declare other CPUs and memory than the run's defaults."""

    name: str
    in_process: bool

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, here: bool = False) -> Iterator[R]: ...

    def sized(self, cpus: float | None, memory: int | None) -> Engine: ...

    def close(self) -> None: ...


def threads_for(cpus: float) -> int:
    """The threads a task that declares ``cpus`` CPUs runs with: the whole CPUs, at least one."""
    return max(1, int(cpus))


def get_engine(
    name: str = "local",
    address: str | None = None,
    workers: int = 1,
    task_cpus: float | None = None,
    task_memory: int | None = None,
) -> Engine:
    """The engine ``name``; ``address`` picks a running Ray cluster (``auto``, ``ray://host:10001``),
    ``workers`` the local engine's worker processes; ``task_cpus`` the CPUs (threads) each task may
    use (Ray: the CPUs a task declares, default 1; local: each worker's threads, default the cores
    shared out) and ``task_memory`` the bytes of memory a task may use (Ray: what it declares; local:
    each worker's bound, the tasks then running in workers even where there is one). A stage of the
    spec may declare its own (:meth:`Engine.sized`); these are the defaults."""
    if name not in ENGINES:
        raise UsageError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    if task_cpus is not None and task_cpus <= 0:
        raise UsageError(f"--task-cpus must be above 0, got {task_cpus:g}")
    if name == "local":
        if address is not None:
            raise UsageError("--address is for --engine ray")
        from recgpt_data.engines.local import LocalEngine

        return LocalEngine(workers, threads=None if task_cpus is None else threads_for(task_cpus), memory=task_memory)
    if workers != 1:
        raise UsageError("--workers is for --engine local (Ray places tasks on the cluster's workers itself)")
    from recgpt_data.engines.ray import RayEngine

    return RayEngine(address, cpus=task_cpus or 1.0, memory=task_memory)


SIZE_UNITS = {
    "": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "KI": 2**10,
    "MI": 2**20,
    "GI": 2**30,
    "TI": 2**40,
}


def parse_size(text: str) -> int:
    """Bytes from a size such as ``512MiB``, ``4G`` or ``2000000000`` (``B`` optional, case ignored)."""
    value = text.strip().upper().removesuffix("B")
    number = value.rstrip("KMGTI")
    unit = value[len(number) :]
    try:
        size = float(number) * SIZE_UNITS[unit]
    except (KeyError, ValueError):
        raise UsageError(
            f"{text!r} is not a size: want bytes or a number with K, M, G, T, KiB, MiB, GiB or TiB"
        ) from None
    if size < 1:
        raise UsageError(f"a size must be at least one byte, got {text!r}")
    return int(size)
