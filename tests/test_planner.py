"""The planner and the spec-wide settings: every planning error before any stage runs, the tokenizer
declared once per spec and resolved relative to the spec file, and fingerprints that hash exactly the
settings a stage uses and the parameters it declares raw paths.

Token counts are checked against the ``tokenizers`` library called directly on the real Amazon 2018
Magazine Subscriptions titles, read with the standard library.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pipeline_stages
import polars as pl
import pytest
from conftest import REPO
from tokenizers import Tokenizer

from recgpt_data.pipeline.planner import PlanError, plan
from recgpt_data.pipeline.runner import run_spec, spec_status
from recgpt_data.pipeline.spec import load_spec
from recgpt_data.stage import Context, Params, RawPath, StageOutput, StageStats, stage
from recgpt_data.tokenizer import DEFAULT_NAME, DEFAULT_TOKENIZER, load_tokenizer

META = "meta_Magazine_Subscriptions.json.gz"


@stage("t_title_tokens", params=Params, reads=("items",), writes=("title_tokens",), settings=("tokenizer",))
def title_tokens(tables: Mapping[str, pl.LazyFrame], params: Params, ctx: Context) -> StageOutput:
    """Tokens of each item title under the spec's tokenizer, which the stats name."""
    titles = tables["items"].select("item_id", "title").collect()
    encoder = load_tokenizer(ctx.tokenizer)
    counts = [len(e.ids) for e in encoder.encode_batch(titles["title"].fill_null("").to_list())]
    out = titles.with_columns(pl.Series("tokens", counts, dtype=pl.Int64))
    return StageOutput({"title_tokens": out}, StageStats(info={"tokenizer": ctx.tokenizer_name}))


class LinesParams(Params):
    lines_of: RawPath
    label: str = ""


@stage("t_file_lines", params=LinesParams, writes=("file_lines",))
def file_lines(tables: Mapping[str, pl.LazyFrame], params: LinesParams, ctx: Context) -> StageOutput:
    """The lines of a raw file, with the label it is given."""
    text = (ctx.spec_dir / params.lines_of).read_text(encoding="utf-8")
    frame = pl.DataFrame({"line": text.splitlines()}).with_columns(pl.lit(params.label).alias("label"))
    return StageOutput({"file_lines": frame}, StageStats())


def ingest_text(shared: Path) -> str:
    raw = shared / "amazon2018"
    return (
        '[[stages]]\nstage = "ingest"\n'
        f'params.sources = [{{ format = "amazon2018", paths = ["{raw}/Magazine_Subscriptions_5.json", "{raw}/{META}"] }}]\n'
    )


def test_planning_errors_come_before_any_stage_runs(tmp_path: Path, shared: Path, monkeypatch) -> None:
    """A spec whose fifth stage is broken runs nothing and writes nothing; every problem is listed."""
    four = pipeline_stages.spec_text(shared).split('[[stages]]\nstage = "t_write"')[0]
    path = tmp_path / "spec.toml"
    out = tmp_path / "out"
    path.write_text(four + '[[stages]]\nstage = "t_write"\nparams.no_such_parameter = 1\n')
    with pytest.raises(PlanError, match="stage t_write: bad parameters") as error:
        run_spec(load_spec(path), out)
    assert len(error.value.problems) == 1
    assert not out.exists()

    path.write_text(four + '[[stages]]\nstage = "hold_out"\n')
    monkeypatch.setenv("RECGPT_KILL_AT", "stage:ingest:middle")
    with pytest.raises(PlanError) as error:
        run_spec(load_spec(path), out)
    assert error.value.problems == [
        "stage hold_out reads held_out, which no earlier stage writes",
        "RECGPT_KILL_AT='stage:ingest:middle': want stage:<key>:<before|prepared|mid|publish|after> with a key of this spec",
    ]
    assert not out.exists()


def test_a_benchmark_dataset_no_source_produces_is_refused(tmp_path: Path, shared: Path) -> None:
    """Named datasets are checked against the ingest sources before anything runs."""
    benchmark = (
        '\n[[stages]]\nstage = "p5_benchmark"\n'
        'params.benchmarks = [{ name = "beauty", dataset = "amazon2014/Beauty" }, '
        '{ name = "magazines", dataset = "amazon2018/Magazine_Subscriptions" }]\n'
    )
    path = tmp_path / "spec.toml"
    path.write_text('name = "x"\n' + ingest_text(shared) + benchmark)
    with pytest.raises(PlanError) as error:
        run_spec(load_spec(path), tmp_path / "out")
    assert error.value.problems == [
        "stage p5_benchmark names dataset amazon2014/Beauty, which no earlier ingest source produces "
        "(sources: amazon2018)"
    ]
    assert not (tmp_path / "out").exists()
    path.write_text('name = "x"\n' + ingest_text(shared) + benchmark.replace("amazon2014/Beauty", "amazon2018/Beauty"))
    assert [p.key for p in plan(load_spec(path))] == ["ingest", "p5_benchmark"]


