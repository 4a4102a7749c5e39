"""Training configuration: the RecGPT recipe as defaults, model presets, YAML/TOML loading."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recgpt_data.tokenizer import DEFAULT_TOKENIZER

PEAK_LR = {"pretrain": 2.5e-5, "instruct": 1e-5}


class Strict(BaseModel):
    """A config section that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    """The MPT architecture, and where its starting weights come from."""

    preset: Literal["mpt-7b", "mpt-1b", "tiny", "custom"] = "mpt-7b"
    d_model: int | None = None
    n_heads: int | None = None
    n_layers: int | None = None
    vocab_size: int | None = None
    max_seq_len: int | None = None
    pretrained: str | None = Field(None, description="path or Hub id of base weights (e.g. mosaicml/mpt-7b)")
    init_seed: int = 0


class DataConfig(Strict):
    """Which dataset, config and splits to read, and how to tokenize and pack it."""

    source: str = Field(description="built folder, Hub repo id, or saved datasets folder")
    config: Literal["pretrain", "instruct"] = "pretrain"
    split: str = "train"
    validation_split: str | None = "validation"  # skipped where the source has no such split
    tokenizer: str = str(DEFAULT_TOKENIZER)
    doc_masking: bool = False
    max_examples: int | None = None


class OptimConfig(Strict):
    """Decoupled Lion with a cosine schedule (RecGPT: betas 0.9/0.98, weight decay 1e-7, clip 1.0)."""

    lr: float | None = Field(None, description="peak lr; default 2.5e-5 for pretrain, 1e-5 for instruct")
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1e-7
    grad_clip: float = 1.0
    warmup_steps: int = 200  # RecGPT's fine-tuning.yaml: t_warmup 200ba
    final_lr_ratio: float = 0.1


class TrainConfig(Strict):
    """A whole training run."""

    task: Literal["pretrain", "instruct"] = "pretrain"
    model: ModelConfig = ModelConfig()
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    global_batch_size: int = Field(128, description="examples per optimizer step (blocks for pretrain, pairs for instruct)")
    micro_batch_size: int = Field(1, description="rows per forward pass on each rank")
    epochs: int = 2
    max_steps: int | None = None
    precision: Literal["bf16", "fp32"] = "bf16"
    attention: Literal["auto", "eager", "sdpa", "flex"] = "auto"  # auto: flex on a GPU, sdpa on the CPU
    compile: bool | None = None  # torch.compile each block; default: on a GPU
    activation_checkpointing: bool = False
    loss_chunk: int = Field(4096, ge=1, description="tokens of logits the loss computes at a time")
    seed: int = 17
    out_dir: str = "runs/recgpt"
    save_every: int = 500
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(0, ge=0, description="validation loss every N steps (0: never)")
    eval_examples: int = Field(256, ge=1, description="validation examples, the first ones of the split")
    log_every: int = 10
    tensorboard: bool = True
    fsdp: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.data.config != self.task:
            raise ValueError(f"task {self.task!r} reads data config {self.task!r}, not {self.data.config!r}")
        if self.task == "pretrain" and self.global_batch_size % self.micro_batch_size:
            raise ValueError("global_batch_size must be a multiple of micro_batch_size")
        return self

    @property
    def peak_lr(self) -> float:
        """The peak learning rate: the explicit one, else RecGPT's for this task."""
        return self.optim.lr if self.optim.lr is not None else PEAK_LR[self.task]


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML or TOML recipe; ``overrides`` (nested dicts) replace keys before validation."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    text = path.read_text()
    raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise TypeError(f"{path}: a config must be a mapping")
    return TrainConfig.model_validate(_merge(raw, overrides or {}))


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out
