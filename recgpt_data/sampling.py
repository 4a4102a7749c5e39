"""A consistent per-user sample, for a dry run of a whole pipeline on a fraction of its users.

A user is kept when the seeded stable hash of its id (:func:`recgpt_data.hashing.unit_interval` of
``sample<US><user_id>``, salted so that the draw is independent of the split's and every other
seeded draw on user ids) falls below the fraction. The ``ingest`` stage applies it to the
interactions it reads, so every later stage sees the same users, in every dataset and on every
machine; items are kept whole. ``recgpt-data run --sample FRACTION`` sets the fraction on every
ingest stage of the spec, which makes it part of their parameters and so of every fingerprint.
"""

from __future__ import annotations

import polars as pl

from recgpt_data.errors import UsageError
from recgpt_data.hashing import unit_interval
from recgpt_data.pipeline.spec import PipelineSpec
from recgpt_data.stage import Drops

SALT = "sample"
REASON = "user_not_sampled"


def sampled(user_ids: pl.Series, fraction: float, seed: int) -> pl.Series:
    """Whether each user id is in the sample of ``fraction`` drawn with ``seed``."""
    draws = unit_interval((SALT + "\x1f" + user_ids.cast(pl.String)).alias(user_ids.name), seed)
    return (draws < fraction).alias("sampled")


def in_sample(fraction: float, seed: int) -> pl.Expr:
    """The rows of sampled users, as a filter on ``user_id``."""
    return pl.col("user_id").map_batches(
        lambda ids: sampled(ids, fraction, seed), return_dtype=pl.Boolean, is_elementwise=True
    )


def split_sample(interactions: pl.LazyFrame, fraction: float, seed: int) -> tuple[pl.LazyFrame, Drops]:
    """The interactions of sampled users, and the others as dropped rows like any other drop."""
    keep = in_sample(fraction, seed)
    drops = Drops()
    drops.add("interactions", interactions.filter(~keep), REASON)
    return interactions.filter(keep), drops


def with_sample(spec: PipelineSpec, fraction: float) -> PipelineSpec:
    """``spec`` with every ingest stage keeping only the users in a sample of ``fraction``."""
    if not 0 < fraction <= 1:
        raise UsageError(f"--sample wants a fraction in (0, 1], got {fraction}")
    if not any(s.stage == "ingest" for s in spec.stages):
        raise UsageError(f"--sample: {spec.name} has no ingest stage to sample the users of")
    stages = [
        s.model_copy(update={"params": {**s.params, "sample": fraction}}) if s.stage == "ingest" else s
        for s in spec.stages
    ]
    return spec.model_copy(update={"stages": stages})


def sample_folder(name: str, fraction: float) -> str:
    """The default output folder name of a sampled run, beside (never inside) the full build's."""
    return f"{name}-sample-{fraction:g}"
