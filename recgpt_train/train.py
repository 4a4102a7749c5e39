"""The training loop: packed rows, Lion, cosine schedule, grad accumulation, FSDP, checkpoint and resume.

The loss of an optimizer step is the sum of token losses over all its micro-batches on all ranks divided
by the number of loss tokens in that whole step (counted up front and all-reduced), so each token weighs
the same however examples fall into micro-batches.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.nn import functional as F
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from transformers import MptConfig, PreTrainedTokenizerFast

from recgpt_train.attention import packed_attention_mask, set_attention
from recgpt_train.config import TrainConfig
from recgpt_train.data import (
    load_split,
    load_tokenizer,
    tokenize_documents,
    tokenize_pairs,
)
from recgpt_train.lion import DecoupledLionW
from recgpt_train.model import (
    build_model,
    count_params,
    enable_activation_checkpointing,
    mpt_config,
)
from recgpt_train.packing import IGNORE, PackedRows, pack_documents, pack_instructions
from recgpt_train.schedule import build_scheduler

CHECKPOINT = "checkpoint.pt"


@dataclass
class Runtime:
    """Where this process runs: rank, world size, device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime() -> Runtime:
    """Single process, or one rank of a ``torchrun`` job (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Runtime(dist.get_rank() if world > 1 else 0, world, device)


def build_rows(cfg: TrainConfig, source: object = None) -> PackedRows:
    """Load, tokenize and pack the configured split (every rank does the same, deterministically)."""
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    ds = load_split(source if source is not None else cfg.data.source, cfg.data.config, cfg.data.split)
    if cfg.data.max_examples is not None:
        ds = ds.select(range(min(cfg.data.max_examples, len(ds))))
    seq_len = model_config(cfg).max_seq_len
    eos = tokenizer.eos_token_id
    if cfg.task == "pretrain":
        return pack_documents(tokenize_documents(ds, tokenizer), seq_len, eos, cfg.data.doc_masking)
    return pack_instructions(tokenize_pairs(ds, tokenizer, cfg.data.response_separator), seq_len, eos)


def model_config(cfg: TrainConfig) -> MptConfig:
    """The MPT config of the run (preset plus explicit sizes)."""
    m = cfg.model
    return mpt_config(
        m.preset, d_model=m.d_model, n_heads=m.n_heads, n_layers=m.n_layers, vocab_size=m.vocab_size,
        max_seq_len=m.max_seq_len,
    )


def _shard(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    """FSDP2 (``fully_shard``) per transformer block and at the root; bf16 compute, fp32 reductions."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    kwargs = {"mp_policy": mp} if cfg.precision == "bf16" else {}
    for block in model.transformer.blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler, position: dict, rt: Runtime
) -> None:
    """Full (unsharded) model and optimizer state, scheduler, data position and RNG, written by rank 0."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
    if rt.main:
        payload = {
            "model": model_sd, "optimizer": optim_sd, "scheduler": scheduler.state_dict(),
            "position": position, "rng": _rng_state(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
    if rt.world > 1:
        dist.barrier()


def load_checkpoint(path: Path, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler) -> dict:
    """Restore everything :func:`save_checkpoint` wrote; returns the data position to continue from."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    set_state_dict(
        model, optimizer, model_state_dict=payload["model"], optim_state_dict=payload["optimizer"],
        options=StateDictOptions(full_state_dict=True),
    )
    scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(payload["rng"])
    return payload["position"]


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of one epoch: a seeded permutation, so a step number fixes the data position."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def step_micro_batches(
    rows: PackedRows, cfg: TrainConfig, rt: Runtime, step: int, steps_per_epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """This rank's micro-batches (input_ids, labels, seq_ids) for optimizer step ``step``."""
    epoch, index = divmod(step, steps_per_epoch)
    order = epoch_order(len(rows), cfg.seed, epoch)
    per_rank = cfg.global_batch_size // rt.world
    start = index * cfg.global_batch_size + rt.rank * per_rank
    mine = order[start : start + per_rank]
    for at in range(0, per_rank, cfg.micro_batch_size):
        idx = np.sort(mine[at : at + cfg.micro_batch_size])
        yield tuple(torch.from_numpy(a[idx]).long().to(rt.device) for a in (rows.input_ids, rows.labels, rows.seq_ids))


