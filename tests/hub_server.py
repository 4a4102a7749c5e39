"""A Hugging Face Hub-compatible server on loopback, for round trips with the real clients.

It implements what ``huggingface_hub`` 2.4 and ``datasets`` 5.2 call to create a dataset repo and
a branch, upload to it (preupload, LFS batch with basic transfer to this same server, ndjson commit
with additions and deletions) and read it back (revision info, tree, paths-info, resolve with
ranges). Repositories and their branches live in memory.

Point the clients at it with ``HF_ENDPOINT=http://127.0.0.1:PORT`` and ``HF_HUB_DISABLE_XET=1``,
set before they are imported. The Xet switch is deliberate: with ``hf_xet`` installed the client
sends LFS files to a separate content-addressed store (``hf_xet``'s Rust client speaking its own
binary protocol of chunked, compressed "xorbs" and "shards"), and serving those files back would
mean reassembling them from that format here. The tests therefore exercise the HTTP LFS transfer;
the commit, the deletions and the branch handling around it are the same calls on both paths.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".parquet", ".png", ".gz", ".arrow", ".bin")
REPO = r"(?P<repo>[^/]+/[^/]+)"
REV = r"(?P<rev>[^/]+)"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Branch:
    """One branch: files at its head commit, which of them are LFS, and its commits."""

    files: dict[str, bytes] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)
    commits: list[str] = field(default_factory=lambda: [hashlib.sha1(b"initial").hexdigest()])

    @property
    def head(self) -> str:
        return self.commits[-1]

    def entry(self, path: str) -> dict:
        data = self.files[path]
        entry = {"type": "file", "oid": git_sha1(data), "size": len(data), "path": path}
        if path in self.lfs:
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def directories(self) -> set[str]:
        found = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return found

    def listing(self, base: str, recursive: bool) -> list[dict]:
        prefix = f"{base}/" if base else ""
        paths = sorted([*self.files, *self.directories()])
        chosen = [p for p in paths if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])]
        return [self.describe(p) for p in chosen]

    def describe(self, path: str) -> dict:
        if path in self.files:
            return self.entry(path)
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    def copy(self) -> Branch:
        return Branch(dict(self.files), set(self.lfs), list(self.commits))


@dataclass
class Repo:
    """One dataset repository: its branches (``main`` from the start) and the LFS objects uploaded."""

    branches: dict[str, Branch] = field(default_factory=lambda: {"main": Branch()})
    objects: dict[str, bytes] = field(default_factory=dict)

    @property
    def files(self) -> dict[str, bytes]:
        return self.branches["main"].files

    @property
    def lfs(self) -> set[str]:
        return self.branches["main"].lfs


class HubState:
    """Everything the server holds, and what it saw (for tests to check)."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.authorizations: list[str] = []
        self.lock = threading.Lock()
        self.commits = 0
        self.fail_next: dict[str, int] = {}  # handler name -> how many calls to answer 503

    def should_fail(self, name: str) -> bool:
        """Whether to answer this call to ``name`` with 503 (a test asked for it)."""
        if self.fail_next.get(name, 0) > 0:
            self.fail_next[name] -= 1
            return True
        return False


