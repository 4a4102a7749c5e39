"""Imports every module that registers a stage, so that the registry is complete."""

from recgpt_data import (  # noqa: F401
    corpus,
    ingest,
    pretrain_tokens,
    report,
    split,
)
from recgpt_data.benchmarks import build  # noqa: F401
from recgpt_data.clean import filters, langid, text  # noqa: F401
from recgpt_data.dedup import cross_release, scopes  # noqa: F401
from recgpt_data.instruct import pairs, write  # noqa: F401
from recgpt_data.publish import card  # noqa: F401
