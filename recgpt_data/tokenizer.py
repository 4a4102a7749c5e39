"""The tokenizer that counts tokens: GPT-NeoX-20B (MPT-7B's) by default, bundled for offline use."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from recgpt_data.errors import UsageError

DEFAULT_TOKENIZER = Path(__file__).resolve().parent / "assets" / "gpt-neox-20b" / "tokenizer.json"
DEFAULT_NAME = "EleutherAI/gpt-neox-20b"


@lru_cache(maxsize=4)
def load_tokenizer(path: str | Path | None = None) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file or a folder holding one (default:
    the bundled GPT-NeoX-20B). Never downloads."""
    path = Path(path) if path else DEFAULT_TOKENIZER
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UsageError(f"no tokenizer.json at {path}")
    return Tokenizer.from_file(str(path))


def tokenizer_sha256(path: str | Path | None = None) -> str:
    """sha256 of the tokenizer file, recorded in manifests so counts can be checked later."""
    path = Path(path) if path else DEFAULT_TOKENIZER
    if path.is_dir():
        path = path / "tokenizer.json"
    return hashlib.sha256(path.read_bytes()).hexdigest()
