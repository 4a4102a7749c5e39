"""Content digests of a built folder, and the reference digests of the demo and samples builds.

A refactor must leave what the corpus says unchanged. These digests cover every published file by
its content: each parquet table by its rows (so a newer parquet writer that lays the same rows out in
other bytes does not count as a change), the report's plots left out (their pixels follow the
plotting library's version), the card and the manifest without the lines that only give file sizes
or file hashes. ``tests/data/output_digests.json`` holds the digests of the commit it names; a
commit that changes the corpus on purpose regenerates it and says why:

    python tests/output_digests.py --write   # builds both specs into a temporary folder
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

REFERENCE = Path(__file__).resolve().parent / "data" / "output_digests.json"
REPO = Path(__file__).resolve().parent.parent
SIZE_LINE = re.compile(rb"^\s*(num_bytes|download_size|dataset_size):.*$", re.MULTILINE)


def _rows_digest(path: Path) -> str:
    table = pq.read_table(path)
    digest = hashlib.sha256(json.dumps(table.schema.names).encode())
    for row in table.to_pylist():
        digest.update(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False).encode())
    return digest.hexdigest()


def _without_file_hashes(value: object) -> object:
    """The manifest less each shard's file hash (a function of the parquet writer's bytes)."""
    if isinstance(value, dict):
        return {k: _without_file_hashes(v) for k, v in value.items() if not (k == "sha256" and "path" in value)}
    if isinstance(value, list):
        return [_without_file_hashes(v) for v in value]
    return value


def content_digests(out: Path) -> dict[str, str]:
    """Digest of every published file of ``out`` by content (see the module docstring)."""
    digests = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if not path.is_file() or relative.parts[0].startswith(".") or path.name == "stats.json":
            continue
        if path.suffix == ".png":
            continue
        if path.suffix == ".parquet":
            digests[relative.as_posix()] = _rows_digest(path)
            continue
        data = path.read_bytes()
        if path.name == "README.md" and relative.parent == Path("."):
            data = SIZE_LINE.sub(b"", data)
        elif path.name == "manifest.json" and relative.parent == Path("."):
            data = json.dumps(_without_file_hashes(json.loads(data)), sort_keys=True).encode()
        digests[relative.as_posix()] = hashlib.sha256(data).hexdigest()
    return digests


def _build(spec: str, out: Path, *args: str) -> None:
    cli = Path(sys.executable).parent / "recgpt-data"
    subprocess.run([str(cli), "run", str(REPO / "pipelines" / spec), "--out", str(out), *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rebuild both specs and rewrite the reference")
    parser.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    if not args.write:
        parser.print_help()
        return
    shared = args.shared
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        _build("demo.toml", Path(tmp) / "demo")
        _build("samples.toml", Path(tmp) / "samples", "--var", f"shared={shared}")
        reference = {
            "built_at": commit.strip(),
            "demo": content_digests(Path(tmp) / "demo"),
            "samples": content_digests(Path(tmp) / "samples"),
        }
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
