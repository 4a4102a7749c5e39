"""Start-up and steady state of training on memory-mapped token shards, at 1x and 4x corpus size, against
the same tokens held in memory.

Each run is a fresh process that trains the tiny MPT (CPU, fp32, SDPA, 4 blocks of 512 tokens a step) for
``--steps`` steps through :func:`recgpt_train.train.train` on synthetic token shards written in the
``pretrain_tokens`` layout (random ids in documents of 64..4,096 tokens). ``mapped`` opens the shards
with ``np.memmap``; ``memory`` reads them whole into RAM first (what the in-memory path holds after
tokenising). Reported: peak RSS (VmHWM), seconds from ``train``'s start to its first step (data
opened, model built), seconds to the end of the first step, and tokens/s over the steps after it.

    python benchmarks/bench_train_data.py --tokens 100000000 --scales 1,4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_train_gpu import write_token_shards


def peak_rss_mib() -> float:
    """This program's peak resident set (VmHWM: unlike ru_maxrss it does not carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(folder: str, mode: str, steps: int) -> None:
    """One measured run (in its own process): JSON with peak RSS, time to first step and steady tokens/s."""
    began = time.perf_counter()
    import numpy as np

    from recgpt_train.config import TrainConfig
    from recgpt_train.tokens import TokenStream, open_token_stream
    from recgpt_train.train import train

    source: object = folder
    if mode == "memory":
        mapped = open_token_stream(folder, "train")
        source = TokenStream([np.array(t) for t in mapped.tokens], [np.array(e) for e in mapped.ends])
    cfg = TrainConfig.model_validate({
        "task": "pretrain", "model": {"preset": "tiny"}, "data": {"source": folder}, "global_batch_size": 4,
        "micro_batch_size": 2, "max_steps": steps + 1, "precision": "fp32", "attention": "sdpa",
        "out_dir": str(Path(folder) / f"run-{mode}"), "save_every": 10**9, "log_every": 10**9, "tensorboard": False,
    })
    records = train(cfg, stop_at=steps, source=source)
    steady = records[1:]
    print(json.dumps({
        "mode": mode, "first_step_s": round(time.perf_counter() - began - sum(r["step_s"] for r in steady), 2),
        "peak_rss_mib": peak_rss_mib(),
        "tokens_per_s": round(sum(r["tokens_per_s"] * r["step_s"] for r in steady) / sum(r["step_s"] for r in steady), 1),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=float, default=100e6, help="tokens at 1x")
    parser.add_argument("--scales", default="1,4")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--modes", default="mapped,memory")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.steps)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (int(s) for s in args.scales.split(",")):
            folder = Path(tmp) / f"x{scale}"
            write_token_shards(folder, int(args.tokens * scale), 50432)
            for mode in args.modes.split(","):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(folder), mode, "--steps", str(args.steps)],
                    check=True, capture_output=True, text=True,
                )
                lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
                startup = next(line["startup_s"] for line in lines if "startup_s" in line)
                print(json.dumps({"scale": scale, "tokens": int(args.tokens * scale), "startup_s": startup, **lines[-1]}),
                      flush=True)


if __name__ == "__main__":
    main()