def stage_params(value: object) -> set[str]:
    """Every key of a stage's parameters, at any depth."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in stage_params(v)}
    if isinstance(value, list):
        return {k for v in value for k in stage_params(v)}
    return set()


@pytest.mark.parametrize("name", ["demo", "samples", "benchmarks", "recgpt"])
def test_the_tokenizer_is_declared_once_per_spec(name: str) -> None:
    """Each bundled spec names its tokenizer once, at the top; no stage restates it."""
    path = REPO / "pipelines" / f"{name}.toml"
    text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    assert "tokenizer" in raw
    assert all("tokenizer" not in stage_params(s.get("params", {})) for s in raw["stages"])
    assert sum(line.split("=")[0].strip() == "tokenizer" for line in text.splitlines()) == 1 + (
        "tokenizer" in raw.get("vars", {})
    )
    if name != "recgpt":  # recgpt.toml's tokenizer lies under the site's raw folder
        assert plan(load_spec(path)).settings.tokenizer.read_bytes() == DEFAULT_TOKENIZER.read_bytes()


def reformatted_tokenizer(target: Path) -> Path:
    """The bundled tokenizer written with other whitespace: the same tokenizer, other bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(json.loads(DEFAULT_TOKENIZER.read_text(encoding="utf-8")), indent=1), encoding="utf-8")
    return target


def test_a_relative_tokenizer_resolves_next_to_the_spec_wherever_the_run_starts(
    tmp_path: Path, shared: Path, monkeypatch
) -> None:
    """The same spec run from two working directories, one holding a broken decoy at the same relative
    path, loads the tokenizer beside the spec both times: the same fingerprint and bytes, the manifest
    name the spec's path, and the counts those of the tokenizer called directly."""
    project = tmp_path / "project"
    reformatted_tokenizer(project / "tok" / "tokenizer.json")
    spec = project / "spec.toml"
    spec.write_text('name = "x"\ntokenizer = "tok"\n' + ingest_text(shared) + '[[stages]]\nstage = "t_title_tokens"\n')
    decoy = tmp_path / "elsewhere"
    (decoy / "tok").mkdir(parents=True)
    (decoy / "tok" / "tokenizer.json").write_text("{}")
    outs = []
    for cwd in (project, decoy):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"out-{cwd.name}"
        result = run_spec(load_spec("spec.toml" if cwd == project else spec), out)
        assert result.stats["t_title_tokens"]["info"] == {"tokenizer": "tok"}
        outs.append(out)
    markers = [json.loads((o / ".stages/t_title_tokens/_SUCCESS.json").read_text()) for o in outs]
    assert markers[0]["fingerprint"] == markers[1]["fingerprint"]
    tables = [(o / ".stages/t_title_tokens/title_tokens.parquet").read_bytes() for o in outs]
    assert tables[0] == tables[1]
    with gzip.open(shared / "amazon2018" / META, "rt", encoding="utf-8") as f:
        titles = [(r["asin"], r.get("title") or "") for r in map(json.loads, f)]
    direct = Tokenizer.from_file(str(DEFAULT_TOKENIZER))
    written = pl.read_parquet(outs[0] / ".stages/t_title_tokens/title_tokens.parquet")
    assert sorted(written.select("item_id", "tokens").iter_rows()) == sorted(
        (asin, len(direct.encode(title).ids)) for asin, title in titles
    )


def test_fingerprints_hash_the_settings_a_stage_uses_and_its_declared_paths(tmp_path: Path, shared: Path) -> None:
    """A new tokenizer file makes only the stage that uses it stale; a file named by a declared raw
    path parameter counts, one named by a plain string parameter does not."""
    tokenizer = reformatted_tokenizer(tmp_path / "tok" / "tokenizer.json")
    (tmp_path / "lines.txt").write_text("a\nb\n")
    (tmp_path / "label.txt").write_text("x\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'name = "x"\ntokenizer = "tok/tokenizer.json"\n'
        + ingest_text(shared)
        + '[[stages]]\nstage = "t_title_tokens"\n'
        + '[[stages]]\nstage = "t_file_lines"\nparams.lines_of = "lines.txt"\nparams.label = "label.txt"\n'
    )
    out = tmp_path / "out"
    run_spec(load_spec(spec), out)

    def states() -> dict[str, str]:
        return {s.key: s.state for s in spec_status(load_spec(spec), out)}

    assert set(states().values()) == {"done"}
    (tmp_path / "label.txt").write_text("y\n")
    assert set(states().values()) == {"done"}
    tokenizer.write_text(json.dumps(json.loads(tokenizer.read_text()), indent=2))
    assert states() == {"ingest": "done", "t_title_tokens": "stale", "t_file_lines": "done"}
    (tmp_path / "lines.txt").write_text("a\nb\nc\n")
    assert states() == {"ingest": "done", "t_title_tokens": "stale", "t_file_lines": "stale"}
    result = run_spec(load_spec(spec), out)
    assert result.states == {"ingest": "cached", "t_title_tokens": "ran", "t_file_lines": "ran"}
    assert result.stats["t_file_lines"]["rows_out"] == {"file_lines": 3}


