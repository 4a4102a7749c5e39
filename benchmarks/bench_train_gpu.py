"""Training throughput on one GPU, in the loop ``recgpt-train train`` runs, on memory-mapped token shards.

1. Agreement: on a 2-layer model of each preset's width, float32 logits of each example of a packed row
   against the example alone, for the eager, SDPA and flex paths (flex compiled on a GPU), and bf16 flex
   and SDPA logits against eager's.
2. Throughput: MPT-7B, then the ~1.3B MPT, each trained by :func:`recgpt_train.train.train` (flex
   attention, ``torch.compile`` per block, foreach Lion, the chunked loss, bf16 autocast over fp32
   weights; activation checkpointing on the 7B, where memory needs it) for ``--steps`` optimizer steps of
   128 x 2048-token blocks read from synthetic token shards (random ids in documents of 64 to 4,096
   tokens, written in the ``pretrain_tokens`` layout). The first step compiles and is not counted.

MFU = tokens/s x (6 x all parameters + 12 x layers x d_model x 2048) / 989e12 (H100/H200 dense bf16).
Each measurement is printed as one JSON line as soon as it is taken.

    python benchmarks/bench_train_gpu.py                   # GPU: agreement, mpt-7b, mpt-1b (about 5 minutes)
    python benchmarks/bench_train_gpu.py --smoke           # the tiny model on the CPU, seconds
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recgpt_data.pretrain_tokens import TOKENS_MANIFEST
from recgpt_train.config import TrainConfig
from recgpt_train.model import PackedMpt, build_model, count_params, mpt_config
from recgpt_train.train import train

PEAK_BF16 = 989e12


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def write_token_shards(folder: Path, tokens: int, vocab: int, seed: int = 0) -> None:
    """Synthetic shards in the ``pretrain_tokens`` layout: random ids in documents of 64..4096 tokens, EOS after each."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(64, 4096, size=tokens // 2000 + 1)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths + 1), tokens)) + 1]
    ends = np.cumsum(lengths + 1)
    ids = rng.integers(1, vocab, size=int(ends[-1]), dtype=np.uint16)
    ids[ends - 1] = 0
    out = folder / TOKENS_MANIFEST.parent
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, (docs, token_slice) in {"train": (ends, ids), "validation": (ends[:1], ids[: ends[0]])}.items():
        token_slice.astype("<u2").tofile(out / f"{split}.bin")
        docs.astype("<i8").tofile(out / f"{split}.idx")
        splits[split] = [{"tokens": f"{TOKENS_MANIFEST.parent.as_posix()}/{split}.bin",
                          "index": f"{TOKENS_MANIFEST.parent.as_posix()}/{split}.idx",
                          "documents": len(docs), "token_count": len(token_slice)}]
    manifest = {"dtype": "<u2", "index_dtype": "<i8", "eos_id": 0, "eos_appended": True, "splits": splits}
    (folder / TOKENS_MANIFEST).write_text(json.dumps(manifest) + "\n")


def agreement(preset: str, device: torch.device, compiled: bool) -> dict:
    """Packed-vs-alone (float32) and path-vs-eager (bf16) logits gaps on one row of three examples."""
    config = mpt_config(preset, n_layers=2)
    hf = build_model(config, seed=1, device=device).eval()
    rng = np.random.default_rng(1)
    lengths = [600, 900, 500] if config.max_seq_len >= 2048 else [150, 200, 120]
    ids = torch.from_numpy(rng.integers(1, config.vocab_size, size=(1, sum(lengths)))).to(device)
    seq = torch.from_numpy(np.repeat(np.arange(3), lengths)[None]).to(device)
    second = (seq[0] == 1).nonzero().flatten()
    out: dict = {"measure": "agreement", "preset": f"{preset} (2 layers)", "row_lengths": lengths,
                 "packed_vs_alone_max_abs_diff": {}, "bf16_vs_eager_max_abs_diff": {}}
    bf16 = {}
    with torch.no_grad():
        for impl in ("eager", "sdpa", "flex"):
            model = PackedMpt(hf, impl, compile_blocks=compiled and impl == "flex")
            packed = model(ids, seq)[0, second]
            alone = model(ids[:, second], torch.zeros_like(seq[:, second]))[0]
            out["packed_vs_alone_max_abs_diff"][impl] = (packed - alone).abs().max().item()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                bf16[impl] = model(ids, seq).float()
    for impl in ("sdpa", "flex"):
        out["bf16_vs_eager_max_abs_diff"][impl] = (bf16[impl] - bf16["eager"]).abs().max().item()
    torch._dynamo.reset()
    return out


