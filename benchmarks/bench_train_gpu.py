"""Training throughput of a packed-sequence MPT: tokens/s and MFU, eager vs SDPA attention.

On one H100: a ~1.3B MPT (d_model 2048, 16 heads, 24 layers, vocab 50432, ALiBi) trains on 2048-token
rows packed best-fit-decreasing from variable-length examples, bf16 autocast over fp32 weights, Lion.
MFU counts llm-foundry's FLOPs per token, 6 * params + 12 * n_layers * d_model * seq_len, against the
H100 SXM dense bf16 peak of 989 TFLOP/s; the anchor is llm-foundry's MPT-7B at about 10,600 tokens/s
per H100 and 46% MFU.

    python benchmarks/bench_train_gpu.py                 # GPU, both paths, JSON to stdout
    python benchmarks/bench_train_gpu.py --dry-run       # tiny model on the CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recgpt_train.attention import packed_attention_mask, packed_logits, set_attention
from recgpt_train.lion import DecoupledLionW
from recgpt_train.model import count_params, mpt_config
from recgpt_train.packing import IGNORE, pack_instructions

H100_BF16_PEAK = 989e12
ANCHOR = {"model": "MPT-7B (llm-foundry)", "tokens_per_s_per_gpu": 10600, "mfu": 0.46}


def synthetic_rows(n_rows: int, seq_len: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Rows packed from random-token examples of 64..seq_len tokens (a quarter of each is response)."""
    rng = np.random.default_rng(seed)
    pairs = []
    total = 0
    while total < n_rows * seq_len * 1.05:
        size = int(rng.integers(64, seq_len))
        cut = size - max(1, size // 4)
        tokens = rng.integers(1, vocab, size=size - 1).tolist()
        pairs.append((tokens[:cut], tokens[cut:]))
        total += size
    rows = pack_instructions(pairs, seq_len, eos_id=0)
    return {
        "input_ids": torch.from_numpy(rows.input_ids[:n_rows]).long(),
        "labels": torch.from_numpy(rows.labels[:n_rows]).long(),
        "seq_ids": torch.from_numpy(rows.seq_ids[:n_rows]).long(),
        "efficiency": rows.stats.efficiency,
    }


def flops_per_token(params: int, n_layers: int, d_model: int, seq_len: int) -> float:
    """llm-foundry's training FLOPs per token (forward + backward)."""
    return 6 * params + 12 * n_layers * d_model * seq_len


def run_path(model, rows, impl: str, args, device: torch.device) -> dict:
    """Time ``args.steps`` optimizer steps (after ``args.warmup``) through one attention path."""
    set_attention(model, impl)
    optimizer = DecoupledLionW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), weight_decay=1e-7)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    mb = args.micro_batch
    n_batches = len(rows["input_ids"]) // mb
    tokens = 0
    losses = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            began, tokens = time.perf_counter(), 0
        at = (step % n_batches) * mb
        ids, labels, seq = (rows[k][at : at + mb].to(device) for k in ("input_ids", "labels", "seq_ids"))
        with autocast:
            logits = model(input_ids=ids, attention_mask=packed_attention_mask(seq), use_cache=False).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int((seq >= 0).sum())
        losses.append(loss.item())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    del optimizer
    out = {"path": impl, "steps": args.steps, "seconds": round(seconds, 3), "tokens_per_s": tokens / seconds,
           "first_loss": losses[0], "last_loss": losses[-1]}
    if device.type == "cuda":
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def agreement(model, rows, device: torch.device) -> dict[str, float]:
    """On the first row holding several examples: max |eager - sdpa| logits in bf16 autocast, and, per
    path in float32, max |packed - alone| logits of its second example."""
    r = int((rows["seq_ids"].amax(dim=1) >= 1).int().argmax())
    ids, seq = rows["input_ids"][r : r + 1].to(device), rows["seq_ids"][r : r + 1].to(device)
    second = (seq[0] == 1).nonzero().flatten()
    alone_ids = ids[:, second]
    out: dict[str, float] = {}
    logits = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.no_grad():
        for impl in ("eager", "sdpa"):
            set_attention(model, impl)
            with autocast:
                logits.append(packed_logits(model, ids, seq).float())
            packed = packed_logits(model, ids, seq)[0, second]
            alone = packed_logits(model, alone_ids, torch.zeros_like(alone_ids))[0]
            out[f"fp32_packed_vs_alone_max_abs_diff_{impl}"] = (packed - alone).abs().max().item()
    out["bf16_eager_vs_sdpa_max_abs_diff"] = (logits[0] - logits[1]).abs().max().item()
    return out


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and print one JSON record."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU (checks the script)")
    parser.add_argument("--preset", default=None, help="model preset (default mpt-1b; tiny with --dry-run)")
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--paths", default="eager,sdpa")
    parser.add_argument("--out", default=None, help="also write the JSON record here")
    args = parser.parse_args(argv)
    device = torch.device("cpu") if args.dry_run or not torch.cuda.is_available() else torch.device("cuda")
    if device.type == "cpu" and not args.dry_run:
        parser.error("no GPU found; use --dry-run to check the script on the CPU")
    args.preset = args.preset or ("tiny" if args.dry_run else "mpt-1b")
    args.micro_batch = args.micro_batch or (1 if args.dry_run else 2)
    args.steps = args.steps or (2 if args.dry_run else 20)
    if args.dry_run:
        args.warmup = min(args.warmup, 1)
    config = mpt_config(args.preset)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.MptForCausalLM(config)
    params = count_params(model)
    rows = synthetic_rows(args.micro_batch * 8, config.max_seq_len, config.vocab_size)
    fpt = flops_per_token(params, config.n_layers, config.d_model, config.max_seq_len)
    record = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "preset": args.preset, "params": params, "seq_len": config.max_seq_len,
        "micro_batch": args.micro_batch, "packing_efficiency": round(rows["efficiency"], 4),
        "flops_per_token": fpt, "anchor": ANCHOR, "transformers": transformers.__version__,
        **agreement(model, rows, device), "paths": [],
    }
    for impl in args.paths.split(","):
        try:
            result = run_path(model, rows, impl, args, device)
        except torch.OutOfMemoryError:
            result = {"path": impl, "error": "out of memory"}
            torch.cuda.empty_cache()
        if "tokens_per_s" in result and device.type == "cuda":
            result["mfu"] = result["tokens_per_s"] * fpt / H100_BF16_PEAK
        record["paths"].append(result)
        print(json.dumps(result), flush=True)
    done = {r["path"]: r for r in record["paths"] if "tokens_per_s" in r}
    if {"eager", "sdpa"} <= done.keys():
        record["sdpa_over_eager"] = done["sdpa"]["tokens_per_s"] / done["eager"]["tokens_per_s"]
    print(json.dumps(record), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
