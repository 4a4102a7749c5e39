"""Checkpoints as safetensors (every tensor) plus JSON (everything else), so resuming unpickles nothing.

``<out>/checkpoints/step-NNNNNNNN/`` holds ``tensors.safetensors`` (model, optimizer state, RNG states)
and ``state.json`` (optimizer hyper-parameters, scheduler, data position, the other RNG states, and
where each tensor sits in those structures). A checkpoint is written under a temporary name and
renamed into place whole, then all but the newest ``keep`` are removed. Under FSDP every rank
gathers the full (unsharded) state and rank 0 writes it.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

CHECKPOINTS = "checkpoints"
TENSORS = "tensors.safetensors"
STATE = "state.json"
STEP_DIR = re.compile(r"^step-(\d{8})$")
TENSOR_REF = "__tensor__"


def split_tensors(obj: Any, path: str, tensors: dict[str, torch.Tensor], seen: dict[tuple, str]) -> Any:
    """``obj`` as JSON-ready data, each tensor moved into ``tensors`` under its path and replaced by a
    reference; a tensor sharing storage with one already moved (tied weights) refers to that one."""
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.storage_offset(), tuple(obj.shape), obj.dtype) if obj.numel() else None
        if key in seen:
            return {TENSOR_REF: seen[key]}
        tensors[path] = obj.detach().cpu().contiguous()
        if key is not None:
            seen[key] = path
        return {TENSOR_REF: path}
    if isinstance(obj, Mapping):
        return {str(k): split_tensors(v, f"{path}/{k}", tensors, seen) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, f"{path}/{i}", tensors, seen) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def join_tensors(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of :func:`split_tensors` (lists stay lists)."""
    if isinstance(obj, dict):
        if set(obj) == {TENSOR_REF}:
            return tensors[obj[TENSOR_REF]]
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from (torch, CUDA, numpy, Python)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` took, from its JSON form."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(root: Path) -> list[Path]:
    """Finished checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def save_checkpoint(
    root: Path, step: int, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler, position: dict,
    keep: int, main: bool,
) -> Path:
    """Write step ``step``'s full state under ``root`` (rank 0), keep the newest ``keep``; returns its folder."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    target = root / f"step-{step:08d}"
    if main:
        tensors: dict[str, torch.Tensor] = {}
        seen: dict[tuple, str] = {}
        state = {
            "model": split_tensors(model_sd, "model", tensors, seen),
            "optimizer": split_tensors(optim_sd, "optimizer", tensors, seen),
            "scheduler": scheduler.state_dict(),
            "position": position,
            "rng": split_tensors(rng_state(), "rng", tensors, seen),
        }
        tmp = root / f".{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / TENSORS))
        (tmp / STATE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        for old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old)
    if dist.is_initialized():
        dist.barrier()
    return target


def load_checkpoint(root: Path, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler) -> dict:
    """Restore the newest checkpoint under ``root``; returns the data position it was taken at."""
    found = checkpoint_dirs(root)
    if not found:
        raise FileNotFoundError(f"--resume: no checkpoint under {root}")
    state = json.loads((found[-1] / STATE).read_text(encoding="utf-8"))
    tensors = load_file(str(found[-1] / TENSORS))
    set_state_dict(
        model, optimizer, model_state_dict=join_tensors(state["model"], tensors),
        optim_state_dict=join_tensors(state["optimizer"], tensors), options=StateDictOptions(full_state_dict=True),
    )
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(join_tensors(state["rng"], tensors))
    return state["position"]
