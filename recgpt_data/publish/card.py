"""The dataset card (``README.md``): YAML metadata the Hub and ``datasets`` read (license, language,
task categories, size category, ``configs`` with ``data_files`` per config and split), and a body
with provenance and terms per source, the per-source table, filter and dedup rates, and how to load.

Built from the folder's data files, the run's tables and its stage stats; it never holds a token,
a host name or a time, so the same run gives the same card.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from recgpt_data.errors import UsageError
from recgpt_data.io.parquet import write_text
from recgpt_data.publish.terms import SourceTerms, terms_of
from recgpt_data.report import corpus_summary, markdown_table, per_source_markdown, rates_markdown, stage_rates
from recgpt_data.stage import Context, Frame, Params, StageOutput, StageStats, stage

SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)


class CardParams(Params):
    """What the card says beyond what the run knows."""

    pretty_name: str = "RecGPT corpus"
    repo_id: str = "ORG/NAME"
    language: list[str] = ["en"]
    task_categories: list[str] = ["text-generation"]
    description: str = (
        "Users' interaction histories with items, written as text in the format of RecGPT "
        "(Ngo and Nguyen, 2024, arXiv 2405.12715), for pre-training and instruction tuning a "
        "recommendation language model."
    )


COLUMNS: dict[str, list[tuple[str, str]]] = {
    "pretrain": [
        ("text", "one user's items in RecGPT's format: a header, a blank line, one line per item"),
        ("num_tokens", "tokens of `text` under the GPT-NeoX-20B tokenizer (MPT-7B's)"),
        ("source", "the source format, e.g. `amazon2018`"),
        ("dataset", "the dataset, e.g. `amazon2018/All_Beauty`: one user's history per dataset"),
        ("user_id", "the source's own user id"),
        ("chunk_index", "0, 1, ...: a history over 2048 tokens is split into chunks of similar item counts"),
        ("num_items", "item lines in `text`"),
        ("item_ids", "the source's item ids of those lines, in order (for leakage checks and analysis)"),
    ],
    "instruct": [
        ("prompt", "`### Instruction:\\n{instruction}\\n\\n### Response:`"),
        ("response", "the target item's line, or its rating such as `5.0/5.0`"),
        ("task", "`next_item` or `rating`"),
        ("source", "the source format"),
        ("dataset", "the dataset"),
    ],
}


def split_of(path: Path) -> str:
    """The split a data file belongs to: its name up to the first ``-`` (``train-00000-of-00002``)."""
    return path.name.split("-", 1)[0].split(".", 1)[0]


def split_rows(folder: Path) -> dict[str, dict[str, int]]:
    """Rows per split of each ``data/<config>/<split>-*.parquet`` config, from the parquet footers;
    ``pretrain`` first (the default config)."""
    found: dict[str, dict[str, int]] = {}
    data = folder / "data"
    if not data.is_dir():
        return found
    order = {"pretrain": 0, "instruct": 1}
    for config in sorted((p for p in data.iterdir() if p.is_dir()), key=lambda p: (order.get(p.name, 2), p.name)):
        rows: dict[str, int] = {}
        for path in sorted(config.glob("*.parquet")):
            rows[split_of(path)] = rows.get(split_of(path), 0) + pq.read_metadata(path).num_rows
        if rows:
            found[config.name] = dict(sorted(rows.items()))
    return found


def data_configs(folder: Path) -> dict[str, dict[str, str]]:
    """The card's configs as {config: {split: glob}}: only splits that hold rows (``datasets``
    cannot load an empty parquet split), and only configs left with a split."""
    configs: dict[str, dict[str, str]] = {}
    for config, rows in split_rows(folder).items():
        splits = {s: f"data/{config}/{s}-*.parquet" for s, n in rows.items() if n}
        if splits:
            configs[config] = splits
    return configs


def dataset_info_yaml(folder: Path, configs: Mapping[str, Mapping[str, str]]) -> str:
    """The card's ``dataset_info`` block (features, and rows and bytes per split), as the Hub's own
    uploads write it. ``datasets`` keys its cache of a local folder on this block, so a rebuilt
    folder whose shards changed is read afresh rather than served from a stale cache. Empty where
    there are no configs."""
    if not configs:
        return ""
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    infos = {}
    for config, splits in configs.items():
        files = {split: sorted(folder.glob(pattern)) for split, pattern in splits.items()}
        first = next(path for paths in files.values() for path in paths)
        info = DatasetInfo(features=Features.from_arrow_schema(pq.read_schema(first)), config_name=config)
        info.splits = SplitDict()
        for split, paths in files.items():
            metadata = [pq.read_metadata(path) for path in paths]
            info.splits.add(SplitInfo(
                name=split,
                num_bytes=sum(m.row_group(i).total_byte_size for m in metadata for i in range(m.num_row_groups)),
                num_examples=sum(m.num_rows for m in metadata),
            ))
        info.download_size = sum(path.stat().st_size for paths in files.values() for path in paths)
        info.dataset_size = sum(split.num_bytes for split in info.splits.values())
        infos[config] = info
    card_data = DatasetCardData()
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    return yaml.safe_dump({"dataset_info": card_data.to_dict()["dataset_info"]}, sort_keys=False).rstrip("\n")


def size_category(rows: int) -> str:
    """The Hub's size category for a dataset of ``rows`` rows."""
    for limit, name in SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1B"


