"""The lock on an output folder: one writer at a time, whether it is a pipeline run or an ingest.

Locally it is ``flock`` on ``out/.stages/lock``, which goes with the process, so a killed writer
never leaves it behind. On S3 there is no flock: the lock is the object ``.stages/lock``, created
with a conditional PUT (``If-None-Match: *``, which S3 and S3-compatible servers refuse with 412
when the key exists), holding the writer's ``host:pid``. The writer deletes it when it ends
(``If-Match`` its own ETag, so never another writer's lock). A writer killed with SIGKILL leaves
it behind: the next writer on the same host takes it over when that pid is gone (a conditional PUT
on the dead holder's ETag, so of two such writers one wins); a lock left by a dead writer on
another host is reported with its holder and must be deleted by hand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recgpt_data.errors import UsageError
from recgpt_data.io.storage import Location, filesystem, is_remote, join

LOCK_FILE = Path(".stages") / "lock"


@contextmanager
def folder_lock(out: Location) -> Iterator[None]:
    """Hold ``out`` for one writer; a second one on it at the same time is refused."""
    if is_remote(out):
        with object_lock(out):
            yield
        return
    path = Path(out) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another run is writing {out}; wait for it to finish") from None
        yield


def holder() -> str:
    """This process as a lock names its holder: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_here(name: str) -> bool:
    """Whether lock holder ``name`` was a process of this host that is gone."""
    host, _, pid = name.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextmanager
def object_lock(out: str) -> Iterator[None]:
    """Hold the S3 folder ``out`` through its lock object (see the module's rules)."""
    url = join(out, LOCK_FILE.as_posix())
    fs, path = filesystem(url)
    if "s3" not in fs.protocol:
        raise UsageError(f"{out}: a run's lock needs S3 conditional writes; {fs.protocol[0]}:// has none here")
    bucket, key, _ = fs.split_path(path)
    body = json.dumps({"holder": holder()}).encode("utf-8")
    try:
        tag = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"]
    except FileExistsError:
        tag = take_over(fs, bucket, key, body, out, url)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # taken over meanwhile, or gone: not ours to delete
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=tag)


def take_over(fs, bucket: str, key: str, body: bytes, out: str, url: str) -> str:
    """The lock object's new ETag once this process replaced a dead holder's lock, else a
    :class:`UsageError` naming the holder."""
    tag = fs.info(f"{bucket}/{key}")["ETag"]  # the put below succeeds only if this is still the lock
    try:
        name = json.loads(fs.cat_file(f"{bucket}/{key}"))["holder"]
    except (ValueError, KeyError, TypeError, FileNotFoundError):
        name = "an unknown writer"
    if not dead_here(name):
        raise UsageError(
            f"another run ({name}) is writing {out}; wait for it to finish, or delete {url} if it is dead"
        ) from None
    try:
        return fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, IfMatch=tag)["ETag"]
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOENT):
            raise UsageError(f"another run took over {out}'s lock first; wait for it to finish") from None
        raise
