"""RMSE, MAE, HR@k and NDCG@k against values worked out by hand, and their edge cases."""

from __future__ import annotations

import math

import pytest

from recgpt_data.metrics import hit_rate_at_k, mae, ndcg_at_k, rank_by_score, rmse, target_rank


def test_rmse_by_hand():
    # errors 1, -2, 0, 3 -> squares 1 + 4 + 0 + 9 = 14 -> sqrt(14 / 4)
    assert rmse([4, 1, 5, 5], [3, 3, 5, 2]) == pytest.approx(math.sqrt(3.5), abs=1e-15)


def test_mae_by_hand():
    # |1| + |-2| + 0 + |3| = 6 over 4
    assert mae([4, 1, 5, 5], [3, 3, 5, 2]) == 1.5


def test_perfect_predictions_score_zero():
    assert rmse([4.0, 2.0], [4.0, 2.0]) == 0.0
    assert mae([4.0, 2.0], [4.0, 2.0]) == 0.0


def test_hit_rate_by_hand():
    ranked = [["a", "b", "c"], ["x", "y", "z", "t", "u", "v"], ["q"]]
    targets = ["c", "v", "r"]
    # user 1 hits at rank 3, user 2 at rank 6, user 3 misses
    assert hit_rate_at_k(ranked, targets, 5) == pytest.approx(1 / 3)
    assert hit_rate_at_k(ranked, targets, 10) == pytest.approx(2 / 3)
    assert hit_rate_at_k(ranked, targets, 2) == 0.0


def test_ndcg_by_hand():
    ranked = [["a", "b", "c"], ["x", "y", "z", "t", "u", "v"], ["q"]]
    targets = ["c", "v", "r"]
    # rank 3 -> 1/log2(4) = 0.5; rank 6 -> 1/log2(7); miss -> 0
    assert ndcg_at_k(ranked, targets, 5) == pytest.approx(0.5 / 3, abs=1e-15)
    assert ndcg_at_k(ranked, targets, 10) == pytest.approx((0.5 + 1 / math.log2(7)) / 3, abs=1e-15)


def test_first_rank_scores_one():
    assert ndcg_at_k([["t", "a"]], ["t"], 5) == 1.0
    assert hit_rate_at_k([["t", "a"]], ["t"], 1) == 1.0


def test_no_hit_scores_zero():
    assert hit_rate_at_k([["a", "b"], []], ["z", "y"], 10) == 0.0
    assert ndcg_at_k([["a", "b"], []], ["z", "y"], 10) == 0.0


def test_fewer_than_k_predictions_still_count():
    assert hit_rate_at_k([["a", "t"]], ["t"], 10) == 1.0
    assert ndcg_at_k([["a", "t"]], ["t"], 10) == pytest.approx(1 / math.log2(3))


def test_repeated_predictions_do_not_push_the_target_down():
    ranked = ["a", "a", "b", "a", "t"]
    assert target_rank(ranked, "t") == 3
    assert hit_rate_at_k([ranked], ["t"], 3) == 1.0
    assert ndcg_at_k([ranked], ["t"], 3) == 0.5


def test_tied_scores_keep_the_given_order():
    scores = {"a": 0.9, "t": 0.5, "b": 0.5, "c": 0.1}
    assert rank_by_score(scores) == ["a", "t", "b", "c"]
    assert ndcg_at_k([rank_by_score(scores)], ["t"], 5) == pytest.approx(1 / math.log2(3))
    tied_after = {"a": 0.9, "b": 0.5, "t": 0.5}
    assert target_rank(rank_by_score(tied_after), "t") == 3
    assert hit_rate_at_k([rank_by_score(tied_after)], ["t"], 2) == 0.0


def test_mismatched_or_empty_inputs_are_errors():
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        rmse([1, 2], [1])
    with pytest.raises(ValueError, match="no targets"):
        mae([], [])
    with pytest.raises(ValueError, match="k must be at least 1"):
        hit_rate_at_k([["a"]], ["a"], 0)
