"""recgpt_train: a thin packed-sequence trainer for MPT models on the corpora that recgpt-data builds."""
