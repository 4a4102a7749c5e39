"""The dataset card, the report, loading the built folder with ``datasets``, the terms check, and a
publish round trip through the real ``huggingface_hub`` and ``datasets`` clients against a
Hub-compatible server on loopback (``hub_server.py``).

The clients run in subprocesses so that ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET`` are set before
they are imported. Xet is switched off on purpose: the loopback server speaks the HTTP LFS transfer,
not Xet's content-addressed storage protocol (see ``hub_server.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pipeline_stages
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import CLI
from hub_server import HubServer

from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.publish.terms import restricted, terms_of

TESTS = Path(__file__).resolve().parent
CARD = '\n[[stages]]\nstage = "report"\n\n[[stages]]\nstage = "card"\nparams.pretty_name = "Magazine histories"\nparams.repo_id = "acme/magazines"\n'
TOKEN = "hf_SENTINELtokenNEVERshown0123456789"
DRIVER = (
    "import sys, pipeline_stages; from recgpt_data.cli import main; sys.argv = ['recgpt-data', *sys.argv[1:]]; main()"
)


@pytest.fixture(scope="module")
def built(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The magazines pipeline built through the report and card stages."""
    folder = tmp_path_factory.mktemp("built")
    spec = folder / "spec.toml"
    spec.write_text(pipeline_stages.spec_text(shared) + CARD, encoding="utf-8")
    run_spec(load_spec(spec), folder / "out")
    return folder / "out"


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card[4 : card.index("\n---\n", 4)])


def client_env(endpoint: str, home: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(TESTS),
    }
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return env


def publish(folder: Path, env: dict, *extra: str, repo_id: str = "acme/magazines") -> subprocess.CompletedProcess:
    args = ["publish", str(folder), "--repo-id", repo_id, *extra]
    return subprocess.run([sys.executable, "-c", DRIVER, *args], env=env, capture_output=True, text=True, timeout=120)