def yaml_value(value: Any) -> str:
    """A scalar as YAML (JSON strings are valid YAML and need no escaping rules of our own)."""
    return json.dumps(value, ensure_ascii=False)


def front_matter(
    params: CardParams, licence: str, size: str, configs: Mapping[str, Mapping[str, str]], info: str
) -> str:
    """The YAML block between ``---`` lines."""
    lines = ["---", f"license: {yaml_value(licence)}"]
    if licence == "other":
        lines += ['license_name: "per-source"', 'license_link: "LICENSE"']
    lines += ["language:"] + [f"- {yaml_value(x)}" for x in params.language]
    lines += ["task_categories:"] + [f"- {yaml_value(x)}" for x in params.task_categories]
    lines += ["size_categories:", f"- {yaml_value(size)}", f"pretty_name: {yaml_value(params.pretty_name)}"]
    lines += ["tags:", "- recommendation", "- recgpt"]
    if configs:
        lines.append("configs:")
        for index, (config, splits) in enumerate(configs.items()):
            lines.append(f"- config_name: {yaml_value(config)}")
            if index == 0:
                lines.append("  default: true")
            lines.append("  data_files:")
            for split, pattern in splits.items():
                lines += [f"  - split: {yaml_value(split)}", f"    path: {yaml_value(pattern)}"]
        lines.append(info)
    lines.append("---")
    return "\n".join(lines)


def licence_of(terms: list[SourceTerms]) -> str:
    """One SPDX-style licence if every source shares it, else ``other``."""
    licences = {t.licence for t in terms}
    return licences.pop() if len(licences) == 1 else "other"


