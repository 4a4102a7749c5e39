"""datatrove's four MinHash stages on one JSON-lines file, for ``bench_dedup.py``: a cluster label per
document, wall and CPU seconds. It imports only datatrove and the standard library, so it runs
under whichever interpreter has datatrove installed (a separate virtual environment keeps
datatrove's pinned packages out of this project's):

  python3 -m venv /tmp/dt-venv && /tmp/dt-venv/bin/pip install 'datatrove[processing]'
  /tmp/dt-venv/bin/python benchmarks/bench_dedup_datatrove.py DOCS.jsonl WORK

``DOCS.jsonl`` holds one ``{"id": "<k>", "text": ...}`` per line, ``k`` counting from 0. Writes
``WORK/result.json``: ``label`` (the document's ``minhash_cluster_id``, or ``n + k`` for a document
in no cluster), ``wall_s`` and ``cpu_s`` (this process and its finished children, from after the
imports to the last stage's end; the input is already on disk, as it is for ours).
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (datatrove may fork workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(docs: Path, work: Path) -> dict:
    """The four stages with ``MinhashConfig()`` defaults, each on a ``LocalPipelineExecutor`` with
    one worker (the buckets stage with one task per bucket)."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "input").mkdir(parents=True)
    shutil.copy(docs, work / "input" / "docs.jsonl")
    with open(docs, encoding="utf-8") as handle:
        n = sum(1 for _ in handle)
    config = MinhashConfig()
    stages = [
        [JsonlReader(str(work / "input")), MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
        [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config)],
        [
            MinhashDedupCluster(
                input_folder=str(work / "buckets"),
                output_folder=str(work / "remove"),
                config=config,
                save_cluster_id=True,
            )
        ],
        [
            JsonlReader(str(work / "input")),
            MinhashDedupFilter(
                input_folder=str(work / "remove"),
                load_cluster_ids=True,
                exclusion_writer=JsonlWriter(str(work / "removed"), compression=None),
            ),
            JsonlWriter(str(work / "kept"), compression=None),
        ],
    ]
    tasks = [1, config.num_buckets, 1, 1]
    start, cpu = time.perf_counter(), cpu_seconds()
    for k, (pipeline, count) in enumerate(zip(stages, tasks)):
        LocalPipelineExecutor(pipeline=pipeline, tasks=count, workers=1, logging_dir=str(work / f"logs{k}")).run()
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    label = [n + k for k in range(n)]
    for folder in ("kept", "removed"):
        for path in sorted((work / folder).glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                doc = json.loads(line)
                cluster = doc.get("metadata", {}).get("minhash_cluster_id", -1)
                if cluster != -1:
                    label[int(doc["id"])] = cluster
    return {"label": label, "wall_s": wall, "cpu_s": cpu, "config": repr(config)}


if __name__ == "__main__":
    docs_, work_ = Path(sys.argv[1]), Path(sys.argv[2])
    result = run(docs_, work_)
    (work_ / "result.json").write_text(json.dumps(result) + "\n", encoding="utf-8")
