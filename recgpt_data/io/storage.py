"""Where a run's files live: a local folder (``pathlib``, written under a temporary name and renamed)
or an object store named by a URL such as ``s3://bucket/prefix`` (fsspec; s3fs for S3).

A location is a :class:`~pathlib.Path` for a local folder and a ``str`` URL for an object store.
An object store has no rename and no lock: an object appears whole when its single PUT ends, or
not at all, so a remote write is one PUT of a file finished locally (:func:`local_file`,
:func:`local_folder`), and a set of objects counts as complete only once the record that names them
is written last (see :mod:`recgpt_data.pipeline.store`). Endpoint and credentials come from the
standard AWS settings (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), which the local engine's
workers inherit and the Ray engine passes to its tasks (:func:`store_settings`); polars and pyarrow
read ``s3://`` URLs with the same settings.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import fsspec
from fsspec import AbstractFileSystem

from recgpt_data.errors import UsageError
from recgpt_data.names import shown

Location = Path | str
STORE_SETTINGS = (  # the AWS settings that say which store a run reads and writes, and as whom
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ALLOW_HTTP",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def store_settings() -> dict[str, str]:
    """This process's object-store settings (those of :data:`STORE_SETTINGS` it has), for tasks
    in processes that do not inherit its environment, so that they reach the store the driver
    reads, as the same identity."""
    return {name: os.environ[name] for name in STORE_SETTINGS if name in os.environ}


def is_remote(location: Location) -> bool:
    """Whether ``location`` is an object-store URL (``s3://...``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def location_of(text: str | Path) -> Location:
    """A command-line folder as a location: a URL stays text (``Path`` would fold its ``//``)."""
    return str(text).rstrip("/") if "://" in str(text) else Path(text)


def join(root: Location, relative: str) -> Location:
    """``relative`` (``/``-separated) under ``root``; a part that is empty, ``.`` or ``..`` is
    refused, so no name, however it was made, leads outside ``root`` (object keys are not resolved
    like paths, but servers and clients may normalise ``..`` in them)."""
    parts = relative.split("/")
    if any(part in ("", ".", "..") or "\\" in part for part in parts):
        raise UsageError(f"refusing to write {shown(relative, 200)}: it is not a plain path inside {root}")
    if is_remote(root):
        return f"{root}/{relative}"
    return Path(root).joinpath(*parts)


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` (without a listings cache: other processes write too) and
    the path on it."""
    return fsspec.core.url_to_fs(url, use_listings_cache=False)


def size(location: Location) -> int | None:
    """A file's size in bytes, or ``None`` where there is no file."""
    if not is_remote(location):
        path = Path(location)
        return path.stat().st_size if path.is_file() else None
    fs, path = filesystem(location)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return info["size"] if info["type"] == "file" else None


def read_bytes(location: Location) -> bytes | None:
    """A file's bytes, or ``None`` where there is no file."""
    if not is_remote(location):
        path = Path(location)
        return path.read_bytes() if path.is_file() else None
    fs, path = filesystem(location)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def write_bytes(data: bytes, location: Location) -> None:
    """Write ``data`` to ``location`` whole: locally under a temporary name, then renamed; on an
    object store in one PUT."""
    if is_remote(location):
        fs, path = filesystem(location)
        fs.pipe_file(path, data)
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def put(local: Path, location: Location) -> None:
    """Put the finished local file ``local`` at ``location``: locally a rename (``local`` is gone),
    on an object store an upload of a copy (one object, multipart above s3fs's block size, visible
    only once complete; ``local`` stays)."""
    if not is_remote(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, location)
        return
    fs, path = filesystem(location)
    fs.put_file(str(local), path)


def download(location: Location, local: Path) -> None:
    """Copy the file at ``location`` to ``local`` (under a temporary name, then renamed)."""
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + ".tmp")
    if is_remote(location):
        fs, path = filesystem(location)
        fs.get_file(path, str(tmp))
    else:
        shutil.copyfile(location, tmp)
    os.replace(tmp, local)


def copy(source: Location, target: Location) -> None:
    """Copy the file at ``source`` to ``target``, both on the same object store (a copy there, the
    bytes never pass through this machine) or both local (under a temporary name, then renamed)."""
    if is_remote(source) != is_remote(target):
        raise ValueError(f"copy is within one store: {source} -> {target}")
    if not is_remote(target):
        download(source, Path(target))
        return
    fs, path = filesystem(str(source))
    fs.copy(path, filesystem(str(target))[1])


@contextmanager
def fetched(location: Location) -> Iterator[Path]:
    """A local path to read ``location``'s file at while the block runs: ``location`` itself
    locally; for an object store a temporary copy of the file, in a temporary folder (in
    ``TMPDIR``) under the object's own name, so that its suffix still says its compression and
    messages name the file as it is named, deleted when the block ends (for a reader that needs a
    file; a stream is :func:`open_input`)."""
    if not is_remote(location):
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="recgpt-fetched-") as folder:
        local = Path(folder) / location.rsplit("/", 1)[-1]
        download(location, local)
        yield local


def open_input(location: Location, start: int = 0) -> BinaryIO:
    """A binary stream of ``location``'s file from byte ``start``: the file itself locally; on an
    object store a stream with no read-ahead cache, each ``read(n)`` one ranged GET of exactly the
    bytes asked for, so a reader that asks for large pieces and stops at its range's end has each
    byte of the object cross the network once (nothing is copied to disk)."""
    if not is_remote(location):
        handle = open(location, "rb")  # noqa: SIM115 - the caller closes the stream
    else:
        fs, path = filesystem(location)
        handle = fs.open(path, "rb", cache_type="none")
    if start:
        handle.seek(start)
    return handle


def name_of(location: Location) -> str:
    """The file name of a local path or of an object's URL (the last part of its key)."""
    return Path(location).name if not is_remote(location) else str(location).rstrip("/").rsplit("/", 1)[-1]


def fingerprint(url: str) -> dict[str, object]:
    """What changes whenever the object at ``url`` does, from one HEAD request: its size, ETag and
    last-modified time. An ETag is the MD5 of the bytes only for a single-part upload without
    KMS encryption (a multipart upload's is a hash of its parts' hashes), so it is taken as a
    version tag, not as a content hash: any PUT of other bytes gives another ETag, and any PUT at
    all another last-modified time."""
    fs, path = filesystem(url)
    info = fs.info(path)
    modified = info.get("LastModified")
    return {
        "size": info["size"],
        "etag": str(info.get("ETag", "")),
        "last_modified": modified.isoformat() if modified is not None else "",
    }


def sha256(location: Location) -> str:
    """sha256 of a file's bytes, streamed in 1 MiB blocks."""
    h = hashlib.sha256()
    with fsspec.open(str(location), "rb") as handle:
        while block := handle.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def missing(url: str) -> str:
    """Why nothing is at ``url`` on its object store, in a few words: no bucket, or no object or
    prefix of that name in it."""
    fs, path = filesystem(url)
    bucket = path.split("/", 1)[0]
    return f"no such bucket: {bucket}" if not fs.exists(bucket) else f"no such object or prefix: {url}"


def credentials_missing(exc: BaseException) -> bool:
    """Whether ``exc`` says the object store was asked without any credentials to sign with."""
    try:
        from botocore.exceptions import NoCredentialsError
    except ImportError:
        return False
    return isinstance(exc, NoCredentialsError)


def files(folder: Location) -> dict[str, int]:
    """Every file under ``folder`` (recursively): its ``/``-separated path relative to ``folder``
    and its size, sorted by path; empty where there is no such folder."""
    if not is_remote(folder):
        root = Path(folder)
        if not root.is_dir():
            return {}
        found = (p for p in root.rglob("*") if p.is_file())
        return {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(found)}
    fs, path = filesystem(folder)
    try:
        listed = fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    prefix = path.rstrip("/") + "/"
    return {
        name[len(prefix) :]: info["size"]
        for name, info in sorted(listed.items())
        if name.startswith(prefix) and info["type"] == "file"
    }


def folders(folder: Location) -> list[str]:
    """The names of the folders directly under ``folder``, sorted (none where it is not there)."""
    if not is_remote(folder):
        root = Path(folder)
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    fs, path = filesystem(folder)
    try:
        listed = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    return sorted(info["name"].rstrip("/").rsplit("/", 1)[-1] for info in listed if info["type"] == "directory")


def exists(folder: Location) -> bool:
    """Whether ``folder`` holds anything (an object-store prefix exists only while keys are under it)."""
    if not is_remote(folder):
        return Path(folder).is_dir()
    fs, path = filesystem(folder)
    try:
        return bool(fs.ls(path))  # one level: a listing of the whole tree is not needed
    except FileNotFoundError:
        return False


def remove(location: Location) -> None:
    """Delete one file, if it is there."""
    if not is_remote(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = filesystem(location)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        return


def remove_tree(folder: Location) -> None:
    """Delete ``folder`` and everything under it, if it is there."""
    if not is_remote(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    for relative in files(folder):
        remove(join(folder, relative))


def remove_empty_folders(folder: Location) -> None:
    """Remove ``folder``'s empty sub-folders, deepest first, and ``folder`` itself if it ends empty
    (an object store has no folders to remove)."""
    root = Path(folder)
    if is_remote(folder) or not root.is_dir():
        return
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()
    if not any(root.iterdir()):
        shutil.rmtree(root)


@contextmanager
def local_file(location: Location) -> Iterator[Path]:
    """A local path to write ``location``'s file at: ``location`` itself locally (the writer renames
    its own temporary file into place); for an object store a temporary file (in the system's
    temporary folder, ``TMPDIR``) uploaded in one PUT when the block ends without an error."""
    if not is_remote(location):
        yield Path(location)
        return
    handle, name = tempfile.mkstemp(suffix=".upload")
    os.close(handle)
    local = Path(name)
    try:
        yield local
        put(local, location)
    finally:
        local.unlink(missing_ok=True)


@contextmanager
def local_folder(location: Location, last: str | None = None) -> Iterator[Path]:
    """A local folder to fill with ``location``'s files: ``location`` itself locally; for an object
    store a temporary folder whose files are uploaded when the block ends without an error, the
    file named ``last`` (a completion record) after all the others."""
    if not is_remote(location):
        Path(location).mkdir(parents=True, exist_ok=True)
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="recgpt-upload-") as name:
        local = Path(name)
        yield local
        written = sorted(files(local), key=lambda relative: relative == last)
        for relative in written:
            put(local / relative, join(location, relative))
