"""What the worker and Ray tests run inside worker processes: a probe of the threads each library
uses there (and the resources a Ray task was given), a partitioned stage whose second bucket kills
its own worker, a whole stage that notes which process ran it, and a partitioned stage that waits on
a chosen Ray node until the test kills that node; importing this module registers the stages."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from recgpt_data.engines import worker_name
from recgpt_data.stage import Context, Params, Preparation, Prepared, StageOutput, StageStats, stage

if TYPE_CHECKING:
    import polars as pl

RAYON_MEASURED = False  # whether this process already started tokenizers' thread pool


def os_threads() -> int:
    """Threads of this process right now."""
    return len(os.listdir("/proc/self/task"))


def probe(_: int) -> dict:
    """The threads polars and numba will use here, and how many threads tokenizers starts for one
    batch (only in the process's first probe, before its pool exists)."""
    global RAYON_MEASURED
    import numba
    import polars as pl

    from recgpt_data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    found = {"pid": os.getpid(), "polars": pl.thread_pool_size(), "numba": numba.get_num_threads(), "rayon": None}
    before = os_threads()
    tokenizer.encode_batch(["a history of items, one a line"] * 512)
    if not RAYON_MEASURED:
        found["rayon"] = os_threads() - before
        RAYON_MEASURED = True
    return found


@stage("t_crash", params=Params, reads=("interactions",), writes=("checked",), partition="user")
def crash(tables: Mapping[str, pl.LazyFrame], params: Params, ctx: Context) -> StageOutput:
    """Bucket 1 kills its own process (as the out-of-memory killer would); others pass rows on."""
    if ctx.partition is not None and ctx.partition[0] == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return StageOutput({"checked": tables["interactions"].collect()}, StageStats())


REFUSAL = "t_refuse: bucket 1 holds a record this stage refuses"


@stage("t_refuse", params=Params, reads=("interactions",), writes=("checked",), partition="user")
def refuse(tables: Mapping[str, pl.LazyFrame], params: Params, ctx: Context) -> StageOutput:
    """Bucket 1 refuses its input with a usage error (bad input, as a real stage would say it)."""
    from recgpt_data.errors import UsageError

    if ctx.partition is not None and ctx.partition[0] == 1:
        raise UsageError(REFUSAL)
    return StageOutput({"checked": tables["interactions"].collect()}, StageStats())


def crash_spec(path: Path, stage_name: str = "t_crash") -> Path:
    """A spec: the demo's Amazon 2014 slice ingested, then ``stage_name`` in two buckets."""
    path.write_text(
        'name = "crash"\npartitions = 2\n\n[[stages]]\nstage = "ingest"\n'
        'params.sources = [{ format = "amazon2014", paths = ["demo:amazon2014"] }]\n\n'
        f'[[stages]]\nstage = "{stage_name}"\n',
        encoding="utf-8",
    )
    return path


def count_bucket(files: tuple[str, ...]) -> tuple[int, int]:
    """A prepare task: the rows of one bucket's files, and the process that counted them."""
    import polars as pl

    return pl.scan_parquet(list(files)).select(pl.len()).collect().item(), os.getpid()


def prepare_totals(prep: Preparation, params: Params, ctx: Context) -> Prepared:
    """Count every bucket's interactions in tasks and keep the total as a one-row table."""
    import polars as pl

    found = list(prep.map(count_bucket, list(prep.buckets["interactions"])))
    prep.scratch.mkdir(parents=True, exist_ok=True)
    path = prep.scratch / "totals.parquet"
    pl.DataFrame({"total": [sum(n for n, _ in found)]}).write_parquet(path)
    return Prepared(
        {"totals": (str(path),)}, {"driver_pid": os.getpid(), "prepare_pids": sorted({pid for _, pid in found})}
    )


@stage(
    "t_prepared", params=Params, reads=("interactions",), writes=("counted",), partition="user", prepare=prepare_totals
)
def prepared(tables: Mapping[str, pl.LazyFrame], params: Params, ctx: Context) -> StageOutput:
    """Each bucket's users with the total that the prepare step counted over all buckets."""
    total = tables["totals"].collect().item()
    frame = tables["interactions"].select("user_id").unique().sort("user_id").collect()
    return StageOutput({"counted": frame.with_columns(total=total)}, StageStats())


def prepare_whole(prep: Preparation, params: Params, ctx: Context) -> Prepared:
    """Count each interactions file in its own task; the counts are an output the stage adopts whole,
    their total a table the stage function reads."""
    import polars as pl

    [files] = prep.buckets["interactions"]
    found = list(prep.map(count_bucket, [(f,) for f in files]))
    prep.scratch.mkdir(parents=True, exist_ok=True)
    counts, total = prep.scratch / "counts.parquet", prep.scratch / "total.parquet"
    pl.DataFrame({"rows": sorted(n for n, _ in found)}).write_parquet(counts)
    pl.DataFrame({"total": [sum(n for n, _ in found)]}).write_parquet(total)
    info = {"driver_pid": os.getpid(), "prepare_pids": sorted({pid for _, pid in found})}
    return Prepared(
        {"total": (str(total),)}, info, outputs={"counts": (str(counts),)}, stats={"rows_out": {"counts": len(found)}}
    )


@stage("t_prepared_whole", params=Params, reads=("interactions",), writes=("counts", "checked"), prepare=prepare_whole)
def prepared_whole(tables: Mapping[str, pl.LazyFrame], params: Params, ctx: Context) -> StageOutput:
    """A whole stage that checks its prepare step's total against its own count of the interactions."""
    import polars as pl

    total = tables["total"].collect().item()
    rows = tables["interactions"].select(pl.len()).collect().item()
    return StageOutput({"checked": pl.DataFrame({"total": [total], "rows": [rows]})}, StageStats())


def prepared_spec(path: Path, stage_name: str = "t_prepared") -> Path:
    """A spec: the demo's Amazon 2014 slice ingested, then ``stage_name`` in three buckets."""
    path.write_text(
        'name = "prepared"\npartitions = 3\n\n[[stages]]\nstage = "ingest"\n'
        'params.sources = [{ format = "amazon2014", paths = ["demo:amazon2014"] }]\n\n'
        f'[[stages]]\nstage = "{stage_name}"\n',
        encoding="utf-8",
    )
    return path


def ray_probe(task: int) -> dict:
    """:func:`probe` inside a Ray task, with the resources Ray assigned the task."""
    import ray

    return {**probe(task), "resources": ray.get_runtime_context().get_assigned_resources()}


@stage("t_where", params=Params, reads=("interactions",), writes=("where",))
def where(tables: Mapping[str, pl.LazyFrame], params: Params, ctx: Context) -> StageOutput:
    """A whole stage that notes in its stats whether it ran in a spawned worker process, and which."""
    import polars as pl

    rows = tables["interactions"].select(pl.len()).collect().item()
    info = {"spawned": multiprocessing.parent_process() is not None, "worker": worker_name()}
    return StageOutput({"where": pl.DataFrame({"rows": [rows]})}, StageStats(info=info))


class SizedParams(Params):
    allocate: int = 0  # bytes each task allocates and touches, as a task that needs that much memory


@stage("t_sized", params=SizedParams, reads=("interactions",), writes=("rows",), partition="user")
def sized(tables: Mapping[str, pl.LazyFrame], params: SizedParams, ctx: Context) -> StageOutput:
    """Each bucket passes its rows on and notes in its stats what it ran with: whether in a spawned
    worker, the thread bound set for it and polars' threads, whether a memory watch runs in its
    process, and the resources Ray assigned it (inside a Ray task)."""
    import threading

    import polars as pl

    allocate(params.allocate)
    ray = sys.modules.get("ray")
    seen = {
        "spawned": multiprocessing.parent_process() is not None,
        "threads": os.environ.get("POLARS_MAX_THREADS"),
        "polars": pl.thread_pool_size(),
        "watched": any(t.name == "recgpt-watch-memory" for t in threading.enumerate()),
        "resources": ray.get_runtime_context().get_assigned_resources() if ray and ray.is_initialized() else None,
    }
    return StageOutput({"rows": tables["interactions"].collect()}, StageStats(info={"tasks": [seen]}))


def sized_spec(path: Path, *entries: str) -> Path:
    """A spec: the demo's Amazon 2014 slice ingested (with ``entries[0]``'s lines), then a ``t_sized``
    stage in two buckets for each further entry, named ``sized_1``, ``sized_2``, ... (with its lines:
    ``task_cpus = 1``, ``params.allocate = ...``)."""
    ingest, *stages = entries
    text = (
        'name = "sized"\npartitions = 2\n\n[[stages]]\nstage = "ingest"\n'
        f'params.sources = [{{ format = "amazon2014", paths = ["demo:amazon2014"] }}]\n{ingest}\n'
    )
    for number, lines in enumerate(stages, 1):
        text += f'\n[[stages]]\nstage = "t_sized"\nid = "sized_{number}"\n{lines}\n'
    path.write_text(text, encoding="utf-8")
    return path


def where_spec(path: Path) -> Path:
    """A spec: the demo's Amazon 2014 slice ingested, then ``t_where``."""
    path.write_text(
        'name = "where"\n\n[[stages]]\nstage = "ingest"\n'
        'params.sources = [{ format = "amazon2014", paths = ["demo:amazon2014"] }]\n\n'
        '[[stages]]\nstage = "t_where"\n',
        encoding="utf-8",
    )
    return path


HOLD_HERE = "RECGPT_TEST_HOLD_HERE"  # set (to 1) in the environment of the Ray node whose buckets wait
WAIT_HERE = "RECGPT_TEST_WAIT_HERE"  # set (to 1) on the node whose buckets wait until one is held
HOLD_SECONDS = 120.0  # how long a bucket waits for the test's next step before it fails


class HoldParams(Params):
    sync: str  # the folder where each bucket notes that it started


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``condition`` every tenth of a second until it holds, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {seconds:g} s for {what}")
        time.sleep(0.1)


@stage("t_hold", params=HoldParams, reads=("interactions",), writes=("held",), partition="user")
def hold(tables: Mapping[str, pl.LazyFrame], params: HoldParams, ctx: Context) -> StageOutput:
    """Each bucket notes in ``params.sync`` that it started (``ran-<bucket>-<held|free>-<pid>``) and
    passes its rows on. On a node started with :data:`HOLD_HERE` it waits instead, until the test
    kills the node (and this process with it); on one started with :data:`WAIT_HERE` it first waits
    until a bucket is held, so that this node's one CPU stays taken and the next bucket goes to the
    other node. Elsewhere (a local run) it waits for nothing."""
    index = ctx.partition[0] if ctx.partition is not None else 0
    held = os.environ.get(HOLD_HERE) == "1"
    sync = Path(params.sync)
    sync.mkdir(parents=True, exist_ok=True)
    (sync / f"ran-{index}-{'held' if held else 'free'}-{os.getpid()}").touch()
    if held:
        wait_until(lambda: False, HOLD_SECONDS, f"the test to kill the node of bucket {index}")
    if os.environ.get(WAIT_HERE) == "1":
        wait_until(lambda: any(sync.glob("ran-*-held-*")), HOLD_SECONDS, "a bucket to start on the node that holds")
    return StageOutput({"held": tables["interactions"].collect()}, StageStats())


def hold_spec(path: Path, sync: Path) -> Path:
    """A spec: the demo's Amazon 2014 slice ingested, then ``t_hold`` in two buckets."""
    path.write_text(
        'name = "hold"\npartitions = 2\n\n[[stages]]\nstage = "ingest"\n'
        'params.sources = [{ format = "amazon2014", paths = ["demo:amazon2014"] }]\n\n'
        f'[[stages]]\nstage = "t_hold"\nparams.sync = "{sync}"\n',
        encoding="utf-8",
    )
    return path


def where_task(seconds: float) -> str:
    """A task that keeps its CPU ``seconds`` long, then says where it ran (``host:pid@node`` in a Ray
    worker)."""
    from recgpt_data.engines import worker_name

    time.sleep(seconds)
    return worker_name()


def allocate(size: int) -> int:
    """Allocate and touch ``size`` bytes, as a task that needs that much memory; their sum."""
    import numpy as np

    return int(np.ones(size, dtype=np.uint8).sum())
