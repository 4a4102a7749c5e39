"""Run logs: one JSON line per logged record in ``log.jsonl`` and the same scalars for TensorBoard
(``<out>/tensorboard``, read with ``tensorboard --logdir``), written by rank 0 only."""

from __future__ import annotations

import json
from pathlib import Path


class RunLog:
    """Where a run's records go: stdout, ``log.jsonl`` and, where ``tensorboard`` is installed, its event files."""

    def __init__(self, out: Path, main: bool, tensorboard: bool = True) -> None:
        self.out, self.main = out, main
        self.writer = None
        if main and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))

    def record(self, record: dict, prefix: str = "train") -> None:
        """Print and append ``record`` (it has a ``step``); its numbers go to TensorBoard as ``prefix/<key>``."""
        if not self.main:
            return
        print(json.dumps(record), flush=True)
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
