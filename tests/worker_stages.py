"""What the local worker tests run inside worker processes: a probe of the threads each library
uses there, and a partitioned stage whose second bucket kills its own worker; importing this module
registers the stage."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

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


def crash_spec(path: Path) -> Path:
    """A spec: the demo's Amazon 2014 slice ingested, then ``t_crash`` in two buckets."""
    path.write_text(
        'name = "crash"\npartitions = 2\n\n[[stages]]\nstage = "ingest"\n'
        'params.sources = [{ format = "amazon2014", paths = ["demo:amazon2014"] }]\n\n'
        '[[stages]]\nstage = "t_crash"\n',
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


def prepared_spec(path: Path) -> Path:
    """A spec: the demo's Amazon 2014 slice ingested, then ``t_prepared`` in three buckets."""
    path.write_text(
        'name = "prepared"\npartitions = 3\n\n[[stages]]\nstage = "ingest"\n'
        'params.sources = [{ format = "amazon2014", paths = ["demo:amazon2014"] }]\n\n'
        '[[stages]]\nstage = "t_prepared"\n',
        encoding="utf-8",
    )
    return path
