"""Exact and near-duplicate removal: normalisation and shingles, datasketch-compatible MinHash,
LSH banding with union-find clustering, and the four scopes of the ``dedup`` stage."""

from recgpt_data.dedup.lsh import Banding, NearDuplicateConfig, cluster_texts, optimal_banding
from recgpt_data.dedup.minhash import MinHasher, to_lean_minhash
from recgpt_data.dedup.scopes import DedupParams

__all__ = [
    "Banding",
    "DedupParams",
    "MinHasher",
    "NearDuplicateConfig",
    "cluster_texts",
    "optimal_banding",
    "to_lean_minhash",
]
