"""Exact and near-duplicate removal in four scopes, each with its own action (the library of the
``dedup`` stage).

Review texts are clustered once (exact duplicates by equal normalised text, near duplicates by
MinHash LSH, see :mod:`recgpt_data.dedup.lsh`) and every interaction gets ``cluster_id`` (the
position, in CHRONOLOGICAL order of its dataset's rows, of the cluster's earliest member; null for
an empty text) and ``cluster_size``. Then, in this order:

(a) variants: one user's copies of one review (equal normalised text, equal rating, equal
    timestamp) on items that are variants of one product (the same item id, which is the parent
    product where the source ids items by their parent, such as Amazon 2023's ``parent_asin``; or
    equal normalised titles; optionally near-equal titles) are one purchase listed under its
    variants; the keep rule's choice stays, the others are dropped (``variant_duplicate``). The same
    short text on different products ("This was a gift.") is never merged here.
(c) users: users whose histories (items with ratings, and review-text clusters) near-duplicate
    another's are duplicate or bot accounts; the keep rule's user stays (``duplicate_user``).
(d) items: items of one dataset whose title, brand and description near-duplicate each other are
    one item; ``mark`` (default) adds ``cluster_id`` / ``cluster_size`` to the items table;
    ``remap`` keeps the item with the most interactions, drops the others (``duplicate_item``) and
    points their interactions at it (``item_id_remapped``).
(b) texts: the remaining copies of a review text, across users (templates, spam) or within one
    user, lose their text (``review_text_duplicate``) and keep the interaction; ``drop`` drops them.

The keep rule orders candidates: ``earliest`` (CHRONOLOGICAL), ``most_helpful`` (helpful votes,
then CHRONOLOGICAL) or ``longest`` (review length, then CHRONOLOGICAL).

The stage runs in user buckets: the functions here are what one bucket or one dataset's items
need (:func:`bucket_rows`, :func:`text_docs`, :func:`history_docs`, :func:`dedup_items`,
:func:`apply_marks`); :mod:`recgpt_data.dedup.prepare` joins them up across buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from recgpt_data.dedup.lsh import NearDuplicateConfig, cluster_texts
from recgpt_data.dedup.normalize import SEPARATORS, normalize_expr
from recgpt_data.dedup.spread import string_hashes
from recgpt_data.dedup.unionfind import connected_components
from recgpt_data.errors import UsageError
from recgpt_data.stage import Drops, Params

KeepRule = Literal["earliest", "most_helpful", "longest"]
VARIANT_KEYS = ["dataset", "user_id", "_norm", "rating", "timestamp"]  # one review posted once


class DedupParams(Params):
    """What deduplication does, scope by scope (the ``dedup`` stage's parameters)."""

    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard threshold for near-duplicate review texts")
    num_perm: int = Field(128, ge=2)
    ngram: int = Field(5, ge=1, description="words per shingle")
    seed: int = 1
    false_positive_weight: float = Field(0.5, ge=0.0)
    false_negative_weight: float = Field(0.5, ge=0.0)
    verify: bool = Field(True, description="keep an LSH candidate only if its signatures agree >= threshold")
    keep: KeepRule = "earliest"
    variants: bool = True
    variant_title_similarity: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="opt-in: items whose normalised titles share at least this Jaccard of their words are "
        "variants too (default: equal normalised titles only)",
    )
    text_action: Literal["blank", "drop", "keep"] = "blank"
    users: bool = True
    user_threshold: float = Field(0.8, gt=0.0, lt=1.0)
    user_min_interactions: int = Field(5, ge=1, description="shorter histories are never called duplicates")
    items: Literal["remap", "mark", "off"] = "mark"
    item_threshold: float = Field(0.8, gt=0.0, lt=1.0)
    batch_size: int = Field(16384, ge=1, description="texts per signature batch")
    threads: int = Field(2, ge=1, description="signature batches computed at once")

    def config(self, threshold: float, ngram: int) -> NearDuplicateConfig:
        """The clustering configuration for one scope."""
        return NearDuplicateConfig(
            threshold=threshold,
            num_perm=self.num_perm,
            ngram=ngram,
            seed=self.seed,
            false_positive_weight=self.false_positive_weight,
            false_negative_weight=self.false_negative_weight,
            verify=self.verify,
            batch_size=self.batch_size,
            threads=self.threads,
        )