def load_back(env: dict, repo_id: str, per_split: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Both configs of ``repo_id`` loaded from the server by the real ``datasets`` client, in a fresh
    process: ``{config: {split: <per_split>}}``, where ``per_split`` is an expression of ``d[s]``."""
    code = (
        "import datasets, json\n"
        "out = {}\n"
        "for c in ['pretrain', 'instruct']:\n"
        f"    d = datasets.load_dataset('{repo_id}', c)\n"
        f"    out[c] = {{s: {per_split} for s in d}}\n"
        "print(json.dumps(out))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    return loaded, json.loads(loaded.stdout.strip().splitlines()[-1])


def test_card_metadata_and_configs(built: Path, shared: Path) -> None:
    meta = front_matter((built / "README.md").read_text())
    assert meta["license"] == "other"
    assert meta["language"] == ["en"]
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [
        {
            "config_name": "pretrain",
            "default": True,
            "data_files": [
                {"split": "train", "path": "data/pretrain/train-*.parquet"},
                {"split": "validation", "path": "data/pretrain/validation-*.parquet"},
            ],
        },
        {"config_name": "instruct", "data_files": [{"split": "train", "path": "data/instruct/train-*.parquet"}]},
    ]


def test_card_body_has_provenance_table_rates_and_loading(built: Path, shared: Path) -> None:
    card = (built / "README.md").read_text()
    reviews = [
        json.loads(line) for line in (shared / "amazon2018" / "Magazine_Subscriptions_5.json").read_text().splitlines()
    ]
    per_user = Counter(r["reviewerID"] for r in reviews)
    items = len({r["asin"] for r in reviews})
    short = sum(n for n in per_user.values() if n < 6)
    assert "Amazon Review Data (2018), Jianmo Ni" in card
    assert f"| amazon2018 | amazon2018/Magazine_Subscriptions | {len(per_user)} | {items} | {len(reviews):,} | " in card
    assert f"| t_histories | 5,760 | 200 | dropped: short_history | {short} | {short / 5760:.2%} |" in card
    assert 'load_dataset("acme/magazines", "pretrain")' in card
    assert "## Personal information" in card and "`user_id`" in card
    assert "@inproceedings{ngo-nguyen-2024-recgpt," in card and 'eprint = "2405.12715"' in card
    assert 'author = "Ngo, Hoang and Nguyen, Dat Quoc"' in card
    for name in ("history_length.png", "tokens_per_document.png", "drops_by_stage.png", "token_share.png"):
        assert f"](report/{name})" in card and (built / "report" / name).is_file()
    licence = (built / "LICENSE").read_text()
    assert "amazon2018 / amazon2018/Magazine_Subscriptions\n  licence: other\n  redistribution allowed: yes" in licence


def test_card_takes_the_per_source_table_from_the_report(built: Path, shared: Path) -> None:
    """With the report's stats the card counts nothing itself (here it is given no tables); without a
    report it counts the tables it is given (here none)."""
    from recgpt_data.publish.card import CardParams, render_card

    stages = json.loads((built / "stats.json").read_text())["stages"]
    reviews = [
        json.loads(line) for line in (shared / "amazon2018" / "Magazine_Subscriptions_5.json").read_text().splitlines()
    ]
    users, items = len({r["reviewerID"] for r in reviews}), len({r["asin"] for r in reviews})
    row = f"| amazon2018 | amazon2018/Magazine_Subscriptions | {users} | {items} | {len(reviews):,} | "
    assert row in render_card(built, {}, stages, CardParams())
    unreported = {key: stats for key, stats in stages.items() if key != "report"}
    assert "## Per source\n\n_no tables to count_\n" in render_card(built, {}, unreported, CardParams())


def test_report_table_and_plots(built: Path, shared: Path) -> None:
    stats = json.loads((built / "stats.json").read_text())
    reviews = [
        json.loads(line) for line in (shared / "amazon2018" / "Magazine_Subscriptions_5.json").read_text().splitlines()
    ]
    per_user = Counter(r["reviewerID"] for r in reviews)
    (row,) = stats["corpus"]["per_source"]
    documents = pl.read_parquet(list((built / "data/pretrain").glob("*.parquet")))
    assert row == {
        "source": "amazon2018",
        "dataset": "amazon2018/Magazine_Subscriptions",
        "users": len(per_user),
        "items": len({r["asin"] for r in reviews}),
        "interactions": len(reviews),
        "documents": sum(1 for n in per_user.values() if n >= 6),
        "tokens": int(documents["num_tokens"].sum()),
        "instruction_pairs": sum(1 for n in per_user.values() if n >= 6),
    }
    assert stats["corpus"]["history_length"]["max"] == max(per_user.values())
    assert stats["corpus"]["history_length"]["min"] == min(per_user.values())
    for name in ("history_length.png", "tokens_per_document.png", "drops_by_stage.png", "token_share.png"):
        assert (built / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](report/{name})" not in (built / "report/index.md").read_text()
    page = (built / "report/index.md").read_text()
    assert "![History length per source (interactions per user and dataset)](history_length.png)" in page
    assert f"| **total** |  | {len(per_user)} |" in page


@pytest.mark.parametrize("config,splits", [("pretrain", {"train", "validation"}), ("instruct", {"train"})])
def test_load_dataset_every_config(built: Path, config: str, splits: set, tmp_path: Path) -> None:
    import datasets

    loaded = datasets.load_dataset(str(built), config, cache_dir=str(tmp_path))
    assert set(loaded) == splits
    for split in splits:
        local = pl.read_parquet(built / "data" / config / f"{split}-00000-of-00001.parquet")
        assert loaded[split].num_rows == local.height
        assert loaded[split].column_names == local.columns


def test_round_trip_through_the_real_clients(built: Path, tmp_path: Path) -> None:
    with HubServer() as hub:
        env = client_env(hub.endpoint, tmp_path / "home")
        first = publish(built, env)
        assert first.returncode == 0, first.stderr
        assert f"published {len(folder_files(built))} files (0 already there, 0 deleted)" in first.stderr
        assert hub.state.authorizations and set(hub.state.authorizations) == {f"Bearer {TOKEN}"}
        stored = hub.state.repos["acme/magazines"]
        assert (
            stored.files["data/pretrain/train-00000-of-00001.parquet"]
            == (built / "data/pretrain/train-00000-of-00001.parquet").read_bytes()
        )
        assert "data/pretrain/train-00000-of-00001.parquet" in stored.lfs
        loaded, remote = load_back(env, "acme/magazines", "d[s].to_dict()")
    for config, splits in remote.items():
        for split, columns in splits.items():
            local = pl.read_parquet(built / "data" / config / f"{split}-00000-of-00001.parquet")
            assert columns == local.to_dict(as_series=False)
    for output in (first.stdout, first.stderr, loaded.stdout, loaded.stderr):
        assert TOKEN not in output
    assert not [p for p in built.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def test_publish_resumes_and_retries(built: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(built), str(folder)], check=True)
    with HubServer() as hub:
        env = client_env(hub.endpoint, tmp_path / "home")
        assert publish(folder, env).returncode == 0
        commits = hub.state.commits
        again = publish(folder, env)
        n = len(folder_files(folder))
        assert again.returncode == 0 and f"published 0 files ({n} already there, 0 deleted)" in again.stderr
        assert hub.state.commits == commits
        (folder / "report/index.md").write_text((folder / "report/index.md").read_text() + "\nA note.\n")
        hub.state.fail_next = {"create_repo": 2, "commit": 1}
        changed = publish(folder, env)
        assert changed.returncode == 0, changed.stderr
        assert "create repo failed (HfHubHTTPError); retry 1/4 in 1 s" in changed.stderr
        assert "create repo failed (HfHubHTTPError); retry 2/4 in 2 s" in changed.stderr
        assert "commit failed (HfHubHTTPError); retry 1/4 in 1 s" in changed.stderr
        assert hub.state.fail_next == {"create_repo": 0, "commit": 0}
        assert f"published 1 files ({n - 1} already there, 0 deleted)" in changed.stderr
        assert hub.state.repos["acme/magazines"].files["report/index.md"].endswith(b"A note.\n")


def test_publish_without_token_is_a_clear_error(built: Path, tmp_path: Path) -> None:
    with HubServer() as hub:
        done = publish(built, client_env(hub.endpoint, tmp_path / "home", token=None))
    assert done.returncode == 2
    assert "no Hugging Face token: set HF_TOKEN" in done.stderr


@pytest.mark.parametrize(
    "source,dataset,allowed",
    [
        ("netflix", "netflix", False),
        ("yelp", "yelp", False),
        ("movielens", "movielens/ml-1m", False),
        ("movielens", "movielens/ml-10m", False),
        ("movielens", "movielens/ml-20m", False),
        ("movielens", "movielens/ml-25m", False),
        ("movielens", "movielens/ml-latest-small", True),
        ("amazon2018", "amazon2018/All_Beauty", True),
        ("no_such_source", "x", False),
    ],
)
def test_terms_decide_redistribution(source: str, dataset: str, allowed: bool) -> None:
    assert terms_of(source, dataset).redistributable is allowed


def test_publish_refuses_restricted_sources(shared: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    text = pipeline_stages.spec_text(shared).replace(
        'params.sources = [{ format = "amazon2018", paths = ["${raw}/Magazine_Subscriptions_5.json", "${raw}/meta_Magazine_Subscriptions.json.gz"] }]',
        f'params.sources = [{{ format = "movielens", paths = ["{shared}/movielens/ml-100k"] }}]',
    )
    spec.write_text(text + CARD, encoding="utf-8")
    run_spec(load_spec(spec), tmp_path / "out")
    assert [(t.source, t.dataset) for t in restricted(tmp_path / "out")] == [("movielens", "movielens/ml-100k")]
    with HubServer() as hub:
        env = client_env(hub.endpoint, tmp_path / "home")
        refused = publish(tmp_path / "out", env)
        assert refused.returncode == 2
        assert "refusing to publish" in refused.stderr and "movielens / movielens/ml-100k" in refused.stderr
        assert "may not be redistributed" in refused.stderr and "--allow-restricted" in refused.stderr
        assert "acme/magazines" not in hub.state.repos
        allowed = publish(tmp_path / "out", env, "--allow-restricted")
        assert allowed.returncode == 0, allowed.stderr
        assert "acme/magazines" in hub.state.repos


def test_empty_splits_stay_out_of_the_configs(built: Path, tmp_path: Path) -> None:
    from recgpt_data.publish.card import data_configs, split_rows

    folder = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(built), str(folder)], check=True)
    train = pl.read_parquet(folder / "data/pretrain/train-00000-of-00001.parquet")
    train.clear().write_parquet(folder / "data/pretrain/test-00000-of-00001.parquet")
    (folder / "data/empty").mkdir()
    train.clear().write_parquet(folder / "data/empty/train-00000-of-00001.parquet")
    assert split_rows(folder)["pretrain"] == {"test": 0, **split_rows(built)["pretrain"]}
    assert split_rows(folder)["empty"] == {"train": 0}
    assert data_configs(folder) == data_configs(built)


def test_demo_corpus_round_trip(demo_corpus: Path, tmp_path: Path) -> None:
    """The README's demo folder (real stages, card with ``dataset_info``, two benchmarks) published and
    loaded back config by config from the server with the real clients."""
    with HubServer() as hub:
        env = client_env(hub.endpoint, tmp_path / "home")
        done = publish(demo_corpus, env, repo_id="acme/recgpt-demo")
        assert done.returncode == 0, done.stderr
        stored = hub.state.repos["acme/recgpt-demo"].files
        local = {
            p.relative_to(demo_corpus).as_posix()
            for p in demo_corpus.rglob("*")
            if p.is_file() and not p.relative_to(demo_corpus).parts[0].startswith(".")
        }
        assert set(stored) == local
        _, rows = load_back(env, "acme/recgpt-demo", "d[s].num_rows")
    expected = {
        config: {
            split: sum(
                pl.scan_parquet(p).select(pl.len()).collect().item()
                for p in (demo_corpus / "data" / config).glob(f"{split}-*.parquet")
            )
            for split in splits
        }
        for config, splits in (("pretrain", ("train", "validation")), ("instruct", ("train",)))
    }
    assert rows == expected


def folder_files(folder: Path) -> set[str]:
    """The files of a built folder outside the runner's hidden state, as repository paths."""
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")
    }


