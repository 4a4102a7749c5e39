"""Upload a built folder to a Hugging Face Hub dataset repository with the real ``huggingface_hub``
client: create the repository, skip files already there with the same content, commit the rest in
batches (each retried with exponential backoff), so an interrupted upload resumes where it stopped.

The token comes from ``HF_TOKEN`` or the stored login (``huggingface_hub.get_token``); it is handed
to the client and never printed, logged or written anywhere.
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
from recgpt_data.publish.terms import refusal, restricted

T = TypeVar("T")
BATCH = 100
ATTEMPTS = 5


@dataclass
class PublishReport:
    """What a publish did: files committed, files skipped as already present, the repository URL."""

    uploaded: int
    skipped: int
    url: str


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (what the Hub reports for files not stored in LFS)."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def local_files(folder: Path) -> list[Path]:
    """The files of a built folder to publish, sorted; the runner's hidden folders stay home."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(folder).parts)
    )


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
    """``call()``, repeated with exponential backoff (1, 2, 4, ... s) while it fails retryably."""
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
        return upload(folder, repo_id, private, revision, allow_restricted, on_message)
    except HfHubHTTPError as exc:
        raise UsageError(f"the Hub refused the upload: {str(exc).splitlines()[0]}") from None


def upload(
    folder: str | Path,
    repo_id: str,
    private: bool,
    revision: str | None,
    allow_restricted: bool,
    on_message: Callable[[str], None],
) -> PublishReport:
    """Check, then upload what is missing or different, batch by batch."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise UsageError(f"{folder} has no README.md dataset card; run a pipeline with the `card` stage first")
    if "/" not in repo_id:
        raise UsageError(f"--repo-id wants ORG/NAME, got {repo_id!r}")
    found = restricted(folder)
    if found and not allow_restricted:
        raise UsageError(refusal(found))
    if found:
        on_message(f"publishing {len(found)} restricted source(s) because --allow-restricted was given")
    token = get_token()
    if not token:
        raise UsageError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    api = HfApi(token=token)
    url = with_retries(
        lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True), "create repo", on_message
    )
    remote = {
        entry.path: entry
        for entry in with_retries(
            lambda: list(api.list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True)),
            "list files",
            on_message,
        )
        if hasattr(entry, "blob_id")
    }
    pending: list[Path] = []
    for path in local_files(folder):
        name = path.relative_to(folder).as_posix()
        entry = remote.get(name)
        if entry is not None and entry.size == path.stat().st_size:
            if entry.lfs is not None and entry.lfs.sha256 == file_sha256(path):
                continue
            if entry.lfs is None and entry.blob_id == git_blob_sha1(path):
                continue
        pending.append(path)
    skipped = len(local_files(folder)) - len(pending)
    for start in range(0, len(pending), BATCH):
        batch = pending[start : start + BATCH]
        operations = [CommitOperationAdd(p.relative_to(folder).as_posix(), str(p)) for p in batch]
        message = f"Upload {len(batch)} files ({start + 1}-{start + len(batch)} of {len(pending)})"
        with_retries(
            lambda operations=operations, message=message: api.create_commit(
                repo_id, operations, commit_message=message, repo_type="dataset", revision=revision
            ),
            "commit",
            on_message,
        )
        on_message(message)
    return PublishReport(uploaded=len(pending), skipped=skipped, url=str(url))
