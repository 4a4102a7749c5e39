"""Imports every module that registers a stage, so that the registry is complete."""

from recgpt_data import ingest  # noqa: F401
from recgpt_data import corpus, split  # noqa: F401
from recgpt_data import report  # noqa: F401
from recgpt_data.publish import card  # noqa: F401
