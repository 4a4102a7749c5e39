"""The training loop: examples by step, packed rows, Lion, cosine schedule, grad accumulation, FSDP,
validation, checkpoints and resume.

The loss of an optimizer step is the sum of token losses over all its micro-batches on all ranks divided
by the number of loss tokens in that whole step (counted up front and all-reduced), so each token weighs
the same however examples fall into micro-batches.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import MptConfig, PreTrainedTokenizerFast

from recgpt_train.batches import epoch_steps, micro_batches, micro_steps, rank_bins, step_examples
from recgpt_train.checkpoint import CHECKPOINTS, load_checkpoint, save_checkpoint
from recgpt_train.config import TrainConfig
from recgpt_train.data import has_split, load_split, load_tokenizer, tokenize_pairs
from recgpt_train.examples import InstructionExamples, StreamBlocks
from recgpt_train.lion import DecoupledLionW
from recgpt_train.logs import RunLog
from recgpt_train.model import PackedMpt, build_model, count_params, mpt_config
from recgpt_train.packing import IGNORE
from recgpt_train.schedule import build_scheduler
from recgpt_train.tokens import TokenStream, open_token_stream, token_splits, tokenize_stream

Examples = StreamBlocks | InstructionExamples


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


def model_config(cfg: TrainConfig) -> MptConfig:
    """The MPT config of the run (preset plus explicit sizes)."""
    m = cfg.model
    return mpt_config(
        m.preset, d_model=m.d_model, n_heads=m.n_heads, n_layers=m.n_layers, vocab_size=m.vocab_size,
        max_seq_len=m.max_seq_len,
    )


def load_examples(cfg: TrainConfig, split: str, source: object = None) -> Examples:
    """The examples of ``split``: memory-mapped token shards where the built folder has them, a given
    :class:`TokenStream` as it is, else text tokenised here."""
    source = source if source is not None else cfg.data.source
    seq_len = model_config(cfg).max_seq_len
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    if cfg.task == "pretrain":
        stream = source if isinstance(source, TokenStream) else None
        if isinstance(source, (str, Path)):
            stream = open_token_stream(source, split)
        if stream is None:
            stream = tokenize_stream(load_split(source, cfg.data.config, split), tokenizer)
        blocks = StreamBlocks(stream, seq_len, cfg.data.doc_masking)
        if cfg.data.max_examples is not None:
            blocks.count = min(blocks.count, cfg.data.max_examples)
        return blocks
    ds = load_split(source, cfg.data.config, split)
    if cfg.data.max_examples is not None:
        ds = ds.select(range(min(cfg.data.max_examples, len(ds))))
    return InstructionExamples(tokenize_pairs(ds, tokenizer), seq_len, tokenizer.eos_token_id)


def load_validation(cfg: TrainConfig, source: object = None) -> Examples | None:
    """The validation examples where validation is on and the source has the split, else ``None``."""
    split = cfg.data.validation_split
    source = source if source is not None else cfg.data.source
    if not cfg.eval_every or split is None:
        return None
    shards = token_splits(source) if cfg.task == "pretrain" and isinstance(source, (str, Path)) else None
    present = split in shards if shards is not None else has_split(source, cfg.data.config, split)
    examples = load_examples(cfg, split, source) if present else None
    return examples if examples is not None and len(examples) else None


def resolve_attention(cfg: TrainConfig, device: torch.device) -> str:
    """``auto``: flex attention on a GPU, SDPA on the CPU (flex attention has no CPU backward)."""
    if cfg.attention == "auto":
        return "flex" if device.type == "cuda" else "sdpa"
    if cfg.attention == "flex" and device.type != "cuda":
        raise ValueError("attention: flex trains on a GPU only (torch has no flex-attention backward on the CPU)")
    return cfg.attention


def _shard(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """FSDP2 (``fully_shard``) per transformer block and at the root; bf16 compute, fp32 reductions."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    kwargs = {"mp_policy": mp} if cfg.precision == "bf16" else {}
    for block in model.model.transformer.blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _all_sum(value: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.world > 1:
        dist.all_reduce(value)
    return value


def _tensors(rows: tuple[np.ndarray, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a).to(device, non_blocking=True) for a in rows)


def rank_rows(examples: Examples, bins: list[list[int]], cfg: TrainConfig, rt: Runtime, pad_id: int) -> list:
    """This rank's micro-batches of the rows ``bins`` lists (the same count on every rank)."""
    count = micro_steps(len(bins), rt.world, cfg.micro_batch_size)
    return micro_batches(examples.rows(rank_bins(bins, rt.rank, rt.world)), count, cfg.micro_batch_size, pad_id)


def validation_loss(model: nn.Module, examples: Examples, cfg: TrainConfig, rt: Runtime, autocast, pad_id: int) -> dict:
    """Token-weighted loss over the first ``eval_examples`` validation examples, all ranks together."""
    bins = examples.bins(np.arange(min(len(examples), cfg.eval_examples)))
    total = torch.zeros((), device=rt.device)
    count = torch.zeros((), device=rt.device)
    model.eval()
    with torch.no_grad():
        for ids, labels, seq in (_tensors(m, rt.device) for m in rank_rows(examples, bins, cfg, rt, pad_id)):
            with autocast:
                total += model(ids, seq, labels).float()
            count += (labels != IGNORE).sum()
    model.train()
    total, count = _all_sum(total, rt), _all_sum(count, rt)
    return {"val_loss": (total / count.clamp(min=1)).item(), "val_tokens": int(count.item())}


def train(cfg: TrainConfig, resume: bool = False, stop_at: int | None = None, source: object = None) -> list[dict]:
    """Run (or resume) training; returns the per-step log records. ``stop_at`` ends early, as an interruption
    (after the last checkpoint of ``save_every``, nothing is saved)."""
    began = time.perf_counter()
    rt = setup_runtime()
    if cfg.task == "pretrain" and cfg.global_batch_size % (cfg.micro_batch_size * rt.world):
        raise ValueError(f"global_batch_size {cfg.global_batch_size} is not a multiple of micro x world")
    attention = resolve_attention(cfg, rt.device)
    out = Path(cfg.out_dir)
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    pad_id = tokenizer.eos_token_id
    examples = load_examples(cfg, cfg.data.split, source)
    validation = load_validation(cfg, source)
    batch = cfg.global_batch_size
    steps_per_epoch = len(examples) // batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(examples)} examples cannot fill one global batch of {batch}")
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        if isinstance(examples, InstructionExamples):  # packing depends on which examples share a step
            stats = examples.stats(epoch_steps(len(examples), batch, cfg.seed, 0))
        else:
            stats = examples.stats()
        packing = {**stats.as_dict(), "global_batch_examples": batch, "steps_per_epoch": steps_per_epoch,
                   "total_steps": total_steps, "examples_unused_per_epoch": len(examples) - steps_per_epoch * batch,
                   "validation_examples": min(len(validation), cfg.eval_examples) if validation else 0}
        (out / "packing.json").write_text(json.dumps(packing, indent=2) + "\n")
        print(json.dumps({"packing": packing}), flush=True)

    torch.manual_seed(cfg.seed)
    compile_blocks = cfg.compile if cfg.compile is not None else rt.device.type == "cuda"
    model: nn.Module = PackedMpt(
        build_model(model_config(cfg), cfg.model.pretrained, cfg.model.init_seed, rt.device), attention,
        cfg.activation_checkpointing, compile_blocks, cfg.loss_chunk,
    ).to(rt.device)
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
        position = load_checkpoint(out / CHECKPOINTS, model, optimizer, scheduler)
        if (position["examples"], position["steps_per_epoch"]) != (len(examples), steps_per_epoch):
            raise ValueError(
                f"checkpoint was taken on {position['examples']} examples, {position['steps_per_epoch']} steps an "
                f"epoch; this data has {len(examples)}, {steps_per_epoch}"
            )
        step = position["step"]
    log = RunLog(out, rt.main, cfg.tensorboard)
    if rt.main:
        print(json.dumps({"params": count_params(model), "world": rt.world, "start_step": step, "attention": attention,
                          "compile": compile_blocks, "startup_s": round(time.perf_counter() - began, 3)}), flush=True)

    autocast = (
        torch.autocast(rt.device.type, dtype=torch.bfloat16)
        if cfg.precision == "bf16" and not sharded else nullcontext()
    )
    records: list[dict] = []
    model.train()
    end = min(total_steps, stop_at) if stop_at is not None else total_steps
    while step < end:
        began = time.perf_counter()
        bins = examples.bins(step_examples(len(examples), batch, cfg.seed, step))
        micro = [_tensors(m, rt.device) for m in rank_rows(examples, bins, cfg, rt, pad_id)]
        count = _all_sum(torch.tensor(float(sum(int((m[1] != IGNORE).sum()) for m in micro)), device=rt.device), rt)
        loss_sum = torch.zeros((), device=rt.device)
        tokens = torch.zeros((), device=rt.device)
        for i, (ids, labels, seq) in enumerate(micro):
            last = i == len(micro) - 1
            if sharded:
                model.set_requires_gradient_sync(last)
            sync = model.no_sync() if rt.world > 1 and not sharded and not last else nullcontext()
            with sync:
                with autocast:
                    token_loss = model(ids, seq, labels)
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
        tokens = _all_sum(tokens, rt).item()
        seconds = time.perf_counter() - began
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        record = {
            "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm.item(), "loss_tokens": int(count.item()),
            "rows": len(bins), "micro_steps": len(micro), "step_s": round(seconds, 4), "tokens_per_s": tokens / seconds,
            "packing_efficiency": round(tokens / (len(bins) * examples.seq_len), 6),
        }
        if validation is not None and (step % cfg.eval_every == 0 or step == end):
            record.update(validation_loss(model, validation, cfg, rt, autocast, pad_id))
        records.append(record)
        if step % cfg.log_every == 0 or step == end or "val_loss" in record:
            log.record(record)
        if step % cfg.save_every == 0 or step == total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            position = {"step": step, "epoch": epoch, "example_in_epoch": index * batch, "examples": len(examples),
                        "steps_per_epoch": steps_per_epoch}
            save_checkpoint(out / CHECKPOINTS, step, model, optimizer, scheduler, position, cfg.keep_checkpoints,
                            rt.main)
    log.close()
    if step == total_steps:
        export_hf(model, tokenizer, out / "hf", rt)
    return records


def export_hf(model: nn.Module, tokenizer: PreTrainedTokenizerFast, path: Path, rt: Runtime) -> None:
    """The trained model and its tokenizer as a Hugging Face folder (``from_pretrained``), by rank 0."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rt.main:
        hf = getattr(model, "module", model).model
        hf.save_pretrained(path, state_dict={k.removeprefix("model."): v for k, v in state.items()})
        tokenizer.save_pretrained(path)
    if rt.world > 1:
        dist.barrier()
