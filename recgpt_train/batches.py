"""Which examples an optimizer step takes, and how its rows are dealt to ranks and micro-batches.

An epoch is a permutation of the examples seeded by ``(seed, epoch)``; step ``s`` takes the next
``batch`` of it, so the step number alone fixes the data position and a resumed run continues at the
exact next example. A step's rows are dealt round-robin to the ranks (each reads only its own), and
every rank runs the same number of micro-steps, a rank short of rows running padding rows.
"""

from __future__ import annotations

import math

import numpy as np

from recgpt_train.examples import Rows, padding_row


def epoch_order(n_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: a seeded permutation."""
    return np.random.default_rng([seed, epoch]).permutation(n_examples)


def step_examples(n_examples: int, batch: int, seed: int, step: int) -> np.ndarray:
    """The example indices of optimizer step ``step`` (an epoch's last partial batch is skipped)."""
    steps_per_epoch = n_examples // batch
    epoch, index = divmod(step, steps_per_epoch)
    return epoch_order(n_examples, seed, epoch)[index * batch : (index + 1) * batch]


def epoch_steps(n_examples: int, batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The example indices of every step of one epoch (views of one permutation)."""
    order = epoch_order(n_examples, seed, epoch)
    return [order[i * batch : (i + 1) * batch] for i in range(n_examples // batch)]


def micro_steps(n_rows: int, world: int, micro: int) -> int:
    """Micro-steps every rank runs for a step of ``n_rows`` rows."""
    return max(1, math.ceil(math.ceil(n_rows / world) / micro))


def rank_bins(bins: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This rank's rows of a step: every ``world``-th, from ``rank``."""
    return bins[rank::world]


def micro_batches(rows: Rows, count: int, micro: int, pad_id: int) -> list[Rows]:
    """``count`` micro-batches of at most ``micro`` rows; those past the rows are one padding row each."""
    seq_len = rows[0].shape[1]
    out = []
    for k in range(count):
        part = tuple(a[k * micro : (k + 1) * micro] for a in rows)
        out.append(part if len(part[0]) else padding_row(seq_len, pad_id))
    return out
