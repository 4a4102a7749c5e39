"""Benchmarks in P5's protocol (Amazon Beauty, Sports and Outdoors, Toys and Games, Yelp 2019): splits
built from raw data or loaded from P5's own files, and their test prompts.

Every benchmark adds its validation and test (user, item) pairs to the ``held_out`` table
(:data:`HELD_OUT`), which the ``hold_out`` stage keeps out of pre-training and instruction data."""

from __future__ import annotations

import polars as pl

TRAIN, VALIDATION, TEST = "train", "validation", "test"
PAIR = ("user_id", "item_id")
HELD_OUT: dict[str, pl.DataType] = {
    "benchmark": pl.String(),
    "dataset": pl.String(),
    "user_id": pl.String(),
    "item_id": pl.String(),
    "split": pl.String(),
}
