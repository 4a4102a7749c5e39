"""Cleaning: text repair (``text``), language identification (``langid``) and RecGPT's row
filters (``filters``), each registered as a pipeline stage: ``clean_items``, ``clean``,
``langid``, ``filter_users``, ``kcore``."""
