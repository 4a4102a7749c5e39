"""End-to-end near-duplicate removal against datatrove's MinHash pipeline, and accuracy against
exact all-pairs Jaccard, side by side in one run.

  python benchmarks/bench_dedup.py --scaled bench-data/reviews_Musical_Instruments_x50_m002.json \
      [--datatrove-python /tmp/dt-venv/bin/python] [--data ../shared/data] [--work bench-data/dedup-work] \
      [--subset 2000x10] [--plot docs/dedup_s_curve.png]

The scaled file comes from ``../shared/tools/scale_reviews.py`` (see docs/benchmarks/dedup.md); its
copies' ids (``<id>~k``) are renamed to valid Amazon ids first (``<user>X<k>``, and a made-up ASIN
per item and copy), since ingest rejects the others.

datatrove runs in its own interpreter (``benchmarks/bench_dedup_datatrove.py``, which imports only
datatrove), so it can live in a virtual environment of its own without touching this project's
pinned packages::

  python3 -m venv /tmp/dt-venv && /tmp/dt-venv/bin/pip install 'datatrove[processing]' spacy orjson

and ``--datatrove-python /tmp/dt-venv/bin/python`` points at it (default: this interpreter, which
works where datatrove is installed beside the project; ``--skip-datatrove`` leaves it out).

1. Speed: the ``dedup`` stage as a run executes it (its prepare step's tasks, then each user
   bucket, here in this process; the buckets' input files are written before the clock starts, as
   an earlier stage would have left them) on every review of the scaled file, beside the
   single-process implementation it replaced (tests/oracle_dedup.py) on the same rows; datatrove's
   four MinHash stages with their defaults on the fixed subset (it is too slow for the whole
   file); ours again on the same subset. Throughput is compared per document, by wall clock and by
   CPU time; the load average is recorded before and after, as the machine may be shared.
2. F1 on the subset (the first ``A`` original reviews in each of the first ``B`` copies) against
   exact Jaccard over our word 5-gram shingles, computed for all pairs (a sparse product: pairs
   sharing no shingle have Jaccard 0). A pair is flagged when both texts land in one cluster.
   Reported overall and for pairs with 0.5 <= J < 1, for ours and datatrove's.
3. Accuracy on the real review samples (no scaling): precision and recall of flagged pairs, the
   flagged fraction per Jaccard bin beside the S-curve of the chosen bands x rows (plotted).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy import sparse

from recgpt_data.dedup.lsh import NearDuplicateConfig, cluster_texts, collision_probability
from recgpt_data.dedup.normalize import normalize, shingle_spans
from recgpt_data.dedup.scopes import DedupParams
from recgpt_data.ingest import ingest
from recgpt_data.schema import empty

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the in-process bucket runner and the single-process oracle
import oracle_dedup
from dedup_buckets import run_stage as run_buckets_written
from dedup_buckets import write_buckets

REAL_FILES = (
    "amazon2018/All_Beauty_5.json",
    "amazon2018/Magazine_Subscriptions_5.json",
    "amazon2014/reviews_Musical_Instruments_5.json.gz",
    "amazon2014/reviews_Digital_Music_5.json.gz",
)


def read_texts(path: Path) -> list[str | None]:
    """Review texts of a JSON-lines file, skipping a truncated last record."""
    opener = gzip.open if path.suffix == ".gz" else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as handle, contextlib.suppress(EOFError):
        for line in handle:
            with contextlib.suppress(ValueError):
                texts.append(json.loads(line).get("reviewText"))
    return texts


def exact_pairs(norm: pl.Series, ngram: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with Jaccard > 0 over the texts' shingle sets, and their Jaccard."""
    spans = shingle_spans(norm, ngram)
    raw = spans.data.tobytes()
    ids: dict[bytes, int] = {}
    cols = np.fromiter(
        (ids.setdefault(raw[s : s + n], len(ids)) for s, n in zip(spans.starts.tolist(), spans.lengths.tolist())),
        dtype=np.int64,
        count=len(spans.starts),
    )
    x = sparse.csr_matrix((np.ones(len(cols), np.float32), (spans.doc, cols)), shape=(len(norm), len(ids)))
    x.data[:] = 1.0
    x.sum_duplicates()
    x.data[:] = 1.0
    sizes = np.asarray(x.sum(axis=1)).ravel()
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    return inter.row.astype(np.int64), inter.col.astype(np.int64), jac


