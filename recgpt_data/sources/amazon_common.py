"""What the Amazon releases (2014, 2018, 2023) share: dataset naming and RecGPT's templates."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recgpt_data.sources.base import Template, strip_name

ASIN = r"[0-9A-Z]{10}"  # Amazon's item ids (an ISBN-10 for books)
AMAZON_USER = r"[0-9A-Z]+"  # reviewer ids: upper-case letters and digits

AMAZON_TEMPLATES = Template(
    noun="products",
    fields=("Title", "Brand", "Review", "Rating"),
    response_fields=("Title", "Brand"),
)
BOOKS_TEMPLATE = Template(
    noun="books",
    fields=("Title", "Author", "Review", "Rating"),
    response_fields=("Title", "Author"),
)


def amazon_dataset(release: str, path: Path) -> str:
    """``amazon2018/All_Beauty`` from ``All_Beauty_5.json``, ``meta_All_Beauty.json.gz`` or
    ``reviews_All_Beauty_5.json.gz``."""
    return f"{release}/{strip_name(path, prefixes=('reviews_', 'meta_'), suffixes=('_5',))}"


def extras_json(**fields: pl.Expr) -> pl.Expr:
    """A JSON object of the given source-specific fields (null fields left out by the encoder)."""
    return pl.struct(**fields).struct.json_encode()
