"""The dataset card (``README.md``): YAML metadata the Hub and ``datasets`` read (license, language,
task categories, size category, ``configs`` with ``data_files`` per config and split), and a body
with provenance and terms per source, the per-source table, filter and dedup rates, and how to load.

Built from the folder's data files, the run's tables and its stage stats; it never holds a token,
a host name or a time, so the same run gives the same card.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard

from recgpt_data.pipeline.run_warnings import run_warnings
from recgpt_data.publish.terms import SourceTerms, terms_of
from recgpt_data.report import (
    CORPUS,
    PLOTS,
    corpus_summary,
    markdown_table,
    per_source_markdown,
    rates_markdown,
    stage_rates,
)
from recgpt_data.stage import Params

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


def add_dataset_info(card_data: Any, folder: Path, configs: Mapping[str, Mapping[str, str]]) -> None:
    """Put the ``dataset_info`` block (features, and rows and bytes per split) into ``card_data``, as
    the Hub's own uploads write it. ``datasets`` keys its cache of a local folder on this block, so a
    rebuilt folder whose shards changed is read afresh rather than served from a stale cache."""
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict

    infos = {}
    for config, splits in configs.items():
        files = {split: sorted(folder.glob(pattern)) for split, pattern in splits.items()}
        first = next(path for paths in files.values() for path in paths)
        info = DatasetInfo(features=Features.from_arrow_schema(pq.read_schema(first)), config_name=config)
        info.splits = SplitDict()
        for split, paths in files.items():
            metadata = [pq.read_metadata(path) for path in paths]
            info.splits.add(
                SplitInfo(
                    name=split,
                    num_bytes=sum(m.row_group(i).total_byte_size for m in metadata for i in range(m.num_row_groups)),
                    num_examples=sum(m.num_rows for m in metadata),
                )
            )
        info.download_size = sum(path.stat().st_size for paths in files.values() for path in paths)
        info.dataset_size = sum(split.num_bytes for split in info.splits.values())
        infos[config] = info
    DatasetInfosDict(infos).to_dataset_card_data(card_data)


def size_category(rows: int) -> str:
    """The Hub's size category for a dataset of ``rows`` rows."""
    for limit, name in SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1B"


def card_data(
    params: CardParams, licence: str, size: str, folder: Path, configs: Mapping[str, Mapping[str, str]]
) -> Any:
    """The card's YAML metadata as ``huggingface_hub``'s ``DatasetCardData``: licence, languages,
    tasks, size, name, tags, one config per ``data/<config>/`` (the first the default) with its
    ``data_files`` per split, and ``dataset_info``."""
    from huggingface_hub import DatasetCardData

    extra = {"license_name": "per-source", "license_link": "LICENSE"} if licence == "other" else {}
    data = DatasetCardData(
        license=licence,
        language=list(params.language),
        task_categories=list(params.task_categories),
        size_categories=[size],
        pretty_name=params.pretty_name,
        tags=["recommendation", "recgpt"],
        configs=[
            {
                "config_name": config,
                **({"default": True} if index == 0 else {}),
                "data_files": [{"split": split, "path": pattern} for split, pattern in splits.items()],
            }
            for index, (config, splits) in enumerate(configs.items())
        ],
        **extra,
    )
    if configs:
        add_dataset_info(data, folder, configs)
    return data


SNIPPET = re.compile(r'^(\w+ = load_dataset\()"[^"\n]*"(, "[\w-]+"\))$', re.MULTILINE)


def card_for_repo(card: str, repo_id: str) -> str:
    """The card with its loading snippet naming ``repo_id``, the repository it is published to."""
    return SNIPPET.sub(lambda m: f'{m.group(1)}"{repo_id}"{m.group(2)}', card)


def licence_of(terms: list[SourceTerms]) -> str:
    """One SPDX-style licence if every source shares it, else ``other``."""
    licences = {t.licence for t in terms}
    return licences.pop() if len(licences) == 1 else "other"


def benchmark_entry(folder: Path, name: str) -> str:
    """A benchmark's name, with where its rating split came from, as its ``summary.json`` says."""
    summary = folder / "eval" / name / "summary.json"
    origin = json.loads(summary.read_text()).get("rating_split_from") if summary.is_file() else None
    return f"`{name}` (rating split: {origin})" if origin else f"`{name}`"


