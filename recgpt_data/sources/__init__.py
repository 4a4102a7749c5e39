"""The source formats RecGPT draws on, one module each, looked up by name."""

from __future__ import annotations

import importlib

from recgpt_data.errors import UsageError
from recgpt_data.sources.base import Source

FORMATS = (
    "amazon2014",
    "amazon2018",
    "amazon2023",
    "yelp",
    "movielens",
    "goodreads",
    "steam",
    "bookcrossing",
    "anime",
    "netflix",
    "foodcom",
    "hotelrec",
    "wikirec",
)


def get_source(name: str) -> Source:
    """The :class:`Source` declared by ``recgpt_data.sources.<name>``."""
    if name not in FORMATS:
        raise UsageError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return importlib.import_module(f"recgpt_data.sources.{name}").SOURCE
