"""recgpt-data: build RecGPT's pre-training corpus, instruction set and benchmarks from raw dumps."""

__version__ = "0.1.0"
