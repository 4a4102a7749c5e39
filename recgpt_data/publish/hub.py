"""Upload a built folder to a Hugging Face Hub dataset repository with the real ``huggingface_hub``
client, so that the repository holds exactly that build afterwards.

One commit adds what is new or changed and deletes every remote file the build no longer has
(shards of an earlier build with a different shard count, a benchmark since dropped), so a reader
never sees old and new shards together and ``load_dataset`` reads the new build. Files already
there with the same content are left alone, and LFS objects the Hub already holds are not sent
again, so rerunning an interrupted publish sends only what is missing. The client retries its
preupload and LFS transfers on connection errors, 429 and 5xx; the calls it sends once (creating
the repository and the branch, and the commit, whose retry re-sends only what the Hub lacks) are
retried here with the same backoff.

Not ``upload_folder``: with ``hf_xet`` installed it commits a large folder in batches (256 files
to start), the deletions with the first, so a reader can meet a repository whose old shards are gone
and whose new ones are not all there; and it uploads files as they are on disk, so the card could
not name the repository without rewriting the built folder.

The card's loading snippet is rewritten for the repository it goes to, and ``--revision`` creates
the branch from ``main`` when it does not exist yet. The token comes from ``HF_TOKEN`` or the stored
login (``huggingface_hub.get_token``); it is handed to the client and never printed, logged or
written anywhere.
"""

from __future__ import annotations

import hashlib
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from recgpt_data.errors import UsageError
from recgpt_data.pipeline.fingerprint import file_sha256
from recgpt_data.publish.card import card_for_repo
from recgpt_data.publish.terms import published_files, refusal, restricted

T = TypeVar("T")
ATTEMPTS = 5
KEEP = ".gitattributes"  # the Hub's own file: never deleted, never compared
CARD = "README.md"


@dataclass
class PublishReport:
    """What a publish did: files committed, files already there, remote files deleted, the URL."""

    uploaded: int
    skipped: int
    deleted: int
    url: str


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of some bytes (what the Hub reports for files not stored in LFS)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def transport_errors() -> tuple[type[BaseException], ...]:
    """The connection-level error classes of the HTTP client that ``huggingface_hub`` uses.

    ``huggingface_hub`` has moved from ``requests`` to ``httpx`` to ``httpx2`` across versions; every
    one of them that is installed counts, plus the standard library's ``ConnectionError``.
    """
    classes: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            classes.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(classes)


def retryable(exc: Exception) -> bool:
    """Whether a failed Hub call is worth repeating: connection trouble, 429 or a server error."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, transport_errors()):
        return True
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return False


def with_retries(call: Callable[[], T], what: str, on_message: Callable[[str], None], attempts: int = ATTEMPTS) -> T:
    """``call()``, repeated with exponential backoff (1, 2, 4, ... s) while it fails retryably; for
    the Hub calls the client sends only once (``create_repo``, ``create_branch``, the commit)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # retryable() decides; others re-raise at once
            if attempt == attempts or not retryable(exc):
                raise
            wait = 2 ** (attempt - 1)
            on_message(f"{what} failed ({type(exc).__name__}); retry {attempt}/{attempts - 1} in {wait} s")
            time.sleep(wait)
    raise AssertionError("unreachable")


def publish_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    allow_restricted: bool = False,
    on_message: Callable[[str], None] = lambda message: None,
) -> PublishReport:
    """Publish ``folder`` to the dataset repository ``repo_id`` (see the module docstring)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return upload(Path(folder), repo_id, private, revision, allow_restricted, on_message)
    except HfHubHTTPError as exc:
        raise UsageError(f"the Hub refused the upload: {str(exc).splitlines()[0]}") from None


def check(folder: Path, repo_id: str, allow_restricted: bool, on_message: Callable[[str], None]) -> str:
    """Refuse what must not be published; the token to publish with."""
    from huggingface_hub import get_token

    if not (folder / CARD).is_file():
        raise UsageError(f"{folder} has no README.md dataset card; run a pipeline with the `card` stage first")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UsageError(f"--repo-id wants ORG/NAME, got {repo_id!r}")
    found = restricted(folder)
    if found and not allow_restricted:
        raise UsageError(refusal(found))
    if found:
        on_message(f"publishing {len(found)} restricted source(s) because --allow-restricted was given")
    token = get_token()
    if not token:
        raise UsageError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def same_content(entry: object, path: Path, data: bytes | None) -> bool:
    """Whether a remote tree entry holds the local file (``data``: its bytes as published, if they
    differ from the file's)."""
    size = len(data) if data is not None else path.stat().st_size
    if getattr(entry, "size", None) != size:
        return False
    lfs = getattr(entry, "lfs", None)
    if lfs is not None:
        return lfs.sha256 == (hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path))
    return entry.blob_id == git_blob_sha1(data if data is not None else path.read_bytes())


def upload(
    folder: Path,
    repo_id: str,
    private: bool,
    revision: str | None,
    allow_restricted: bool,
    on_message: Callable[[str], None],
) -> PublishReport:
    """Check, then make the repository (at ``revision``) hold exactly ``folder``, in one commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    token = check(folder, repo_id, allow_restricted, on_message)
    api = HfApi(token=token)
    url = with_retries(
        lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True), "create repo", on_message
    )
    if revision is not None and revision != "main":
        with_retries(
            lambda: api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True),
            "create branch",
            on_message,
        )
    remote = {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True)
        if hasattr(entry, "blob_id") and entry.path != KEEP
    }
    card = card_for_repo((folder / CARD).read_text(encoding="utf-8"), repo_id).encode("utf-8")
    operations: list[CommitOperationAdd | CommitOperationDelete] = []
    local = published_files(folder)
    names = {path.relative_to(folder).as_posix(): path for path in local}
    for name, path in names.items():
        data = card if name == CARD else None
        if name in remote and same_content(remote[name], path, data):
            continue
        operations.append(CommitOperationAdd(name, data if data is not None else str(path)))
    uploaded = len(operations)
    operations += [CommitOperationDelete(name) for name in sorted(set(remote) - set(names))]
    if operations:
        message = f"Publish {len(names)} files: {uploaded} added or changed, {len(operations) - uploaded} deleted"
        with_retries(
            lambda: api.create_commit(
                repo_id, operations, commit_message=message, repo_type="dataset", revision=revision
            ),
            "commit",
            on_message,
        )
        on_message(message)
    return PublishReport(
        uploaded=uploaded, skipped=len(names) - uploaded, deleted=len(operations) - uploaded, url=str(url)
    )
