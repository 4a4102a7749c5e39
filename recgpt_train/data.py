"""Read the pre-training or instruction config of a built corpus and tokenize it with the model's tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerFast

from recgpt_data.tokenizer import DEFAULT_TOKENIZER

EOS_TOKEN = "<|endoftext|>"
REQUIRED = {"pretrain": ("text",), "instruct": ("prompt", "response")}
BATCH = 1024


def load_tokenizer(path: str | Path = DEFAULT_TOKENIZER) -> PreTrainedTokenizerFast:
    """The model's tokenizer from a local ``tokenizer.json`` (GPT-NeoX-20B for MPT), never downloaded."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {path}")
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS_TOKEN)


def load_split(source: str | Path | datasets.Dataset, config: str, split: str = "train") -> datasets.Dataset:
    """One split of ``config`` from a built folder, a ``save_to_disk`` folder, a Hub repo id, or a Dataset."""
    if isinstance(source, datasets.Dataset):
        ds = source
    elif (Path(source) / "dataset_info.json").is_file() or (Path(source) / "state.json").is_file():
        ds = datasets.load_from_disk(str(source))
    else:
        ds = datasets.load_dataset(str(source), config, split=split)
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split]
    missing = [c for c in REQUIRED[config] if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source}: the {config} config needs columns {missing}; found {ds.column_names}")
    return ds


def _batches(ds: datasets.Dataset, columns: tuple[str, ...]) -> Iterator[dict[str, list]]:
    for start in range(0, len(ds), BATCH):
        yield ds.select_columns(list(columns))[start : start + BATCH]


def tokenize_documents(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerFast) -> list[list[int]]:
    """Token ids of every ``text`` (no special tokens; packing adds EOS)."""
    docs: list[list[int]] = []
    for batch in _batches(ds, ("text",)):
        docs.extend(tokenizer(batch["text"], add_special_tokens=False)["input_ids"])
    return docs


def tokenize_pairs(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerFast, separator: str = "\n"
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) per row; the prompt is tokenized with ``separator`` appended."""
    pairs: list[tuple[list[int], list[int]]] = []
    for batch in _batches(ds, ("prompt", "response")):
        prompts = tokenizer([p + separator for p in batch["prompt"]], add_special_tokens=False)["input_ids"]
        responses = tokenizer(batch["response"], add_special_tokens=False)["input_ids"]
        pairs.extend(zip(prompts, responses, strict=True))
    return pairs
