"""The Ray engine: each bucket of a partitioned stage is one Ray task.

Workers need the same ``recgpt-data`` version installed and the output folder on a file system that
every node mounts at the same path (NFS, Lustre, a FUSE-mounted bucket): a task reads its inputs and
writes its bucket's files there, and returns only the small record of what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from recgpt_data.errors import UsageError

T = TypeVar("T")
R = TypeVar("R")


class RayEngine:
    """Submits every task to Ray at once and yields results as tasks finish."""

    name = "ray"

    def __init__(self, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise UsageError("--engine ray needs Ray: pip install 'recgpt-data[ray]'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
            self.started = True

    def map(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        remote = self.ray.remote(max_retries=2)(fn)
        pending = [remote.remote(task) for task in tasks]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            for ref in done:
                yield self.ray.get(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False
