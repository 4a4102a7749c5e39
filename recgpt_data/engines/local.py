"""The default engine: a run's tasks (whole stages, buckets, bucket cuts) run on this machine, one
after another in this process (one worker, the default), or side by side in a pool of worker
processes.

Worker processes are started with ``spawn`` (polars is not safe to fork) and share the cores: each
gets ``threads`` of them and, before polars, numba or tokenizers is imported in it, bounds those
libraries to that many threads (``POLARS_MAX_THREADS``, ``NUMBA_NUM_THREADS``, ``RAYON_NUM_THREADS``
for tokenizers, whose parallelism is switched off with one thread), so that N workers together use
about the cores one process would. A worker that finds polars imported before it could bound it
(a program whose main module imports polars) refuses to run rather than oversubscribe the machine.
Workers exit when the driver dies, so a killed run leaves none behind.

Given a memory limit (``--task-memory``), the tasks run in workers even where there is one, so that
the bound applies; a stage that declares its own CPUs or memory (``task_cpus``, ``task_memory`` in
the spec) runs its tasks in workers started with those. A worker with a memory limit watches its
own resident memory (every 20 ms): one that goes past the limit ends itself, and the run ends with
one line saying which limit a task went past, instead of the machine running out of memory.
Resident memory is what is watched because an address-space bound (``RLIMIT_DATA``, ``RLIMIT_AS``)
counts what polars and the tokenizer's threads reserve without using: about three times the
resident memory, so a bound on it fails tasks that fit.
"""

from __future__ import annotations

import copy
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.synchronize import Event
from typing import TypeVar

from recgpt_data.engines import WorkerCrash, thread_environment, threads_for
from recgpt_data.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")

START_METHOD = "spawn"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


WATCH_SECONDS = 0.02  # how often a worker with a memory limit reads its resident memory


def start_worker(threads: int, memory: int | None = None, over: Event | None = None) -> None:
    """A worker's first act: set the thread bounds before any task imports the libraries they bound,
    watch its resident memory where given a limit of ``memory`` bytes (setting ``over`` as it ends
    itself past it), and watch the driver so that the worker exits when the driver dies."""
    os.environ.update(thread_environment(threads))
    if memory is not None and over is not None:
        threading.Thread(target=watch_memory, args=(memory, over), name="recgpt-watch-memory", daemon=True).start()
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=exit_with, args=(parent.sentinel,), name="recgpt-watch-driver", daemon=True).start()


def watch_memory(memory: int, over: Event) -> None:
    """End this worker as soon as its resident memory passes ``memory`` bytes, after setting ``over``
    for the driver to say why."""
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/self/statm", "rb") as statm:
        while int(statm.read().split()[1]) * page <= memory:
            time.sleep(WATCH_SECONDS)
            statm.seek(0)
    over.set()
    os._exit(1)


def exit_with(sentinel: int) -> None:
    """Exit this worker as soon as the driver process behind ``sentinel`` is gone."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def thread_bounds() -> dict[str, int]:
    """The threads polars (and numba, where imported) will use in this process."""
    import polars as pl

    bounds = {"polars": pl.thread_pool_size()}
    if "numba" in sys.modules:
        import numba

        bounds["numba"] = numba.get_num_threads()
    return bounds


def bounded_call(fn: Callable[[T], R], task: T, threads: int) -> R:
    """Run ``task`` in a worker, refusing where a library uses more threads than the worker was given."""
    over = {name: n for name, n in thread_bounds().items() if n > threads}
    if over:
        raise UsageError(
            f"a worker given {threads} thread(s) found {', '.join(f'{k} using {n}' for k, n in over.items())}: "
            "the program's main module imports it before the worker can bound it; import it inside main()"
        )
    return fn(task)


class WorkerPool:
    """The worker processes a local engine and its stages' views share: ``count`` workers of one
    set of bounds at a time, started on first use and started again when a stage's tasks declare
    other bounds (the old ones stop first, so idle workers hold no memory)."""

    def __init__(self, count: int):
        self.count = count
        self.bounds: tuple[int, int | None] | None = None
        self.executor: ProcessPoolExecutor | None = None
        self.over: Event | None = None

    def bounded(self, threads: int, memory: int | None) -> ProcessPoolExecutor:
        """The pool whose workers run ``threads`` threads each, bounded to ``memory`` bytes where given."""
        if self.executor is not None and self.bounds != (threads, memory):
            self.close()
        if self.executor is None:
            context = multiprocessing.get_context(START_METHOD)
            self.over = context.Event()
            self.bounds = (threads, memory)
            self.executor = ProcessPoolExecutor(
                self.count, mp_context=context, initializer=start_worker, initargs=(threads, memory, self.over)
            )
        return self.executor

    def went_over(self) -> bool:
        """Whether a worker ended itself past its memory bound."""
        return self.over is not None and self.over.is_set()

    def close(self) -> None:
        """Stop the worker processes (after the tasks they are running)."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


class LocalEngine:
    """Runs tasks in this process, in order (``workers=1`` and no memory bound), or in ``workers``
    spawned processes of ``threads`` threads each (default: the available cores shared out) and each
    bounded to ``memory`` bytes where given, yielding results as tasks finish."""

    name = "local"

    def __init__(self, workers: int = 1, threads: int | None = None, memory: int | None = None):
        if workers < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.memory = memory
        self.in_process = workers == 1 and memory is None
        self.threads = threads or max(1, available_cores() // workers)
        self.pool = WorkerPool(workers)

    def sized(self, cpus: float | None, memory: int | None) -> LocalEngine:
        """The engine for a stage whose tasks declare ``cpus`` (its workers' threads) and ``memory``
        (their bound), each where given: the same workers, started again with those bounds, and never
        this process, whose libraries' threads are set already."""
        if cpus is None and memory is None:
            return self
        view = copy.copy(self)
        view.threads = self.threads if cpus is None else threads_for(cpus)
        view.memory = self.memory if memory is None else memory
        view.in_process = False
        return view

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, here: bool = False) -> Iterator[R]:
        """Every task runs on this machine, whatever ``here`` says."""
        if self.in_process:
            for task in tasks:
                yield fn(task)
            return
        yield from self.map_in_pool(fn, tasks)

    def map_in_pool(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        """Submit every task to the worker pool (started with this engine's bounds) and yield results
        as they come."""
        pool = self.pool.bounded(self.threads, self.memory)
        futures: list[Future[R]] = [pool.submit(bounded_call, fn, task, self.threads) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:
            over = self.pool.went_over()
            self.close()
            if over and self.memory is not None:
                raise WorkerCrash(
                    f"a task went past its worker's memory limit ({self.memory / 2**30:.2f} GiB of resident "
                    "memory, --task-memory or the stage's task_memory); finished buckets are kept: run again "
                    "to resume, with more task memory or more partitions"
                ) from None
            raise WorkerCrash(
                f"a worker process died while running {len(tasks)} task(s) in {self.workers} workers (killed, "
                "out of memory, or a crash in native code); finished buckets are kept: run again to resume, "
                "with fewer --workers if memory is short"
            ) from None
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Stop the worker processes (after the tasks they are running)."""
        self.pool.close()