def throughput(preset: str, args: argparse.Namespace, data: Path, work: Path) -> dict:
    """Train ``preset`` for ``args.steps`` steps through ``train``; tokens/s and MFU of the steps after the first."""
    config = mpt_config(preset)
    smoke = args.smoke
    cfg = TrainConfig.model_validate({
        "task": "pretrain", "model": {"preset": preset}, "data": {"source": str(data), "config": "pretrain"},
        "global_batch_size": 4 if smoke else 128, "micro_batch_size": args.micro_batch or (2 if smoke else 4),
        "max_steps": args.steps + 1, "precision": "fp32" if smoke else "bf16",
        "attention": "sdpa" if smoke else "flex", "compile": not smoke,
        "activation_checkpointing": preset == "mpt-7b" or args.checkpointing, "out_dir": str(work / preset),
        "save_every": 10**9, "log_every": 1, "tensorboard": False, "optim": {"warmup_steps": 1},
    })
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    try:
        records = train(cfg, stop_at=args.steps)  # stopped before the last step: no checkpoint, no export
    except torch.OutOfMemoryError:
        return {"measure": "throughput", "preset": preset, "micro_batch": cfg.micro_batch_size, "error": "out of memory"}
    finally:
        gc.collect()
        torch._dynamo.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    timed = records[1:]
    tokens_per_s = sum(r["tokens_per_s"] * r["step_s"] for r in timed) / sum(r["step_s"] for r in timed)
    params = count_params(build_model(config, device="meta"))
    flops = 6 * params + 12 * config.n_layers * config.d_model * config.max_seq_len
    result = {
        "measure": "throughput", "preset": preset, "params": params, "micro_batch": cfg.micro_batch_size,
        "activation_checkpointing": cfg.activation_checkpointing, "attention": cfg.attention,
        "timed_steps": len(timed), "tokens_per_step": timed[0]["rows"] * config.max_seq_len,
        "tokens_per_s": round(tokens_per_s, 1), "flops_per_token": flops,
        "first_step_s": round(records[0]["step_s"], 1),
        "wall_s": round(time.perf_counter() - began, 1), "last_loss": records[-1]["loss"],
    }
    if torch.cuda.is_available():
        result["mfu"] = round(tokens_per_s * flops / PEAK_BF16, 4)
        result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="the tiny model on the CPU (checks the script)")
    parser.add_argument("--presets", default=None, help="comma-separated (default mpt-7b,mpt-1b; tiny with --smoke)")
    parser.add_argument("--micro-batch", type=int, default=None, help="rows per forward (default 4; 2 with --smoke)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per model, the first not timed")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing on every preset")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--work", default=None, help="folder for the shards and run outputs (default: a temporary one)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        parser.error("no GPU found; use --smoke to check the script on the CPU")
    device = torch.device("cuda" if cuda and not args.smoke else "cpu")
    presets = (args.presets or ("tiny" if args.smoke else "mpt-7b,mpt-1b")).split(",")
    emit({"measure": "machine", "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
          "torch": torch.__version__})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        data = work / "corpus"
        seq_len = mpt_config(presets[0]).max_seq_len
        write_token_shards(data, (args.steps + 1) * (4 if args.smoke else 128) * seq_len, 50432)
        if not args.skip_agreement:
            emit(agreement(presets[-1], device, compiled=device.type == "cuda"))
        for preset in presets:
            emit(throughput(preset, args, data, work))


if __name__ == "__main__":
    main()