def test_the_manifest_name_of_a_tokenizer(tmp_path: Path, shared: Path) -> None:
    """GPT-NeoX-20B's name where the file holds its bytes, wherever it lies; else the declared path;
    a missing tokenizer stops the run before any stage."""
    copy = tmp_path / "neox" / "tokenizer.json"
    copy.parent.mkdir()
    shutil.copy(DEFAULT_TOKENIZER, copy)
    reformatted_tokenizer(tmp_path / "other" / "tokenizer.json")
    names = {}
    for declared in ("neox", "other/tokenizer.json", "assets:gpt-neox-20b"):
        spec = tmp_path / "spec.toml"
        spec.write_text(f'name = "x"\ntokenizer = "{declared}"\n' + ingest_text(shared))
        names[declared] = plan(load_spec(spec)).settings.tokenizer_name
    assert names == {
        "neox": DEFAULT_NAME,
        "other/tokenizer.json": "other/tokenizer.json",
        "assets:gpt-neox-20b": DEFAULT_NAME,
    }
    spec.write_text('name = "x"\ntokenizer = "missing/tokenizer.json"\n' + ingest_text(shared))
    with pytest.raises(PlanError, match="no tokenizer.json at"):
        run_spec(load_spec(spec), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def spec_after_ingest(folder: Path, tokenizer: str, shared: Path, stages: str) -> Path:
    """``folder/spec.toml``: the Magazine Subscriptions ingest under ``tokenizer``, then ``stages``."""
    spec = folder / "spec.toml"
    spec.write_text(f'name = "x"\ntokenizer = "{tokenizer}"\n' + ingest_text(shared) + stages)
    return spec


def test_the_manifest_names_the_spec_tokenizer_and_its_bytes(tmp_path: Path, shared: Path) -> None:
    """A spec whose tokenizer is a file of other bytes, under another name: write_pretrain's manifest
    and pretrain_tokens' manifest name it as the spec declares it, with the sha256 of its bytes."""
    tokenizer = reformatted_tokenizer(tmp_path / "mine" / "neox-reformatted.json")
    stages = ("pretrain_documents", "write_pretrain", "pretrain_tokens")
    spec = spec_after_ingest(
        tmp_path, "mine/neox-reformatted.json", shared, "".join(f'[[stages]]\nstage = "{s}"\n' for s in stages)
    )
    out = tmp_path / "out"
    run_spec(load_spec(spec), out)
    expected = {"name": "mine/neox-reformatted.json", "sha256": hashlib.sha256(tokenizer.read_bytes()).hexdigest()}
    assert expected["sha256"] != hashlib.sha256(DEFAULT_TOKENIZER.read_bytes()).hexdigest()
    assert json.loads((out / "manifest.json").read_text())["tokenizer"] == expected
    assert json.loads((out / "exports" / "tokens" / "manifest.json").read_text())["tokenizer"] == expected


def test_instruction_pairs_and_benchmark_prompts_load_the_spec_tokenizer_not_the_working_directory_one(
    tmp_path: Path, shared: Path, monkeypatch
) -> None:
    """instruct_pairs and p5_benchmark, run from a working directory holding a broken decoy at the
    spec's relative tokenizer path, load the file beside the spec; a new file there makes them stale."""
    project = tmp_path / "project"
    tokenizer = reformatted_tokenizer(project / "tok" / "tokenizer.json")
    spec = spec_after_ingest(
        project,
        "tok",
        shared,
        '[[stages]]\nstage = "instruct_pairs"\nparams.pool = "all"\n[[stages]]\nstage = "p5_benchmark"\n'
        'params.benchmarks = [{ name = "magazines", dataset = "amazon2018/Magazine_Subscriptions", k = 1 }]\n',
    )
    decoy = tmp_path / "elsewhere"
    (decoy / "tok").mkdir(parents=True)
    (decoy / "tok" / "tokenizer.json").write_text("{}")
    monkeypatch.chdir(decoy)
    out = tmp_path / "out"
    result = run_spec(load_spec(spec), out)
    assert result.stats["instruct_pairs"]["rows_out"]["instruct"] > 0
    assert (out / "eval" / "magazines").is_dir()
    tokenizer.write_text(json.dumps(json.loads(tokenizer.read_text()), indent=2))
    states = {s.key: s.state for s in spec_status(load_spec(spec), out)}
    assert states == {"ingest": "done", "instruct_pairs": "stale", "p5_benchmark": "stale"}
