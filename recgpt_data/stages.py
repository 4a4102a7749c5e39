"""Imports every module that registers a stage, so that the registry is complete."""

from recgpt_data import ingest  # noqa: F401