def _loser(keys: list[str]) -> pl.Expr:
    """True for every row of a group that is not the group's best-ranked row."""
    return pl.col("_rank") != pl.col("_rank").min().over(keys)


def title_key(column: str) -> pl.Expr:
    """A title as variant detection compares it: lowercase, runs of punctuation, symbols and
    whitespace as one space, ends stripped, empty as null. Digits are kept: a size or a model number
    can be all that tells two products apart."""
    key = pl.col(column).str.to_lowercase().str.replace_all(SEPARATORS, " ").str.strip_chars(" ")
    return pl.when(key.str.len_chars() > 0).then(key)


TITLE, ITEM = "title\x1f", "item\x1f"  # prefixes of the two kinds of product key


def _with_products(frame: pl.DataFrame, items: pl.DataFrame, similarity: float | None) -> pl.DataFrame:
    """``frame`` with ``_product``: the product each row's item is a variant of, as a key; items
    with equal normalised titles share it, an item without a title has its own id as its product.
    With ``similarity``, near-equal titles are merged among the items of one review (see
    :func:`_merge_near_titles`)."""
    titles = (
        items.select("dataset", "item_id", title_key("title").alias("_title"))
        .drop_nulls("_title")
        .unique(["dataset", "item_id"], keep="first", maintain_order=True)
    )
    product = pl.when(pl.col("_title").is_not_null()).then(TITLE + pl.col("_title")).otherwise(ITEM + pl.col("item_id"))
    frame = frame.join(titles, on=["dataset", "item_id"], how="left", maintain_order="left")
    frame = frame.with_columns(product.alias("_product")).drop("_title")
    return frame if similarity is None else _merge_near_titles(frame, similarity)


def _merge_near_titles(frame: pl.DataFrame, similarity: float) -> pl.DataFrame:
    """Within each review posted on several products (rows sharing :data:`VARIANT_KEYS`), give one
    product key to the products whose titles' word sets have Jaccard >= ``similarity``, linked
    transitively; products without a title are never merged this way."""
    posted = pl.col("cluster_id").is_not_null() & pl.col("timestamp").is_not_null()
    candidates = frame.with_row_index("_row").filter(posted & (pl.col("_product").n_unique().over(VARIANT_KEYS) > 1))
    rows: list[int] = []
    merged: list[str] = []
    groups = candidates.group_by(VARIANT_KEYS, maintain_order=True).agg("_row", "_product")
    for group_rows, group_products in groups.select("_row", "_product").iter_rows():
        products = sorted(set(group_products))
        words = [set(p[len(TITLE) :].split(" ")) if p.startswith(TITLE) else None for p in products]
        pairs = [
            (i, j)
            for i in range(len(products))
            for j in range(i + 1, len(products))
            if words[i] is not None
            and words[j] is not None
            and len(words[i] & words[j]) >= similarity * len(words[i] | words[j])
        ]
        labels = connected_components(len(products), np.array([i for i, _ in pairs]), np.array([j for _, j in pairs]))
        representative = {p: products[labels[k]] for k, p in enumerate(products)}
        rows += group_rows
        merged += [representative[p] for p in group_products]
    column = frame["_product"].scatter(rows, merged) if rows else frame["_product"]
    return frame.with_columns(column)


def _token(kind: str, value: pl.Expr) -> pl.Expr:
    """A history token unique to (kind, value). The dataset is not in it: histories are compared
    within one dataset only, and a token holding the dataset's name would make the MinHash values,
    so the users found duplicate, depend on what the dataset is called."""
    return pl.concat_str([pl.lit(f"{kind}\x1f"), value.cast(pl.String).fill_null("")])


