"""Connected components of a large sparse graph with array-based union-find.

The forest is one integer array (memory linear in the number of nodes). Each round hooks the root
of every still-unjoined edge's larger end onto the smaller root with one vectorised
``minimum.at``, then compresses all paths by pointer jumping; every parent is at most its node, so
no cycle can form, and each component ends labelled by its smallest node.
"""

from __future__ import annotations

import numpy as np


def _compress(parent: np.ndarray) -> np.ndarray:
    """Point every node straight at its root."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def connected_components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Label of each of ``n`` nodes: the smallest node of its component under edges ``(u, v)``."""
    parent = np.arange(n, dtype=np.int64)
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    while len(u):
        ru, rv = parent[u], parent[v]
        open_ = ru != rv
        u, v, ru, rv = u[open_], v[open_], ru[open_], rv[open_]
        if not len(u):
            break
        np.minimum.at(parent, np.maximum(ru, rv), np.minimum(ru, rv))
        parent = _compress(parent)
    return parent