class Handler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:
        return None

    @property
    def state(self) -> HubState:
        return self.server.state

    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status: int, payload: object = None, headers: dict | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def not_found(self, code: str = "RepoNotFound") -> None:
        self.send(404, {"error": code}, {"X-Error-Code": code, "X-Error-Message": code})

    def route(self, method: str) -> None:
        auth = self.headers.get("Authorization")
        if auth:
            self.state.authorizations.append(auth)
        url = urlparse(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET", rf"/api/datasets/{REPO}/revision/{REV}", self.info),
            ("GET", rf"/api/datasets/{REPO}", self.info),
            ("GET", rf"/api/datasets/{REPO}/tree/{REV}(?:/(?P<path>.*))?", self.tree),
            ("POST", rf"/api/datasets/{REPO}/paths-info/{REV}", self.paths_info),
            ("POST", rf"/api/datasets/{REPO}/preupload/{REV}", self.preupload),
            ("POST", rf"/datasets/{REPO}\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", rf"/lfs-upload/{REPO}/(?P<oid>[0-9a-f]+)", self.lfs_upload),
            ("POST", rf"/api/datasets/{REPO}/commit/{REV}", self.commit),
            ("POST", rf"/api/datasets/{REPO}/branch/(?P<name>[^/]+)", self.create_branch),
            ("GET", rf"/datasets/{REPO}/resolve/{REV}/(?P<path>.+)", self.resolve),
            ("HEAD", rf"/datasets/{REPO}/resolve/{REV}/(?P<path>.+)", self.resolve),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                with self.state.lock:
                    if self.state.should_fail(handler.__name__):
                        self.body()
                        self.send(503, {"error": "try again later"})
                    else:
                        handler(query=query, **match.groupdict())
                return
        self.send(404, {"error": f"no route {method} {path}"})

    def do_GET(self) -> None:
        self.route("GET")

    def do_HEAD(self) -> None:
        self.route("HEAD")

    def do_POST(self) -> None:
        self.route("POST")

    def do_PUT(self) -> None:
        self.route("PUT")

    def create_repo(self, query: dict) -> None:
        request = json.loads(self.body())
        repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
        url = f"{self.base()}/datasets/{repo_id}"
        if repo_id in self.state.repos:
            self.send(409, {"error": "You already created this dataset repo", "url": url})
            return
        self.state.repos[repo_id] = Repo()
        self.send(200, {"url": url, "name": repo_id})

    def validate_yaml(self, query: dict) -> None:
        content = json.loads(self.body())["content"]
        ok = content.startswith("---\n") and "\n---\n" in content[4:]
        self.send(200 if ok else 400, {"errors": [] if ok else [{"message": "no YAML block"}], "warnings": []})

    def repo(self, repo: str) -> Repo | None:
        found = self.state.repos.get(repo)
        if found is None:
            self.not_found()
        return found

    def branch(self, repo: str, rev: str) -> Branch | None:
        """The branch ``rev`` names (by name, or by a commit of its history), else answer 404."""
        found = self.repo(repo)
        if found is None:
            return None
        rev = unquote(rev)
        for name, branch in found.branches.items():
            if rev == name or rev in branch.commits:
                return branch
        self.not_found("RevisionNotFound")
        return None

    def create_branch(self, repo: str, name: str, query: dict) -> None:
        found = self.repo(repo)
        if found is None:
            return
        request = json.loads(self.body() or b"{}")
        if name in found.branches:
            self.send(409, {"error": f"branch {name} already exists"})
            return
        start = self.branch(repo, request.get("startingPoint", "main"))
        if start is not None:
            found.branches[name] = start.copy()
            self.send(200, {})

    def info(self, repo: str, query: dict, rev: str = "main") -> None:
        found = self.branch(repo, rev)
        if found is None:
            return
        siblings = [{"rfilename": p} for p in sorted(found.files)]
        self.send(
            200,
            {
                "_id": repo,
                "id": repo,
                "author": repo.split("/")[0],
                "sha": found.head,
                "private": False,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "lastModified": "2024-01-01T00:00:00.000Z",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "cardData": {},
            },
        )

    def tree(self, repo: str, rev: str, query: dict, path: str | None = None) -> None:
        found = self.branch(repo, rev)
        if found is None:
            return
        base = (path or "").strip("/")
        if base and base not in found.directories():
            self.not_found("EntryNotFound")
            return
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        self.send(200, found.listing(base, recursive))

    def paths_info(self, repo: str, rev: str, query: dict) -> None:
        found = self.branch(repo, rev)
        if found is None:
            return
        body = self.body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        known = set(found.files) | found.directories()
        self.send(200, [found.describe(p) for p in paths if p in known])

    def preupload(self, repo: str, rev: str, query: dict) -> None:
        if self.repo(repo) is None:
            return
        files = json.loads(self.body())["files"]
        modes = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                "shouldIgnore": False,
            }
            for f in files
        ]
        self.send(200, {"files": modes})

    def lfs_batch(self, repo: str, query: dict) -> None:
        found = self.repo(repo)
        if found is None:
            return
        request = json.loads(self.body())
        objects = []
        for obj in request["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in found.objects:
                item["actions"] = {"upload": {"href": f"{self.base()}/lfs-upload/{repo}/{obj['oid']}", "header": {}}}
            objects.append(item)
        self.send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def lfs_upload(self, repo: str, oid: str, query: dict) -> None:
        found = self.repo(repo)
        if found is None:
            return
        data = self.body()
        if hashlib.sha256(data).hexdigest() != oid:
            self.send(400, {"error": "sha256 mismatch"})
            return
        found.objects[oid] = data
        self.send(200, {})

    def commit(self, repo: str, rev: str, query: dict) -> None:
        stored = self.repo(repo)
        found = self.branch(repo, rev)
        if stored is None or found is None:
            return
        body = self.body()
        for line in body.decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                found.files[value["path"]] = base64.b64decode(value["content"])
                found.lfs.discard(value["path"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in stored.objects:
                    self.send(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                    return
                found.files[value["path"]] = stored.objects[value["oid"]]
                found.lfs.add(value["path"])
            elif item["key"] == "deletedFile":
                found.files.pop(value["path"], None)
        found.commits.append(hashlib.sha1(found.head.encode() + body).hexdigest())
        self.state.commits += 1
        url = f"{self.base()}/datasets/{repo}/commit/{found.head}"
        self.send(200, {"commitUrl": url, "commitOid": found.head, "pullRequestUrl": None})

    def resolve(self, repo: str, rev: str, path: str, query: dict) -> None:
        found = self.branch(repo, rev)
        if found is None:
            return
        if path not in found.files:
            self.send(404, {"error": "EntryNotFound"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": found.head})
            return
        data = found.files[path]
        entry = found.entry(path)
        headers = {"X-Repo-Commit": found.head, "ETag": f'"{entry["oid"]}"', "Accept-Ranges": "bytes"}
        if "lfs" in entry:
            headers.update({"X-Linked-Etag": f'"{entry["lfs"]["oid"]}"', "X-Linked-Size": str(len(data))})
        status = 200
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged and self.command == "GET":
            start = int(ranged.group(1))
            end = int(ranged.group(2)) if ranged.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        if self.command == "HEAD":
            self.send_response(200)
            for k, v in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(k, v)
            self.end_headers()
            return
        self.send(status, headers=headers, raw=data)


class HubServer(ThreadingHTTPServer):
    """The server, on a free loopback port, serving from a background thread."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = HubState()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