SHIFT = 40  # a keep-rule score is -primary * 2**SHIFT + chronological position
MAX_PRIMARY = 1 << 22  # helpful votes or review characters a score can hold


def keep_score(rule: KeepRule) -> pl.Expr:
    """Each row's keep-rule score from its dataset-wide chronological position ``_pos`` (the
    smallest score is kept first): the position for ``earliest``; more helpful votes or a longer
    review first, then the position, for the others."""
    if rule == "earliest":
        return pl.col("_pos")
    primary = pl.col("helpful_votes") if rule == "most_helpful" else pl.col("review_text").str.len_chars()
    return -primary.cast(pl.Int64).fill_null(0) * (1 << SHIFT) + pl.col("_pos")


def check_score_range(frame: pl.DataFrame, rule: KeepRule) -> None:
    """Refuse positions or keep-rule values too large for :func:`keep_score`'s one integer."""
    if frame.height and int(frame["_pos"].max()) >= 1 << SHIFT:
        raise UsageError(f"dedup: a dataset of more than 2**{SHIFT} interactions")
    if rule != "earliest":
        primary = frame["helpful_votes"] if rule == "most_helpful" else frame["review_text"].str.len_chars()
        if (primary.cast(pl.Int64).abs().max() or 0) >= MAX_PRIMARY:
            raise UsageError(f"dedup: keep rule {rule!r} meets a value of {MAX_PRIMARY} or more")


def bucket_rows(frame: pl.DataFrame, items: pl.DataFrame, params: DedupParams) -> pl.DataFrame:
    """One bucket's interactions (with ``_bucket_row`` and their dataset-wide chronological position
    ``_pos``) as the later scopes need them: normalised text ``_norm`` (null where empty), keep
    score ``_rank`` and ``_variant``, true for scope (a)'s copies (decided within one user, so
    within a bucket)."""
    check_score_range(frame, params.keep)
    # only texts are normalised: string kernels also walk the bytes a parquet reader leaves under nulls
    has_text = pl.col("review_text").is_not_null()
    frame = (
        pl.concat(
            [
                frame.filter(has_text).with_columns(normalize_expr("review_text").alias("_norm")),
                frame.filter(~has_text).with_columns(pl.lit(None, pl.String).alias("_norm")),
            ]
        )
        .sort("dataset", "_pos")
        .with_columns(
            pl.when(pl.col("_norm").str.len_bytes() > 0).then(pl.col("_norm")).alias("_norm"),
            keep_score(params.keep).alias("_rank"),
        )
    )
    if not params.variants:
        return frame.with_columns(pl.lit(False).alias("_variant"))
    text_mark = pl.when(pl.col("_norm").is_not_null()).then(0).alias("cluster_id")  # all the variant rules read of it
    frame = _with_products(frame.with_columns(text_mark), items, params.variant_title_similarity)
    posted = pl.col("cluster_id").is_not_null() & pl.col("timestamp").is_not_null()
    variant = posted & _loser([*VARIANT_KEYS, "_product"])
    return frame.with_columns(variant.alias("_variant")).drop("_product", "cluster_id")


