"""The Ray engine: each of a run's tasks (a whole stage, a bucket of a partitioned stage, a piece of
a bucket cut, a prepare step's task) is one Ray task.

Every task declares the CPUs it uses (``--task-cpus``, default 1, or its stage's ``task_cpus``)
and, where given, its memory (``--task-memory``, or its stage's ``task_memory``), so that Ray
places no more tasks on a node than it has room for; and it runs with polars, numba and tokenizers
bounded to that many threads (the variables the local engine sets in its workers, passed as the
task's ``runtime_env``). Ray's workers start under their node's raylet, not under the driver, so
the driver's object-store settings (endpoint, region, credentials:
:func:`~recgpt_data.io.storage.store_settings`) go in the same ``runtime_env``. Tasks are spread
over the nodes; one whose worker or node dies is retried twice (elsewhere where the node is gone),
and one that dies every time ends the run in one line, keeping the buckets that finished.

Workers need the same ``recgpt-data`` version installed and the output folder in object storage or
on a file system that every node mounts at the same path (NFS, Lustre): a task reads its inputs and
writes its bucket's files there, and returns only the small record of what it wrote.

An address that names a host (``ray://host:10001`` for Ray Client, ``host:6379`` for the head's
GCS) is probed with a plain TCP connection first: Ray's own client waits 30 s and more, retrying,
before it gives up on a cluster that is not there, while the probe says so in seconds. Where
something accepts the connection but no Ray Client answers, Ray Client's connection timeouts are
shortened (unless set in the environment) so that it gives up in about ten seconds.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from recgpt_data.engines import WorkerCrash, thread_environment, threads_for
from recgpt_data.engines.local import bounded_call
from recgpt_data.errors import UsageError
from recgpt_data.io.storage import store_settings

T = TypeVar("T")
R = TypeVar("R")
PROBE_SECONDS = 3.0
CLIENT_PORT = 10001  # Ray Client's default port
GCS_PORT = 6379  # the head node's default port
RETRIES = 2  # of a task whose worker or node died
LOST = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OutOfMemoryError", "ObjectLostError")
CLIENT_TIMEOUTS = {"RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "2", "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "4"}


def endpoint(address: str) -> tuple[str, int] | None:
    """The host and port an address names (``None`` for ``auto`` and ``local``)."""
    if address in ("auto", "local"):
        return None
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, CLIENT_PORT if client else GCS_PORT
    if not port.isdigit():
        raise UsageError(f"--address {address!r}: the port {port!r} is not a number")
    return host.strip("[]"), int(port)


def probe(address: str) -> None:
    """Refuse at once an address where nothing accepts connections."""
    found = endpoint(address)
    if found is None:
        return
    host, port = found
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise UsageError(
            f"no Ray cluster at {address}: {host}:{port} {reason}; start one (`ray start --head`) or "
            "leave out --address to run Ray on this machine"
        ) from None


def connect(ray: Any, address: str | None) -> None:
    """``ray.init``, with a cluster that does not answer reported as one line: Ray's connection
    messages (its info log, its warnings) are held back while it tries."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if address is not None and address.startswith("ray://"):
                ray.init(address=address, logging_level=logging.WARNING)  # the cluster's own settings apply
            else:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise UsageError(f"no Ray cluster at {address}: {str(exc).splitlines()[0]}") from None


class RayEngine:
    """Submits every task to Ray at once, each declaring ``cpus`` CPUs (its threads) and ``memory``
    bytes where given, and yields results as tasks finish."""

    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, cpus: float = 1.0, memory: int | None = None):
        self.cpus = cpus
        self.threads = threads_for(cpus)
        self.memory = memory
        self.environment = {**store_settings(), **thread_environment(self.threads)}
        if address is not None and address.startswith("ray://"):
            for name, seconds in CLIENT_TIMEOUTS.items():
                os.environ.setdefault(name, seconds)  # read when Ray is imported
        try:
            import ray
        except ImportError:
            raise UsageError("--engine ray needs Ray: pip install 'recgpt-data[ray]'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address is not None:
                probe(address)
            connect(ray, address)
            self.started = True

    def sized(self, cpus: float | None, memory: int | None) -> RayEngine:
        """The engine for a stage whose tasks declare ``cpus`` and ``memory``, each where given (else
        this engine's), on the same cluster; closing it leaves the cluster to this engine."""
        if cpus is None and memory is None:
            return self
        view = copy.copy(self)
        view.cpus = self.cpus if cpus is None else cpus
        view.threads = threads_for(view.cpus)
        view.memory = self.memory if memory is None else memory
        view.environment = {**self.environment, **thread_environment(view.threads)}
        view.started = False
        return view

    def options(self, here: bool = False) -> dict[str, Any]:
        """What every task declares: its CPUs and memory, its threads' bounds, spread over nodes (or,
        ``here``, placed on the driver's node)."""
        options: dict[str, Any] = {
            "num_cpus": self.cpus,
            "max_retries": RETRIES,
            "scheduling_strategy": self.driver_node() if here else "SPREAD",
            "runtime_env": {"env_vars": self.environment},
        }
        if self.memory is not None:
            options["memory"] = self.memory
        return options

    def driver_node(self) -> Any:
        """The strategy that places a task on the node this driver runs on (not soft: a task that
        needs the driver's disk cannot run elsewhere). A driver connected through Ray Client runs on
        no node of the cluster, so it has none: refused."""
        from ray.util import client
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if client.ray.is_connected():
            raise UsageError(
                "a run whose output is in object storage keeps its work folder on the driver's disk, which "
                "Ray Client's tasks cannot reach: run the driver on a node of the cluster (--address auto)"
            )
        return NodeAffinitySchedulingStrategy(node_id=self.ray.get_runtime_context().get_node_id(), soft=False)

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], *, here: bool = False) -> Iterator[R]:
        remote = self.ray.remote(**self.options(here))(bounded_call)
        pending = [remote.remote(fn, task, self.threads) for task in tasks]
        lost = tuple(getattr(self.ray.exceptions, name) for name in LOST)
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                for ref in done:
                    yield self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, Exception):  # the task's own error, without Ray's wrapper and traceback
                raise exc.cause from None
            raise
        except lost as exc:
            raise WorkerCrash(
                f"a Ray task's worker or node died ({type(exc).__name__}), and so did its {RETRIES} retries; "
                "finished buckets are kept: run again to resume, with more --task-memory if memory is short"
            ) from None
        finally:
            for ref in pending:
                self.ray.cancel(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False