def test_republish_replaces_the_old_build(demo_corpus: Path, tmp_path: Path) -> None:
    """The demo built with many pre-training shards, published, then rebuilt with one and published
    again: the repository holds exactly the new build and ``load_dataset`` reads it."""
    many = tmp_path / "many"
    subprocess.run(["cp", "-r", str(demo_corpus), str(many)], check=True)
    spec = tmp_path / "demo.toml"
    text = (TESTS.parent / "pipelines/demo.toml").read_text(encoding="utf-8")
    spec.write_text(text.replace("params.shard_rows = 2000", "params.shard_rows = 10"), encoding="utf-8")
    rebuilt = subprocess.run(
        [str(CLI), "run", str(spec), "--out", str(many)], capture_output=True, text=True, timeout=300
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    shards = sorted(p.name for p in (many / "data/pretrain").glob("train-*.parquet"))
    assert len(shards) > 1 and (demo_corpus / "data/pretrain/train-00000-of-00001.parquet").is_file()
    stale = folder_files(many) - folder_files(demo_corpus)
    assert set(f"data/pretrain/{name}" for name in shards) <= stale
    with HubServer() as hub:
        env = client_env(hub.endpoint, tmp_path / "home")
        assert publish(many, env, repo_id="acme/demo").returncode == 0
        assert set(hub.state.repos["acme/demo"].files) == folder_files(many)
        again = publish(demo_corpus, env, repo_id="acme/demo")
        assert again.returncode == 0, again.stderr
        assert f", {len(stale)} deleted)" in again.stderr
        stored = hub.state.repos["acme/demo"].files
        assert set(stored) == folder_files(demo_corpus)
        for name in stored:
            if name != "README.md":
                assert stored[name] == (demo_corpus / name).read_bytes(), name
        _, rows = load_back(env, "acme/demo", "d[s].num_rows")
    card = stored["README.md"].decode()
    assert 'pretrain = load_dataset("acme/demo", "pretrain")' in card and "ORG/" not in card
    assert card.replace("acme/demo", "ORG/recgpt-demo") == (demo_corpus / "README.md").read_text()
    expected = {
        config: {
            split: sum(pq.read_metadata(p).num_rows for p in (demo_corpus / "data" / config).glob(f"{split}-*.parquet"))
            for split in splits
        }
        for config, splits in (("pretrain", ("train", "validation")), ("instruct", ("train",)))
    }
    assert rows == expected


def test_revision_creates_the_branch(built: Path, tmp_path: Path) -> None:
    with HubServer() as hub:
        env = client_env(hub.endpoint, tmp_path / "home")
        done = publish(built, env, "--revision", "dev")
        assert done.returncode == 0, done.stderr
        repo = hub.state.repos["acme/magazines"]
        assert set(repo.branches) == {"main", "dev"}
        assert set(repo.branches["dev"].files) == folder_files(built)
        assert repo.files == {}
        again = publish(built, env, "--revision", "dev")
        n = len(folder_files(built))
        assert again.returncode == 0 and f"published 0 files ({n} already there, 0 deleted)" in again.stderr
