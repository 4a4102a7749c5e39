"""Stage fingerprints: what a stage's output is a function of, hashed.

A fingerprint covers the stage's name, its declared code version and the sha256 of the source file
that defines it and of the package modules that file imports, its parameters as canonical JSON, the seed,
its partition count, the fingerprints of the stages it reads from, and a manifest of its input
files: the upstream parquet files (path, size, sha256) and, for edge stages such as ``ingest``,
every raw file a parameter declared a raw path (:data:`recgpt_data.stage.RawPath`) names, and the
spec-wide settings the stage declares it uses (the tokenizer file): size and sha256 of the content;
modification times never enter, so a copied or touched input does not invalidate anything. A raw
object in an object store is recorded by what its store says of it in one HEAD request, its size,
ETag and last-modified time (:func:`recgpt_data.io.storage.fingerprint`), never by reading it: these
change whenever the object does, and a new upload of the same bytes counts as a change.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import json
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from recgpt_data.io import storage
from recgpt_data.io.parquet import write_text
from recgpt_data.io.storage import sha256 as file_sha256
from recgpt_data.pipeline.spec import DEMO_DIR, resolve_path
from recgpt_data.stage import RawPathField


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any) -> str:
    """sha256 of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def imported_modules(path: Path, package: str) -> set[str]:
    """The modules of ``package`` that the source file at ``path`` imports (``import package.x``,
    ``from package.x import y``, and ``y`` itself where it is a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == package:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def module_file(name: str) -> Path | None:
    """The source file of module ``name``, or ``None`` where it is not a module with one."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


@functools.cache
def source_sha256(fn: Callable[..., object]) -> str:
    """sha256 of the source file that defines ``fn`` and of every module of its package that it
    imports, transitively: an edit to a stage's module or to a helper it uses (a template, the
    tokenizer wrapper) changes its fingerprint even where its declared ``version`` was not bumped
    ("" where there is no file)."""
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        return ""
    if not path or not Path(path).is_file():
        return ""
    package = (getattr(fn, "__module__", "") or "").split(".")[0]
    files = {Path(path).resolve()}
    pending = [Path(path)]
    while pending:
        for name in imported_modules(pending.pop(), package):
            found = module_file(name)
            if found is not None and found.resolve() not in files:
                files.add(found.resolve())
                pending.append(found)
    h = hashlib.sha256()
    for file in sorted(files):
        h.update(file_sha256(file).encode("ascii"))
    return h.hexdigest()


@dataclass(frozen=True)
class FileRecord:
    """One file in a manifest: its path (relative to the folder that holds it), size and sha256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HashCache:
    """Remembers raw files' sha256 by (path, size, mtime) so that unchanged inputs of many GB are
    not read again on every run; the recorded hash itself never depends on the mtime."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list] = {}
        if path.is_file():
            try:
                self.entries = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                self.entries = {}
        self.dirty = False

    def sha256(self, file: Path) -> str:
        stat = file.stat()
        key = str(file.resolve())
        hit = self.entries.get(key)
        if hit and hit[0] == stat.st_size and hit[1] == stat.st_mtime_ns:
            return hit[2]
        sha = file_sha256(file)
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, sha]
        self.dirty = True
        return sha

    def save(self) -> None:
        if self.dirty:
            write_text(json.dumps(self.entries, sort_keys=True) + "\n", self.path)
            self.dirty = False


def declares_raw_path(annotation: Any) -> bool:
    """Whether a parameter's type holds :data:`recgpt_data.stage.RawPath` (``RawPath``,
    ``list[RawPath]``, ``RawPath | None``)."""
    return any(isinstance(arg, RawPathField) or declares_raw_path(arg) for arg in typing.get_args(annotation))


def strings(value: Any) -> Iterable[str]:
    """Every string inside a parameter value (nested lists included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings(v)


def models(value: Any) -> Iterable[BaseModel]:
    """The parameter models inside a parameter value (a model, or a list or mapping of them)."""
    if isinstance(value, BaseModel):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from models(v)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from models(v)


def declared_paths(params: BaseModel) -> list[str]:
    """Every value of the parameters declared raw paths, nested parameter models included."""
    found: list[str] = []
    for name, info in type(params).model_fields.items():
        value = getattr(params, name)
        if any(isinstance(m, RawPathField) for m in info.metadata) or declares_raw_path(info.annotation):
            found.extend(strings(value))
        else:
            for model in models(value):
                found.extend(declared_paths(model))
    return found


def raw_inputs(params: BaseModel, spec_dir: Path, cache: HashCache) -> list[dict[str, Any]]:
    """The manifest of the raw files the parameters declared raw paths name (relative to the spec,
    ``demo:``, or an object-store URL): each file, or every file under each folder, sorted, with
    size and sha256 (an object: size, ETag and last-modified time)."""
    files: dict[Path, None] = {}
    objects: dict[str, None] = {}
    for value in declared_paths(params):
        if not value:
            continue
        if storage.is_remote(value):
            single = storage.size(value) is not None
            objects.update(dict.fromkeys([value] if single else [storage.join(value, f) for f in storage.files(value)]))
            continue
        path = resolve_path(value, spec_dir)
        if path.is_file():
            files[path.resolve()] = None
        elif path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                files[child.resolve()] = None
    local = [{"path": display_path(f), "size": f.stat().st_size, "sha256": cache.sha256(f)} for f in sorted(files)]
    return local + [{"path": u, **storage.fingerprint(u)} for u in sorted(objects)]


def display_path(path: Path) -> str:
    """A raw input's path as recorded: ``demo:...`` for bundled demo data, else absolute."""
    try:
        return "demo:" + path.relative_to(DEMO_DIR.resolve()).as_posix()
    except ValueError:
        return str(path)
