"""The RecGPT authors' 20 prompt/response pairs (../shared/data/recgpt_sample), as their JSONL file
holds them and as GPT-NeoX-20B token ids."""

from __future__ import annotations

import json
from pathlib import Path

from recgpt_data.tokenizer import load_tokenizer


def authors_rows(shared: Path) -> list[dict]:
    """The pairs as the authors wrote them: ``prompt``, ``response`` and their other fields."""
    path = shared / "recgpt_sample" / "sample_prompt_response_pairs.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def authors_token_pairs(shared: Path) -> list[tuple[list[int], list[int]]]:
    """Each pair's prompt and response as token ids of the bundled GPT-NeoX-20B tokenizer."""
    tok = load_tokenizer()
    return [(tok.encode(r["prompt"]).ids, tok.encode(r["response"]).ids) for r in authors_rows(shared)]
