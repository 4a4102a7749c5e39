"""The tiny MPT trains end to end on the demo corpus that recgpt-data builds from real data; resume and
FSDP reproduce the losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from authors_pairs import authors_rows

from recgpt_train.cli import main as cli_main
from recgpt_train.config import TrainConfig
from recgpt_train.train import train

REPO = Path(__file__).resolve().parent.parent
CARD = """---
configs:
- config_name: instruct
  data_files:
  - split: train
    path: data/instruct/train-*.parquet
---
"""


@pytest.fixture(scope="module")
def corpus(demo_corpus: Path) -> Path:
    """The demo corpus that ``recgpt-data run pipelines/demo.toml`` builds from the bundled real slices."""
    return demo_corpus


@pytest.fixture(scope="module")
def authors_pairs(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder in the output contract holding the RecGPT authors' own 20 instruction pairs."""
    root = tmp_path_factory.mktemp("authors")
    (root / "data" / "instruct").mkdir(parents=True)
    pairs = authors_rows(shared)
    pq.write_table(
        pa.table(
            {
                "prompt": [p["prompt"] for p in pairs],
                "response": [p["response"] for p in pairs],
                "task": ["next_item"] * 10 + ["rating"] * 10,
            }
        ),
        root / "data" / "instruct" / "train-00000-of-00001.parquet",
    )
    (root / "README.md").write_text(CARD)
    return root


def _config(corpus: Path, out: Path, **extra) -> TrainConfig:
    base = {
        "task": "pretrain",
        "model": {"preset": "tiny"},
        "data": {"source": str(corpus), "config": "pretrain"},
        "optim": {"lr": 2e-3, "warmup_steps": 3},
        "global_batch_size": 1,
        "micro_batch_size": 1,
        "max_steps": 24,
        "precision": "fp32",
        "out_dir": str(out),
        "save_every": 1000,
        "log_every": 1,
    }
    base.update(extra)
    return TrainConfig.model_validate(base)


@pytest.fixture(scope="module")
def full_run(corpus, tmp_path_factory) -> list[dict]:
    return train(_config(corpus, tmp_path_factory.mktemp("full")))


def test_tiny_mpt_loss_falls_on_real_histories(full_run):
    losses = [r["loss"] for r in full_run]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < losses[0] - 1.0
    assert all(r["packing_efficiency"] == 1.0 for r in full_run)


def test_resume_continues_the_same_loss_curve(corpus, full_run, tmp_path):
    cfg = _config(corpus, tmp_path, save_every=5, keep_checkpoints=2)
    first = train(cfg, stop_at=18)  # interrupted 3 steps after the checkpoint of step 15
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["step-00000010", "step-00000015"]  # every 5 steps, the newest 2 kept
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "step-00000015").iterdir()) == [
        "state.json",
        "tensors.safetensors",
    ]
    rest = train(cfg, resume=True)
    assert [r["step"] for r in rest] == list(range(16, 25))
    assert [r["loss"] for r in first[:15] + rest] == [r["loss"] for r in full_run]


def test_checkpoint_holds_every_tensor_in_safetensors_and_the_position_in_json(corpus, tmp_path):
    from safetensors import safe_open

    train(_config(corpus, tmp_path, max_steps=2, save_every=2))
    folder = tmp_path / "checkpoints" / "step-00000002"
    state = json.loads((folder / "state.json").read_text())
    position = state["position"]
    assert (position["step"], position["epoch"], position["example_in_epoch"]) == (2, 0, 2)
    assert position["steps_per_epoch"] == position["examples"]  # one example a step
    with safe_open(str(folder / "tensors.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model/model.transformer.wte.weight" in keys
    assert "model/model.lm_head.weight" not in keys  # tied to wte: stored once, referenced in state.json
    assert state["model"]["model.lm_head.weight"] == {"__tensor__": "model/model.transformer.wte.weight"}
    assert any(k.startswith("optimizer/state/") and k.endswith("/exp_avg") for k in keys)


def test_cli_trains_instruction_pairs_and_reports_packing(authors_pairs, tmp_path, capsys):
    recipe = tmp_path / "instruct.yaml"
    recipe.write_text(
        f"task: instruct\nmodel: {{preset: tiny}}\ndata: {{source: {authors_pairs}, config: instruct}}\n"
        f"optim: {{lr: 2.0e-3, warmup_steps: 1}}\nglobal_batch_size: 2\nmicro_batch_size: 1\nepochs: 3\n"
        f"precision: fp32\nout_dir: {tmp_path / 'run'}\nlog_every: 1\n"
    )
    assert cli_main(["train", "--config", str(recipe)]) == 0
    packing = json.loads((tmp_path / "run" / "packing.json").read_text())
    assert packing["dropped"] == {"too_long": 14} and packing["packed"] == 6
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    assert len(log) == 3 * packing["steps_per_epoch"]
    assert log[-1]["loss"] < log[0]["loss"]
    assert (tmp_path / "run" / "hf" / "config.json").is_file()


def test_cli_rejects_a_bad_recipe(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: instruct\ndata: {source: x, config: pretrain}\n")
    assert cli_main(["train", "--config", str(recipe)]) == 2
    assert "reads data config" in capsys.readouterr().err


def test_fsdp_two_ranks_reproduce_single_process_losses(corpus, tmp_path):
    """torchrun, 2 gloo ranks on the CPU, FSDP2, 2 micro-batches per rank against 4 accumulated in one
    process: normalising by the step's token count over all micro-batches and ranks makes the losses match."""
    single = train(_config(corpus, tmp_path / "one", max_steps=3, global_batch_size=4))
    recipe = tmp_path / "fsdp.yaml"
    recipe.write_text(json.dumps(_config(corpus, tmp_path / "two", max_steps=3, global_batch_size=4).model_dump()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "recgpt_train.cli",
            "train",
            "--config",
            str(recipe),
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    sharded = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").open()]
    assert [r["loss"] for r in sharded] == pytest.approx([r["loss"] for r in single], abs=1e-5)


def test_gpu_benchmark_smoke_run_on_cpu(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_train_gpu.py"), "--smoke", "--work", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    records = [json.loads(line) for line in out.stdout.strip().splitlines() if line.startswith("{")]
    agreement = next(r for r in records if r.get("measure") == "agreement")
    assert max(agreement["packed_vs_alone_max_abs_diff"].values()) < 1e-5
    runs = [r for r in records if r.get("measure") == "throughput"]
    assert [r["preset"] for r in runs] == ["tiny"] and runs[0]["tokens_per_s"] > 0
