"""Decoupled Lion against its closed form, the cosine schedule, and the RecGPT recipe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from recgpt_train.config import TrainConfig, load_config
from recgpt_train.lion import DecoupledLionW
from recgpt_train.model import mpt_config
from recgpt_train.schedule import build_scheduler, cosine_with_warmup

RECIPES = Path(__file__).resolve().parent.parent / "recgpt_train" / "recipes"


def test_lion_matches_closed_form_with_decay_scaled_by_lr_over_initial_lr():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = DecoupledLionW([p], lr=0.1, betas=(0.9, 0.98), weight_decay=0.01)
    p.grad = torch.tensor([0.3, -0.1, 0.0], dtype=torch.float64)
    opt.step()
    # p * (1 - 0.01) - 0.1 * sign(0.1 * g); m = 0.02 * g  (worked by hand)
    assert torch.allclose(p.detach(), torch.tensor([0.89, -1.88, 0.495], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(opt.state[p]["exp_avg"], torch.tensor([0.006, -0.002, 0.0], dtype=torch.float64))
    opt.param_groups[0]["lr"] = 0.05  # the schedule halves lr: decay becomes 0.01 * 0.05 / 0.1
    p.grad = torch.tensor([-0.1, -0.5, 0.2], dtype=torch.float64)
    opt.step()
    # p * 0.995 - 0.05 * sign(0.9 m + 0.1 g) = p * 0.995 - 0.05 * [-1, -1, 1]; m = 0.98 m + 0.02 g
    assert torch.allclose(p.detach(), torch.tensor([0.93555, -1.8206, 0.442525], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(opt.state[p]["exp_avg"], torch.tensor([0.00388, -0.01196, 0.004], dtype=torch.float64))


def test_lion_skips_parameters_without_gradient():
    p = torch.nn.Parameter(torch.ones(2))
    DecoupledLionW([p], lr=0.1, weight_decay=0.5).step()
    assert torch.equal(p.detach(), torch.ones(2))


def test_cosine_schedule_warms_up_then_decays_to_a_tenth():
    assert [cosine_with_warmup(s, 10, 110) for s in (0, 5, 10)] == [0.0, 0.5, 1.0]
    assert cosine_with_warmup(60, 10, 110) == pytest.approx(0.55)
    assert cosine_with_warmup(110, 10, 110) == pytest.approx(0.1)
    assert cosine_with_warmup(500, 10, 110) == pytest.approx(0.1)


def test_scheduler_drives_the_optimizer_lr():
    opt = DecoupledLionW([torch.nn.Parameter(torch.ones(1))], lr=2.0)
    sched = build_scheduler(opt, warmup_steps=2, total_steps=4)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 1.0, 2.0, 1.1, 0.2])


def test_defaults_are_the_recgpt_recipe():
    cfg = TrainConfig(data={"source": "out/recgpt"})
    assert cfg.optim.betas == (0.9, 0.98)
    assert cfg.optim.weight_decay == 1e-7
    assert cfg.optim.grad_clip == 1.0
    assert cfg.optim.final_lr_ratio == 0.1
    assert cfg.optim.warmup_steps == 200  # fine-tuning.yaml: t_warmup: 200ba
    assert cfg.keep_checkpoints == 2  # fine-tuning.yaml: save_num_checkpoints_to_keep: 2
    assert (cfg.global_batch_size, cfg.epochs, cfg.precision) == (128, 2, "bf16")
    assert cfg.peak_lr == 2.5e-5
    assert TrainConfig(task="instruct", data={"source": "x", "config": "instruct"}).peak_lr == 1e-5


def test_mpt_7b_preset():
    c = mpt_config("mpt-7b")
    assert (c.d_model, c.n_heads, c.n_layers, c.vocab_size, c.max_seq_len) == (4096, 32, 32, 50432, 2048)
    assert c.attn_config.alibi and c.no_bias and c.expansion_ratio == 4


@pytest.mark.parametrize(
    ("name", "task", "lr"), [("pretrain.yaml", "pretrain", 2.5e-5), ("instruct.yaml", "instruct", 1e-5)]
)
def test_recipes_load_with_paper_values(name, task, lr):
    cfg = load_config(RECIPES / name)
    assert (cfg.task, cfg.peak_lr, cfg.model.preset) == (task, lr, "mpt-7b")
    assert cfg.global_batch_size == 128 and cfg.optim.betas == (0.9, 0.98)
    assert cfg.optim.warmup_steps == 200


def test_instruct_recipe_takes_the_authors_yaml():
    """The values of RecGPT's fine-tuning.yaml (github.com/VinAIResearch/RecGPT), read off by hand."""
    cfg = load_config(RECIPES / "instruct.yaml")
    assert (cfg.seed, cfg.epochs, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.final_lr_ratio) == (
        1337,
        2,
        1e-5,
        1e-7,
        0.1,
    )
    assert (cfg.global_batch_size, cfg.optim.warmup_steps, cfg.optim.grad_clip, cfg.keep_checkpoints) == (
        128,
        200,
        1.0,
        2,
    )


def test_unknown_recipe_keys_are_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: pretrain\ndata: {source: x}\noptim: {learning_rate: 1.0}\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(bad)