def render_card(
    folder: Path,
    tables: Mapping[str, pl.LazyFrame],
    stages: Mapping[str, Mapping[str, Any]],
    params: CardParams,
) -> str:
    """The dataset card for the folder and the run that built it."""
    configs = data_configs(folder)
    rows = split_rows(folder)
    pairs = source_pairs(tables)
    terms = [terms_of(source, dataset) for source, dataset in pairs]
    size = size_category(max((sum(s.values()) for s in rows.values()), default=0))
    summary = reported_summary(stages) or corpus_summary(tables)
    parts = [
        f"# {params.pretty_name}",
        "",
        params.description,
        "",
    ]
    parts += ["## Configs and splits", ""]
    if rows:
        body = [[c, s, n] for c, splits in rows.items() for s, n in splits.items()]
        parts += [markdown_table(["config", "split", "rows"], body), ""]
    parts += [
        "## Columns",
        "",
        markdown_table(
            ["config", "column", "meaning"],
            [[c, col, meaning] for c, columns in COLUMNS.items() if c in configs for col, meaning in columns],
        ),
        "",
    ]
    benchmarks = sorted(p.name for p in (folder / "eval").glob("*") if p.is_dir())
    if benchmarks:
        parts += [
            "## Benchmarks",
            "",
            "P5-protocol benchmarks held out of both configs (no held-out interaction is in a shard "
            "or a pair), each under `eval/<name>/` as P5's `sequential_data.txt` and `datamaps.json` "
            "plus test prompts in `prompts/`: " + ", ".join(benchmark_entry(folder, b) for b in benchmarks) + ".",
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
    parts += warnings_markdown(stages)
    parts += plots_markdown(folder)
    parts += ["See `report/index.md` for distributions and `stats.json` for every number.", ""]
    parts += personal_information(stages) + CITATION
    data = card_data(params, licence_of(terms), size, folder, configs)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(parts)).content


def reported_summary(stages: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The corpus summary the run's last report recorded in its stats, so the card does not count the
    tables again; ``None`` where no report ran before the card."""
    for stats in reversed(list(stages.values())):
        if CORPUS in stats.get("info", {}):
            return stats["info"][CORPUS]
    return None


def plots_markdown(folder: Path) -> list[str]:
    """The report's plots that the folder holds, embedded with their captions."""
    found = [(name, caption) for name, caption in PLOTS if (folder / "report" / name).is_file()]
    if not found:
        return []
    return ["## Plots", ""] + [line for name, caption in found for line in (f"![{caption}](report/{name})", "")]


SCRUBBED = {"email": "e-mail addresses", "phone": "phone numbers", "url": "URLs"}


def personal_information(stages: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What personal information ships, what the run removed, and what a user of the data must do."""
    scrubbed: dict[str, int] = {}
    for stats in stages.values():
        for reason, n in stats.get("changed", {}).items():
            if ":scrub_" in reason:
                kind = SCRUBBED.get(reason.rsplit(":scrub_", 1)[1], reason)
                scrubbed[kind] = scrubbed.get(kind, 0) + n
    done = (
        "The `clean` stage replaced "
        + ", ".join(f"{kind} in {n:,} texts" for kind, n in sorted(scrubbed.items()))
        + " with a space; nothing else in the texts was changed for privacy."
        if scrubbed
        else "No e-mail address, phone number or URL was removed from the texts (the `clean` stage's "
        "`scrub` option was off or found none); nothing else in the texts was changed for privacy."
    )
    return [
        "## Personal information",
        "",
        "This dataset holds personal information. Each source's own user ids ship in the `user_id` "
        "column and in the headers of the pre-training texts, and every user's history is kept in "
        "order, so the rows of one user can be linked together and to the source's public pages. The "
        "texts hold the users' review texts as the sources published them: they can name people, "
        "places, health conditions or other details their authors gave about themselves or others.",
        "",
        done,
        "",
        "If you use this data you must:",
        "",
        "- use it for research on recommendation and language modelling, not to identify, profile or "
        "contact the people whose ids or texts it holds;",
        "- not join it with other data to re-identify users;",
        "- delete a user's rows when the source removes them or the person asks you to, and honour "
        "each source's terms (see above) for their rows;",
        "- not redistribute it without these conditions, and check a model trained on it for "
        "verbatim reproduction of review texts before releasing the model.",
        "",
    ]


CITATION = [
    "## Citation",
    "",
    "The corpus follows RecGPT. If you use it, cite the paper, and the sources listed above:",
    "",
    "```bibtex",
    "@inproceedings{ngo-nguyen-2024-recgpt,",
    '    title = "{R}ec{GPT}: Generative Pre-training for Text-based Recommendation",',
    '    author = "Ngo, Hoang and Nguyen, Dat Quoc",',
    '    booktitle = "Proceedings of the 62nd Annual Meeting of the Association for Computational Linguistics",',
    '    year = "2024",',
    '    publisher = "Association for Computational Linguistics",',
    '    url = "https://arxiv.org/abs/2405.12715",',
    '    eprint = "2405.12715",',
    '    archivePrefix = "arXiv",',
    "}",
    "```",
    "",
]


def warnings_markdown(stages: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The run's warnings (heuristic rules that removed much of a dataset, stages that removed nearly
    all of one, datasets without metadata), one bullet each; nothing where there are none."""
    found = run_warnings(stages)
    if not found:
        return []
    return ["## Warnings", "", *(f"- {w['message']}" for w in found), ""]


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


def source_pairs(tables: Mapping[str, pl.LazyFrame]) -> list[tuple[str, str]]:
    """Every (source, dataset) the run's tables hold, sorted."""
    seen: set[tuple[str, str]] = set()
    for name in ("documents", "instruct", "interactions"):
        if name in tables and {"source", "dataset"} <= set(tables[name].lazy().collect_schema().names()):
            seen.update(tables[name].lazy().select("source", "dataset").unique().collect().iter_rows())
    return sorted(seen)
