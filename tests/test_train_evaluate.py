"""``evaluate`` on prompts longer than the model's context: the oldest history items go first, each
shortened prompt is counted, and generation runs without an error."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from authors_pairs import authors_rows
from tokenizers import Tokenizer

from recgpt_train.evaluate import ModelGenerator, Prompt, main

CONTEXT, NEW = 256, 8


@pytest.fixture(scope="module")
def prompts(shared) -> list[Prompt]:
    """The authors' longest next-item and longest rating pair (each well over 256 tokens)."""
    rows = authors_rows(shared)
    chosen = [max(rows[:10], key=lambda r: len(r["prompt"])), max(rows[10:], key=lambda r: len(r["prompt"]))]
    return [
        Prompt("next_item" if i == 0 else "rating", str(i), "x", r["prompt"], r["response"], None, None, ())
        for i, r in enumerate(chosen)
    ]


def test_long_prompts_lose_their_oldest_items_first_and_are_counted(prompts, shared, tmp_path):
    from transformers import MptConfig, MptForCausalLM

    torch.manual_seed(0)
    MptForCausalLM(MptConfig(d_model=32, n_heads=2, n_layers=1, vocab_size=50432, max_seq_len=CONTEXT)).save_pretrained(
        tmp_path / "model"
    )
    tokenizer_file = shared.parent / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"
    generator = ModelGenerator.from_path(
        tmp_path / "model", tokenizer_file, max_new_tokens={"rating": NEW, "next_item": NEW}, progress=False
    )
    tok = Tokenizer.from_file(str(tokenizer_file))
    for prompt in prompts:
        (text,) = generator.fitted([prompt], prompt.task)
        original = prompt.prompt.split("\n")
        kept = text.split("\n")
        assert len(tok.encode(text).ids) <= CONTEXT - NEW < len(tok.encode(prompt.prompt).ids)
        assert kept[:4] == original[:4] and kept[-4:] == original[-4:]  # instruction head, newest items, tail
        removed = len(original) - len(kept)
        assert removed > 0 and kept[4:] == original[4 + removed :]  # the oldest items went, in order
        one_back = "\n".join(original[:4] + original[4 + removed - 1 :])
        assert len(tok.encode(one_back).ids) > CONTEXT - NEW  # no more than needed
        generated = generator.generate([prompt], prompt.task)
        assert len(generated[0]) == (1 if prompt.task == "rating" else 10)
    # each prompt fitted twice: once above, once by generate
    assert {task: counts["prompts_shortened"] for task, counts in generator.truncation.items()} == {
        "next_item": 2,
        "rating": 2,
    }


def test_evaluate_reports_a_missing_benchmark_folder_without_a_traceback(tmp_path, capsys):
    generations = tmp_path / "g.jsonl"
    generations.write_text("")
    assert main([str(tmp_path / "nowhere"), "--generations", str(generations)]) == 2
    assert "not a benchmark folder" in capsys.readouterr().err
