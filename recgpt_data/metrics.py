"""The benchmark metrics RecGPT reports: RMSE and MAE for rating prediction, HR@k and NDCG@k for
next-item prediction with one relevant item per user (P5's protocol).

A ranked list counts each item once, at its first position (a repeated prediction does not push the
target down), and may hold fewer than ``k`` items. With one relevant item, NDCG@k is
``1 / log2(rank + 1)`` for the target's 1-based rank within the top ``k``, and 0 where it is absent.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence


def rmse(predictions: Sequence[float], targets: Sequence[float]) -> float:
    """Root mean squared error of ``predictions`` against ``targets``."""
    _check_pairs(predictions, targets)
    squares = math.fsum((float(p) - float(t)) ** 2 for p, t in zip(predictions, targets, strict=True))
    return math.sqrt(squares / len(targets))


def mae(predictions: Sequence[float], targets: Sequence[float]) -> float:
    """Mean absolute error of ``predictions`` against ``targets``."""
    _check_pairs(predictions, targets)
    return math.fsum(abs(float(p) - float(t)) for p, t in zip(predictions, targets, strict=True)) / len(targets)


def target_rank(ranked: Sequence[Hashable], target: Hashable) -> int | None:
    """The 1-based rank of ``target`` in ``ranked`` once repeats are dropped, or ``None``."""
    seen: set[Hashable] = set()
    for item in ranked:
        if item in seen:
            continue
        seen.add(item)
        if item == target:
            return len(seen)
    return None


def rank_by_score(scores: Mapping[Hashable, float]) -> list[Hashable]:
    """Items by descending score; tied items keep the order in which ``scores`` holds them."""
    return [item for item, _ in sorted(scores.items(), key=lambda pair: -pair[1])]


def hit_rate_at_k(ranked_lists: Sequence[Sequence[Hashable]], targets: Sequence[Hashable], k: int) -> float:
    """HR@k: the share of users whose target is among their top ``k`` predictions."""
    _check_ranking(ranked_lists, targets, k)
    hits = 0
    for ranked, target in zip(ranked_lists, targets, strict=True):
        rank = target_rank(ranked, target)
        hits += rank is not None and rank <= k
    return hits / len(targets)


def ndcg_at_k(ranked_lists: Sequence[Sequence[Hashable]], targets: Sequence[Hashable], k: int) -> float:
    """NDCG@k with one relevant item: the mean of ``1 / log2(rank + 1)`` over users (0 on a miss)."""
    _check_ranking(ranked_lists, targets, k)
    total = 0.0
    for ranked, target in zip(ranked_lists, targets, strict=True):
        rank = target_rank(ranked, target)
        if rank is not None and rank <= k:
            total += 1.0 / math.log2(rank + 1)
    return total / len(targets)


def _check_pairs(predictions: Sequence[float], targets: Sequence[float]) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    if not targets:
        raise ValueError("no targets to score")


def _check_ranking(ranked_lists: Sequence[Sequence[Hashable]], targets: Sequence[Hashable], k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    _check_pairs(ranked_lists, targets)  # type: ignore[arg-type]