def text_docs(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A bucket's distinct non-empty texts as documents for :mod:`recgpt_data.dedup.spread`
    (first = earliest position, count = rows), and its rows with ``_tid``, their text's member id."""
    texts = (
        rows.filter(pl.col("_norm").is_not_null())
        .group_by("dataset", "_norm", maintain_order=True)
        .agg(pl.col("_pos").min().alias("first"), pl.len().alias("count"))
        .with_row_index("member")
    )
    rows = rows.join(
        texts.select("dataset", "_norm", pl.col("member").cast(pl.Int64).alias("_tid")),
        on=["dataset", "_norm"],
        how="left",
        maintain_order="left",
    )
    docs = texts.select("dataset", pl.col("_norm").alias("text"), "first", "count", pl.lit(0).alias("best"), "member")
    return docs, rows


def history_docs(rows: pl.DataFrame, params: DedupParams) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Scope (c)'s documents for one bucket's rows left after scope (a) (with their ``cluster_id``):
    each user of at least ``user_min_interactions`` rows as the sorted set of hashed tokens of its
    history (item with rating, review-text cluster), first = its earliest position, best = its
    best keep score; and the users by member id."""
    item = _token(
        "i",
        pl.concat_str([pl.col("item_id"), pl.col("rating").cast(pl.String).fill_null("")], separator="\x1f"),
    )
    text = _token("c", pl.col("cluster_id"))
    keys = ["dataset", "user_id"]
    users = (
        rows.group_by(keys, maintain_order=True)
        .agg(pl.len().alias("n"), pl.col("_pos").min().alias("first"), pl.col("_rank").min().alias("best"))
        .filter(pl.col("n") >= params.user_min_interactions)
        .with_row_index("member")
        .with_columns(pl.col("member").cast(pl.Int64))
    )
    mine = rows.join(users.select(*keys, "member"), on=keys, how="inner", maintain_order="left")
    tokens = pl.concat(
        [
            mine.select("member", item.alias("tok")),
            mine.filter(pl.col("cluster_id").is_not_null()).select("member", text.alias("tok")),
        ]
    )
    histories = (
        tokens.with_columns(pl.Series("tok", string_hashes(tokens["tok"]), dtype=pl.UInt64).cast(pl.String))
        .group_by("member")
        .agg(pl.col("tok").unique().sort().str.join(" ").alias("text"))
    )
    docs = users.join(histories, on="member", how="left").select(
        "dataset", "text", "first", pl.lit(1).alias("count"), "best", "member"
    )
    return docs, users.select("member", *keys, "best")


def item_text() -> pl.Expr:
    """An item's text as scope (d) compares it: title, brand and description, normalised."""
    text = pl.concat_str(
        [pl.col("title").fill_null(""), pl.col("brand").fill_null(""), pl.col("description").fill_null("")],
        separator=" ",
    )
    return normalize_expr(text)


@dataclass
class ItemDedup:
    """Scope (d) over one dataset's items: the items kept (with ``cluster_id`` and
    ``cluster_size``), the duplicates dropped (remap), each dropped item id's kept item
    (``dataset``, ``item_id``, ``_kept``) and how many items are in a cluster of two or more."""

    items: pl.DataFrame
    lost: pl.DataFrame
    remap: pl.DataFrame
    clustered: int


def dedup_items(items: pl.DataFrame, uses: pl.DataFrame, params: DedupParams) -> ItemDedup:
    """Scope (d) over one dataset's items in table order: near-identical items clustered, then only
    marked, or (remap) the item with the most interactions (``uses``: ``dataset``, ``item_id``,
    ``_uses`` after scopes a and c) kept, ties to the first."""
    items = items.with_row_index("_irow").with_columns(item_text().alias("_inorm"))
    label = cluster_texts(items["_inorm"], params.config(params.item_threshold, params.ngram)).label
    items = items.with_columns(pl.Series("_ilabel", label, dtype=pl.Int64)).with_columns(
        pl.when(pl.col("_ilabel") >= 0).then(pl.col("_ilabel")).alias("cluster_id"),
        pl.when(pl.col("_ilabel") >= 0).then(pl.len().over("_ilabel")).cast(pl.Int64).alias("cluster_size"),
    )
    clustered = int(items["cluster_size"].fill_null(1).gt(1).sum())
    work = ["_irow", "_inorm", "_ilabel"]
    remap = pl.DataFrame(schema={"dataset": pl.String, "item_id": pl.String, "_kept": pl.String})
    if params.items == "mark":
        return ItemDedup(items.drop(work), items.clear().drop(work), remap, clustered)
    items = items.join(uses, on=["dataset", "item_id"], how="left", maintain_order="left").with_columns(
        pl.col("_uses").fill_null(0)
    )
    items = (
        items.sort(["_ilabel", "_uses", "_irow"], descending=[False, True, False])
        .with_columns(pl.int_range(pl.len()).over("_ilabel").alias("_iorder") + 1)
        .sort("_irow")
    )
    loser = (pl.col("_ilabel") >= 0) & (pl.col("_iorder") != 1)
    winners = items.filter(pl.col("_iorder") == 1)
    remap = (
        items.filter(loser)
        .join(winners.select("_ilabel", pl.col("item_id").alias("_kept")), on="_ilabel", how="left")
        .join(winners.select("dataset", "item_id"), on=["dataset", "item_id"], how="anti", maintain_order="left")
        .unique(subset=["dataset", "item_id"], keep="first", maintain_order=True)
        .select("dataset", "item_id", "_kept")
    )
    work += ["_uses", "_iorder"]
    return ItemDedup(items.filter(~loser).drop(work), items.filter(loser).drop(work), remap, clustered)


COUNTERS = (
    "candidate_edges",
    "verified_edges",
    "empty_texts",
    "exact_duplicate_texts",
    "texts_in_duplicate_clusters",
    "duplicate_users",
    "items_in_duplicate_clusters",
)  # the numbers of ``info``, summed over datasets


@dataclass
class Deduped:
    """One bucket's deduplicated interactions, what was dropped, blanked and changed (by reason,
    with the rows), and each dataset's rows and changes."""

    interactions: pl.DataFrame
    drops: Drops
    by_dataset: dict[str, dict[str, Any]]


def apply_marks(frame: pl.DataFrame, marks: pl.DataFrame, remap: pl.DataFrame, params: DedupParams) -> Deduped:
    """Apply the prepare step's decisions to one bucket's interactions (``_bucket_row`` numbers them,
    ``marks`` holds per ``_bucket_row`` its ``cluster_id``, ``cluster_size`` and whether it is a variant
    copy, a duplicate user's or a text copy; ``remap`` maps duplicate items to kept ones), in the
    scopes' order (a), (c), (d), (b)."""
    drops = Drops()
    frame = frame.drop([c for c in ("cluster_id", "cluster_size") if c in frame.columns])
    frame = frame.join(marks, on="_bucket_row", how="left", maintain_order="left")
    flags = ["_bucket_row", "_variant", "_user", "_copy"]
    by_dataset = {name: {"rows": n} for name, n in frame.group_by("dataset").len().sort("dataset").iter_rows()}
    if params.variants:
        drops.add("interactions", frame.filter("_variant").drop(flags), "variant_duplicate")
        frame = frame.filter(~pl.col("_variant"))
    if params.users:
        gone = frame.filter("_user")
        if gone.height:
            drops.add("interactions", gone.drop(flags), "duplicate_user")
        frame = frame.filter(~pl.col("_user"))
    changed = {}
    if params.items == "remap":
        frame = frame.join(remap, on=["dataset", "item_id"], how="left", maintain_order="left")
        changed["item_id_remapped"] = pl.col("_kept").is_not_null()
        drops.change("item_id_remapped", int(frame["_kept"].is_not_null().sum()))
    if params.text_action == "blank":
        changed["review_text_duplicate"] = pl.col("_copy")
    counts = {
        row["dataset"]: row
        for row in frame.group_by("dataset").agg(*[m.sum().alias(r) for r, m in changed.items()]).iter_rows(named=True)
    }
    for name, entry in by_dataset.items():
        entry["changed"] = {reason: int(counts.get(name, {}).get(reason, 0)) for reason in changed}
    if params.items == "remap":
        frame = frame.with_columns(pl.coalesce("_kept", "item_id").alias("item_id")).drop("_kept")
    if params.text_action == "drop":
        drops.add("interactions", frame.filter("_copy").drop(flags), "duplicate_text")
        frame = frame.filter(~pl.col("_copy"))
    elif params.text_action == "blank":
        drops.blank("interactions", frame.filter("_copy"), "review_text", "review_text_duplicate")
        frame = frame.with_columns(pl.when("_copy").then(None).otherwise(pl.col("review_text")).alias("review_text"))
    return Deduped(frame.drop(flags), drops, by_dataset)