def render_card(
    folder: Path,
    tables: Mapping[str, Frame],
    stages: Mapping[str, Mapping[str, Any]],
    params: CardParams,
) -> str:
    """The dataset card for the folder and the run that built it."""
    configs = data_configs(folder)
    rows = split_rows(folder)
    pairs = source_pairs(tables)
    terms = [terms_of(source, dataset) for source, dataset in pairs]
    size = size_category(max((sum(s.values()) for s in rows.values()), default=0))
    summary = corpus_summary(tables)
    parts = [
        front_matter(params, licence_of(terms), size, configs, dataset_info_yaml(folder, configs)),
        "",
        f"# {params.pretty_name}",
        "",
        params.description,
        "",
    ]
    parts += ["## Configs and splits", ""]
    if rows:
        body = [[c, s, n] for c, splits in rows.items() for s, n in splits.items()]
        parts += [markdown_table(["config", "split", "rows"], body), ""]
    parts += ["## Columns", "", markdown_table(["config", "column", "meaning"], [
        [c, col, meaning] for c, columns in COLUMNS.items() if c in configs for col, meaning in columns
    ]), ""]
    benchmarks = sorted(p.name for p in (folder / "eval").glob("*") if p.is_dir())
    if benchmarks:
        parts += [
            "## Benchmarks",
            "",
            "P5-protocol benchmarks held out of both configs (no held-out interaction is in a shard "
            "or a pair), each under `eval/<name>/` as P5's `sequential_data.txt` and `datamaps.json` "
            "plus test prompts in `prompts/`: " + ", ".join(f"`{b}`" for b in benchmarks) + ".",
            "",
        ]
    parts += ["## How to load", "", "```python", "from datasets import load_dataset", ""]
    for config in configs:
        parts.append(f'{config} = load_dataset("{params.repo_id}", "{config}")')
    parts += ["```", "", 'Or from a local copy of this folder: `load_dataset("path/to/folder", "pretrain")`.', ""]
    parts += ["## Sources, provenance and terms", ""]
    parts += [
        markdown_table(
            ["source", "dataset", "licence", "redistributable", "terms"],
            [
                [t.source, t.dataset, t.licence, "yes" if t.redistributable else "**no**", t.terms or "not declared"]
                for t in terms
            ],
        ),
        "",
        "Every row keeps `source` and `dataset` columns, so a user can select by source and honour each owner's terms.",
        "",
    ]
    parts += ["## Per source", "", per_source_markdown(summary), ""]
    parts += ["## Filters and deduplication", "", rates_markdown(stage_rates(stages)), ""]
    parts += ["See `report/index.md` for distributions and `stats.json` for every number.", ""]
    return "\n".join(parts)


def render_licence(pairs: list[tuple[str, str]]) -> str:
    """The LICENSE file the card's ``license_link`` points at: each source's licence and terms."""
    lines = [
        "This dataset is derived from the sources below; each keeps its owner's licence and terms, which",
        "apply to the rows whose `source` and `dataset` columns name it.",
        "",
    ]
    for terms in (terms_of(source, dataset) for source, dataset in pairs):
        lines += [
            f"{terms.source} / {terms.dataset}",
            f"  licence: {terms.licence}",
            f"  redistribution allowed: {'yes' if terms.redistributable else 'no'}",
            f"  terms: {terms.terms or 'not declared'}",
            "",
        ]
    return "\n".join(lines)


def source_pairs(tables: Mapping[str, Frame]) -> list[tuple[str, str]]:
    """Every (source, dataset) the run's tables hold, sorted."""
    seen: set[tuple[str, str]] = set()
    for name in ("documents", "instruct", "interactions"):
        if name in tables and {"source", "dataset"} <= set(tables[name].lazy().collect_schema().names()):
            seen.update(tables[name].lazy().select("source", "dataset").unique().collect().iter_rows())
    return sorted(seen)


@stage("card", params=CardParams, optional_reads=("interactions", "documents", "instruct"), summarises=True)
def card_stage(tables: Mapping[str, Frame], params: CardParams, ctx: Context) -> StageOutput:
    """Write the dataset card README.md, and LICENSE with each source's terms, for the folder built so far."""
    folder = ctx.folder or ctx.out_dir
    if not data_configs(folder):
        raise UsageError(f"card: no data/<config>/*.parquet files in {folder}; put the card after the writers")
    write_text(render_card(folder, tables, ctx.stages, params), ctx.out_dir / "README.md")
    write_text(render_licence(source_pairs(tables)), ctx.out_dir / "LICENSE")
    stats = StageStats()
    stats.info["configs"] = sorted(data_configs(folder))
    return StageOutput({}, stats)