def _all_sum(value: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.world > 1:
        dist.all_reduce(value)
    return value


def train(cfg: TrainConfig, resume: bool = False, stop_at: int | None = None, source: object = None) -> list[dict]:
    """Run (or resume) training; returns the per-step log records. ``stop_at`` ends early, as an interruption."""
    rt = setup_runtime()
    if cfg.global_batch_size % (cfg.micro_batch_size * rt.world):
        raise ValueError(f"global_batch_size {cfg.global_batch_size} is not a multiple of micro x world")
    out = Path(cfg.out_dir)
    rows = build_rows(cfg, source)
    steps_per_epoch = len(rows) // cfg.global_batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(rows)} packed rows cannot fill one global batch of {cfg.global_batch_size}")
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        packing = {**rows.stats.as_dict(), "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                   "rows_unused_per_epoch": len(rows) - steps_per_epoch * cfg.global_batch_size}
        (out / "packing.json").write_text(json.dumps(packing, indent=2) + "\n")
        print(json.dumps({"packing": packing}), flush=True)

    torch.manual_seed(cfg.seed)
    model = build_model(model_config(cfg), cfg.model.pretrained, cfg.model.init_seed)
    set_attention(model, cfg.attention)
    if cfg.activation_checkpointing:
        enable_activation_checkpointing(model)
    model.to(rt.device)
    sharded = rt.world > 1 and cfg.fsdp
    if sharded:
        model = _shard(model, cfg)
    elif rt.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = DecoupledLionW(
        model.parameters(), lr=cfg.peak_lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
    )
    scheduler = build_scheduler(optimizer, cfg.optim.warmup_steps, total_steps, cfg.optim.final_lr_ratio)
    step = 0
    if resume:
        position = load_checkpoint(out / CHECKPOINT, model, optimizer, scheduler)
        if position["rows"] != len(rows) or position["steps_per_epoch"] != steps_per_epoch:
            raise ValueError(f"checkpoint was taken on {position['rows']} packed rows, this data packs {len(rows)}")
        step = position["step"]
    if rt.main:
        print(json.dumps({"params": count_params(model), "world": rt.world, "start_step": step}), flush=True)

    autocast = (
        torch.autocast(rt.device.type, dtype=torch.bfloat16)
        if cfg.precision == "bf16" and not sharded else nullcontext()
    )
    records: list[dict] = []
    model.train()
    end = min(total_steps, stop_at) if stop_at is not None else total_steps
    while step < end:
        began = time.perf_counter()
        micro = list(step_micro_batches(rows, cfg, rt, step, steps_per_epoch))
        local_count = sum(int((labels != IGNORE).sum()) for _, labels, _ in micro)
        count = _all_sum(torch.tensor(float(local_count), device=rt.device), rt)
        loss_sum = torch.zeros((), device=rt.device)
        tokens = torch.zeros((), device=rt.device)
        for i, (ids, labels, seq) in enumerate(micro):
            if sharded:
                model.set_requires_gradient_sync(i == len(micro) - 1)
            with autocast:
                logits = model(input_ids=ids, attention_mask=packed_attention_mask(seq), use_cache=False).logits
            token_loss = F.cross_entropy(
                logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"
            )
            (token_loss * rt.world / count.clamp(min=1)).backward()
            loss_sum += token_loss.detach()
            tokens += (seq >= 0).sum()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss = (_all_sum(loss_sum, rt) / count.clamp(min=1)).item()
        seconds = time.perf_counter() - began
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        record = {
            "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm.item(), "loss_tokens": int(count.item()),
            "tokens_per_s": _all_sum(tokens, rt).item() / seconds, "packing_efficiency": round(rows.stats.efficiency, 6),
        }
        records.append(record)
        if rt.main and (step % cfg.log_every == 0 or step == end):
            print(json.dumps(record), flush=True)
            with open(out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if step % cfg.save_every == 0 or step == end:
            epoch, batch = divmod(step, steps_per_epoch)
            position = {"step": step, "epoch": epoch, "batch_in_epoch": batch, "rows": len(rows),
                        "steps_per_epoch": steps_per_epoch}
            save_checkpoint(out / CHECKPOINT, model, optimizer, scheduler, position, rt)
    if step == total_steps:
        export_hf(model, load_tokenizer(cfg.data.tokenizer), out / "hf", rt)
    return records


def export_hf(model: nn.Module, tokenizer: PreTrainedTokenizerFast, path: Path, rt: Runtime) -> None:
    """The trained model and its tokenizer as a Hugging Face folder (``from_pretrained``), by rank 0."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rt.main:
        getattr(model, "module", model).save_pretrained(path, state_dict=state)
        tokenizer.save_pretrained(path)
    if rt.world > 1:
        dist.barrier()