def pair_scores(label: np.ndarray, i: np.ndarray, j: np.ndarray, jac: np.ndarray, threshold: float) -> dict:
    """Precision, recall and F1 of 'same cluster' against 'Jaccard >= threshold', overall and for 0.5 <= J < 1."""
    valid = label >= 0
    _, sizes = np.unique(label[valid], return_counts=True)
    flagged_all = int((sizes * (sizes - 1) // 2).sum())
    same = (label[i] == label[j]) & (label[i] >= 0)
    truth = jac >= threshold - 1e-12

    def prf(tp: int, fp: int, fn: int) -> dict:
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn) if tp + fn else 1.0
        return {
            "precision": round(p, 4),
            "recall": round(r, 4),
            "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }

    tp = int((same & truth).sum())
    band = (jac >= 0.5) & (jac < 1.0 - 1e-12)
    tpb = int((same & truth & band).sum())
    return {
        "overall": prf(tp, flagged_all - tp, int(truth.sum()) - tp),
        "0.5<=J<1": prf(tpb, int((same & ~truth & band).sum()), int((truth & band).sum()) - tpb),
    }


def run_datatrove(texts: list[str | None], work: Path, python: str) -> tuple[np.ndarray, float, float]:
    """datatrove's four MinHash stages with default settings, run by ``python`` (see the module
    docstring): cluster label per text, wall and CPU seconds."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    docs = work.parent / "datatrove-docs.jsonl"
    with open(docs, "w", encoding="utf-8") as handle:
        for k, text in enumerate(texts):
            handle.write(json.dumps({"id": str(k), "text": text or ""}) + "\n")
    script = Path(__file__).with_name("bench_dedup_datatrove.py")
    with open(work.parent / "datatrove.log", "w", encoding="utf-8") as log:  # its progress lines
        subprocess.run([python, str(script), str(docs), str(work)], check=True, stdout=log, stderr=log)
    result = json.loads((work / "result.json").read_text(encoding="utf-8"))
    return np.asarray(result["label"], dtype=np.int64), result["wall_s"], result["cpu_s"]


def valid_ids(scaled: Path, out: Path) -> Path:
    """The scaled file with its copies' ids made valid Amazon ids: ``<user>~k`` becomes ``<user>Xk``
    and each (ASIN, k) a made-up ASIN ``Q`` + 9 digits, one per pair (so a copy's items stay
    distinct from the original's and from each other, as the ``~k`` ids were)."""
    renamed: dict[tuple[str, str], str] = {}
    pattern = re.compile(r'"(reviewerID|asin)": "([^"~]*)~(\d+)"')

    def rename(match: re.Match) -> str:
        field, raw, copy = match.groups()
        if field == "reviewerID":
            return f'"{field}": "{raw}X{copy}"'
        return f'"{field}": "{renamed.setdefault((raw, copy), f"Q{len(renamed):09d}")}"'

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(scaled, encoding="utf-8") as source, open(out, "w", encoding="utf-8") as target:
        for line in source:
            target.write(pattern.sub(rename, line))
    return out


def run_stage(interactions: pl.DataFrame, params: DedupParams, folder: Path, buckets: int) -> tuple[dict, float, float]:
    """The dedup stage on ``interactions`` as a run executes it (its prepare step, then each of
    ``buckets`` user buckets, in this process; the bucket files written before the clock starts):
    its stats, wall seconds and CPU seconds."""
    written = write_buckets(interactions, empty("items"), buckets, folder)
    start, cpu = time.perf_counter(), time.process_time()
    done = run_buckets_written(written, params)
    return done.stats.to_dict(), time.perf_counter() - start, time.process_time() - cpu


def run_single_process(interactions: pl.DataFrame, params: DedupParams) -> tuple[float, float]:
    """The single-process implementation the stage replaced, on the same rows: wall and CPU seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    oracle_dedup.dedup(interactions.lazy(), empty("items").lazy(), params).interactions.lazy().collect()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scaled", type=Path, required=True)
    parser.add_argument("--originals", type=int, default=10261, help="records in the file that was scaled")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "bench-data" / "dedup-work")
    parser.add_argument("--subset", default="2000x10", help="A x B: first A originals in each of the first B copies")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "dedup_s_curve.png")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--datatrove-python", default=sys.executable, help="an interpreter with datatrove installed")
    parser.add_argument("--buckets", type=int, default=4, help="user buckets the stage runs in")
    args = parser.parse_args()
    report: dict = {}
    params = DedupParams(threshold=args.threshold)
    config = NearDuplicateConfig(threshold=args.threshold)

    canonical = args.work / "canonical"
    shutil.rmtree(canonical, ignore_errors=True)
    scaled = valid_ids(args.scaled, args.work / "reviews_scaled.json")
    ingest("amazon2014", [scaled], canonical, dataset="amazon2014/scaled")
    interactions = pl.read_parquet(canonical / "interactions" / "**" / "*.parquet")
    report["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    stats, wall, cpu = run_stage(interactions, params, args.work / "buckets", args.buckets)
    report["ours_full"] = {
        "documents": interactions.height,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "docs_per_s": round(interactions.height / wall),
        "docs_per_cpu_s": round(interactions.height / cpu),
        "stats": stats,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(report["ours_full"], indent=1), flush=True)
    single_wall, single_cpu = run_single_process(interactions, params)
    report["single_process_full"] = {
        "wall_s": round(single_wall, 2),
        "cpu_s": round(single_cpu, 2),
        "buckets_vs_single_process_wall": round(wall / single_wall, 2),
        "buckets_vs_single_process_cpu": round(cpu / single_cpu, 2),
    }
    print(json.dumps(report["single_process_full"], indent=1), flush=True)

    a, b = (int(v) for v in args.subset.split("x"))
    line = pl.col("src_line") - 1
    subset = interactions.filter((line % args.originals < a) & (line // args.originals < b)).sort("src_line")
    texts = subset["review_text"].to_list()
    norm = normalize(subset["review_text"]).fill_null("")
    i, j, jac = exact_pairs(norm, config.ngram)
    _, wall_sub, cpu_sub = run_stage(subset, params, args.work / "subset-buckets", args.buckets)
    labels = cluster_texts(norm, config).label
    report["subset"] = {
        "documents": subset.height,
        "pairs_with_shared_shingle": len(jac),
        "pairs_j_ge_threshold": int((jac >= args.threshold).sum()),
        "pairs_0.5<=J<1": int(((jac >= 0.5) & (jac < 1)).sum()),
    }
    report["ours_subset"] = {
        "wall_s": round(wall_sub, 2),
        "cpu_s": round(cpu_sub, 2),
        "docs_per_s": round(subset.height / wall_sub),
        "docs_per_cpu_s": round(subset.height / cpu_sub),
        "scores": pair_scores(labels, i, j, jac, args.threshold),
    }
    print(json.dumps({k: report[k] for k in ("subset", "ours_subset")}, indent=1), flush=True)
    if not args.skip_datatrove:
        dt_label, dt_seconds, dt_cpu = run_datatrove(texts, args.work / "datatrove", args.datatrove_python)
        report["datatrove_subset"] = {
            "wall_s": round(dt_seconds, 2),
            "cpu_s": round(dt_cpu, 2),
            "docs_per_s": round(subset.height / dt_seconds, 1),
            "docs_per_cpu_s": round(subset.height / dt_cpu, 1),
            "scores": pair_scores(dt_label, i, j, jac, args.threshold),
        }
        full, dt = report["ours_full"], report["datatrove_subset"]
        report["speedup"] = {
            "per_document_wall": round(full["documents"] / full["wall_s"] / dt["docs_per_s"], 1),
            "per_document_cpu": round(full["documents"] / full["cpu_s"] / dt["docs_per_cpu_s"], 1),
            "same_subset_wall": round(dt_seconds / wall_sub, 1),
            "same_subset_cpu": round(dt_cpu / cpu_sub, 1),
        }
        print(json.dumps({k: report[k] for k in ("datatrove_subset", "speedup")}, indent=1), flush=True)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]

    real = [t for f in REAL_FILES for t in read_texts(args.data / f)]
    real_norm = normalize(pl.Series(real, dtype=pl.String)).fill_null("")
    ri, rj, rjac = exact_pairs(real_norm, config.ngram)
    clusters = cluster_texts(real_norm, config)
    banding = clusters.banding
    same = (clusters.label[ri] == clusters.label[rj]) & (clusters.label[ri] >= 0)
    edges = np.linspace(0.0, 1.0, 21)
    bins = np.clip(np.digitize(rjac, edges) - 1, 0, 19)
    per_bin = [
        {
            "j_from": round(edges[k], 2),
            "pairs": int((bins == k).sum()),
            "flagged": round(float(same[bins == k].mean()), 4) if (bins == k).any() else None,
        }
        for k in range(20)
    ]
    report["real"] = {
        "documents": len(real),
        "banding": banding.describe(),
        "scores": pair_scores(clusters.label, ri, rj, rjac, args.threshold),
        "per_bin": per_bin,
    }
    print(json.dumps(report["real"], indent=1), flush=True)
    plot(banding.bands, banding.rows, args.threshold, per_bin, args.plot)
    (args.work / "report.json").write_text(json.dumps(report, indent=1) + "\n")


def plot(bands: int, rows: int, threshold: float, per_bin: list[dict], path: Path) -> None:
    """The S-curve of bands x rows with the measured flagged fraction per Jaccard bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.linspace(0, 1, 501)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(s, collision_probability(s, bands, rows), label=f"P(candidate) = 1-(1-s^{rows})^{bands}")
    pts = [(p["j_from"] + 0.025, p["flagged"]) for p in per_bin if p["flagged"] is not None and p["pairs"] >= 5]
    if pts:
        ax.plot(*zip(*pts), "o", label="flagged fraction, real review pairs (bin centre)")
    ax.axvline(threshold, color="grey", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("Jaccard similarity of the shingle sets")
    ax.set_ylabel("probability of being flagged")
    ax.set_title(f"MinHash LSH: {bands} bands x {rows} rows, 128 permutations")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    main()
