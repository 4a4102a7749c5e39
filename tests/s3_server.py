"""A real S3 API for tests: moto's standalone server on a free loopback port with dummy
credentials, the AWS settings that point a process at it, a count of the object bytes it sent,
and reading a built prefix back to compare it with a local build."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import s3fs
from conftest import folder_digests
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from recgpt_data.pipeline.store import MARKER, without_attempt

BUCKET = "recgpt-test"


class Served:
    """The body bytes a server sent in answer to GET requests, by request path (``/bucket/key``
    for an object: clients reach the loopback server path-style): what crossed the network."""

    def __init__(self) -> None:
        self.bytes: Counter[str] = Counter()
        self.lock = threading.Lock()

    def wrap(self, app: Callable) -> Callable:
        """The WSGI application ``app``, its GET answers counted."""

        def counted(environ: dict, start_response: Callable) -> Iterable[bytes]:
            body = app(environ, start_response)
            return self._counting(environ["PATH_INFO"], body) if environ["REQUEST_METHOD"] == "GET" else body

        return counted

    def _counting(self, path: str, body: Iterable[bytes]) -> Iterator[bytes]:
        for part in body:
            with self.lock:
                self.bytes[path] += len(part)
            yield part

    def clear(self) -> None:
        with self.lock:
            self.bytes.clear()


@contextmanager
def moto_s3(served: Served | None = None) -> Iterator[dict[str, str]]:
    """A fresh moto server on 127.0.0.1 while the block runs: the AWS settings that reach it (the
    endpoint, dummy credentials, the region), for a process's environment; ``served`` counts the
    bytes it sends. The server is moto's WSGI application (as its standalone server builds it)
    served by werkzeug in a thread, wrapped by ``served`` where given. moto keeps its buckets in
    this process, shared by every server it starts, so they are reset when the block ends."""
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", 0, served.wrap(app) if served else app, threaded=True, request_handler=MotoRequestHandler
    )
    serving = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    serving.start()
    host, port = server.server_address[:2]
    try:
        yield {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        reset = urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")
        urllib.request.urlopen(reset, timeout=10).close()
        server.shutdown()
        serving.join()
        server.server_close()


def client(settings: Mapping[str, str] | None = None) -> s3fs.S3FileSystem:
    """A client of the server ``settings`` name (by default, of this process's AWS settings),
    without caches (other processes write too)."""
    if settings is None:
        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    return s3fs.S3FileSystem(
        key=settings["AWS_ACCESS_KEY_ID"],
        secret=settings["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=settings["AWS_ENDPOINT_URL"],
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def objects(url: str, fs: s3fs.S3FileSystem | None = None) -> dict[str, bytes]:
    """Every object under ``url`` (read with ``fs``, by default :func:`client`): its key relative
    to ``url`` and its bytes."""
    fs = fs or client()
    prefix = url.removeprefix("s3://")
    return {key[len(prefix) + 1 :]: fs.cat_file(key) for key in sorted(fs.find(prefix))}


def assert_same_build(remote: dict[str, bytes], local: Path) -> None:
    """The build whose objects are ``remote`` holds the local build's final folder and stage
    tables, byte for byte (the run's timings, ``stats.json``, aside)."""
    final = {
        key: hashlib.sha256(data).hexdigest()
        for key, data in remote.items()
        if not key.startswith(".") and key != "stats.json"
    }
    assert final == folder_digests(local)
    stages = sorted(p.parent.name for p in (local / ".stages").glob(f"*/{MARKER}"))
    assert stages == sorted(json.loads(remote["stats.json"])["stages"])
    for key in stages:
        assert_same_stage(remote, local, key)


def assert_same_stage(remote: dict[str, bytes], local: Path, key: str) -> None:
    """Stage ``key`` of the build whose objects are ``remote`` published the local build's files and
    wrote its tables' bytes, under attempt-unique keys."""
    mine = json.loads((local / ".stages" / key / MARKER).read_text())
    theirs = json.loads(remote[f".stages/{key}/{MARKER}"])
    assert theirs["published"] == mine["published"]
    assert theirs["tables"].keys() == mine["tables"].keys()
    for name, table in mine["tables"].items():
        paths = [f["path"] for f in theirs["tables"][name]["files"]]
        assert [without_attempt(p) for p in paths] == [f["path"] for f in table["files"]]
        assert all(p != without_attempt(p) for p in paths)  # attempt-unique keys
        for path, f in zip(paths, table["files"], strict=True):
            assert remote[f".stages/{key}/{path}"] == (local / ".stages" / key / f["path"]).read_bytes()
