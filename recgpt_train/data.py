"""Read the pre-training or instruction config of a built corpus; tokenize instruction pairs with the model's tokenizer."""

from __future__ import annotations

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


def has_split(source: str | Path | datasets.Dataset, config: str, split: str) -> bool:
    """Whether ``source`` has ``split`` of ``config`` (a ``Dataset`` has only the one it is)."""
    if isinstance(source, datasets.Dataset):
        return False
    if (Path(source) / "dataset_info.json").is_file() or (Path(source) / "state.json").is_file():
        return False
    return split in datasets.get_dataset_split_names(str(source), config)


def tokenize_pairs(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerFast) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) per row, each encoded apart and joined by nothing, as llm-foundry's
    ``finetuning`` loader feeds them (the prompt ends in ``### Response:``, the response follows)."""
    pairs: list[tuple[list[int], list[int]]] = []
    columns = ds.select_columns(["prompt", "response"])
    for start in range(0, len(ds), BATCH):
        batch = columns[start : start + BATCH]
        prompts = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
        responses = tokenizer(batch["response"], add_special_tokens=False)["input_ids"]
        pairs.extend(zip(prompts, responses, strict=True))
    return pairs
