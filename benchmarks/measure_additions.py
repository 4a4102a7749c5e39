"""What each of this project's additions to the RecGPT rules removes, measured on the public samples.

Runs ``pipelines/samples.toml`` as the paper has it (no language filter, no near-duplicate removal,
the 2014 release only for its benchmarks, no token cap), then with each addition switched on alone,
and prints per variant the pre-training corpus as written (users, interactions, tokens, read from
the shards) and the difference to the paper's build. The runs share one output folder, so each reruns
only the stages its change touches.

    python benchmarks/measure_additions.py --shared ../shared/data --out /tmp/additions
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from recgpt_data.pipeline.runner import run_spec
from recgpt_data.pipeline.spec import PipelineSpec, StageSpec, load_spec

REPO = Path(__file__).resolve().parent.parent
OPTIONAL = ("langid", "dedup")


def variant(base: PipelineSpec, on: set[str], older_rows: str, cap: int | None) -> PipelineSpec:
    """``base`` with the optional stages in ``on`` only, the cross-release stage after ``clean``
    keeping ``older_rows`` of 2014, and ``cap`` as the token budget (``None``: no cap)."""
    stages = []
    for stage in base.stages:
        if stage.stage in OPTIONAL and stage.stage not in on:
            continue
        if stage.stage == "write_pretrain" and cap is not None:
            stage = stage.model_copy(update={"params": {**stage.params, "target_tokens": cap}})
        stages.append(stage)
        if stage.stage == "clean":
            stages.append(StageSpec(stage="cross_release", params={"keep_older": older_rows}))
    return base.model_copy(update={"stages": stages})


def corpus(out: Path) -> dict[str, int]:
    """Users (per dataset), interactions and tokens of the written pre-training shards."""
    shards = pl.scan_parquet(str(out / "data" / "pretrain" / "*.parquet"))
    row = shards.select(
        pl.struct("dataset", "user_id").n_unique().alias("users"),
        pl.col("num_items").sum().alias("interactions"),
        pl.col("num_tokens").sum().alias("tokens"),
    ).collect()
    return {k: int(v) for k, v in row.row(0, named=True).items()}


def stage_counts(out: Path, key: str) -> dict[str, int]:
    """A stage's drops and changes by reason, from ``stats.json``."""
    stats = json.loads((out / "stats.json").read_text())["stages"].get(key, {})
    return {**stats.get("dropped", {}), **stats.get("changed", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/recgpt-additions"))
    args = parser.parse_args()
    base = load_spec(REPO / "pipelines" / "samples.toml", {"shared": str(args.shared.resolve())})
    builds = {
        "paper's rules": (variant(base, set(), "none", None), None, None),
        "+ language filter": (variant(base, {"langid"}, "none", None), "paper's rules", "langid"),
        "+ near-duplicate removal": (variant(base, {"dedup"}, "none", None), "paper's rules", "dedup"),
        "+ 2014 reviews 2018 lacks": (variant(base, set(), "unmatched", None), "paper's rules", "cross_release"),
        "+ 2014 reviews, + language filter": (
            variant(base, {"langid"}, "unmatched", None), "+ 2014 reviews 2018 lacks", "langid"),
        "+ 2014 reviews, + near-duplicate removal": (
            variant(base, {"dedup"}, "unmatched", None), "+ 2014 reviews 2018 lacks", "dedup"),
        "+ token cap 20.5B": (variant(base, set(), "none", 20_500_000_000), "paper's rules", "write_pretrain"),
    }
    found: dict[str, dict[str, int]] = {}
    print("| build | users | interactions | tokens | change against | stage counts |")
    print("|---|---|---|---|---|---|")
    for name, (spec, against, key) in builds.items():
        run_spec(spec, args.out)
        found[name] = corpus(args.out)
        print_row(name, found[name], against, found.get(against or ""), stage_counts(args.out, key) if key else {})
    half = found["paper's rules"]["tokens"] // 2
    run_spec(variant(base, set(), "none", half), args.out)
    name = f"+ token cap {half:,} (half the samples)"
    print_row(name, corpus(args.out), "paper's rules", found["paper's rules"], stage_counts(args.out, "write_pretrain"))


def print_row(name: str, numbers: dict[str, int], against: str | None, reference: dict[str, int] | None,
              counts: dict[str, int]) -> None:
    """One Markdown row: the corpus, its change against ``reference`` and the stage's own counts."""
    delta = "" if reference is None else f"{against}: " + ", ".join(
        f"{k} {numbers[k] - reference[k]:+,}" for k in numbers
    )
    detail = ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)
    print(f"| {name} | {numbers['users']:,} | {numbers['interactions']:,} | {numbers['tokens']:,} | {delta} | {detail} |",
          flush=True)


if __name__ == "__main__":
    main()
