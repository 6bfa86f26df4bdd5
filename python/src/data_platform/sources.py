"""What an upload reads: a local file, or a blob of the tenant's storage, as a stream of chunks.

Opening a source surfaces "missing" and "denied" before anything is created on the receiving
side; reading it never holds the whole file in memory nor copies it to local disk.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from data_platform.storage import (
    BlobCredential,
    blob_client,
    blob_error,
    is_local_store,
    local_path,
    storage_violation,
    without_query,
    without_sas,
)

if TYPE_CHECKING:
    from azure.storage.blob import StorageStreamDownloader

# Paramiko sends at most 32 KiB per SFTP write request and pipelines them, so a larger read only means
# fewer Python-level iterations; it also bounds the memory one upload holds.
LOCAL_READ_BYTES = 1024 * 1024
# Caps the first and every later ranged GET (the SDK's default first GET is 32 MiB, a whole
# medium-sized blob). While reading a response the SDK also preallocates a list with one slot per
# byte, so a chunk briefly costs about 9 times its size: 1 MiB keeps an upload near 10 MiB.
BLOB_CHUNK_BYTES = 1024 * 1024

SOURCE_FORMS = (
    "an absolute local path such as /data/out.csv, or a blob URI such as "
    "https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH"
)


@dataclass(frozen=True)
class LocalSource:
    path: Path

    @property
    def display(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class BlobSource:
    uri: str
    """As given, possibly carrying a SAS: only ever handed to the storage SDK."""
    display: str
    """scheme://host/path without the query: what messages, logs and XCom show."""


def parse_source(source: object, allowed_storage: Sequence[str]) -> LocalSource | BlobSource:
    if not isinstance(source, str) or not source.strip():
        raise AirflowFailException(f"source is empty ({source!r}): give {SOURCE_FORMS}.")
    scheme, has_scheme, _ = source.partition("://")
    if not has_scheme:
        path = Path(source)
        if not path.is_absolute():
            raise AirflowFailException(
                f"local source {source!r} is a relative path: give an absolute path such as /data/out.csv "
                "(a relative path would depend on the worker's working directory)."
            )
        return LocalSource(path)

    display = without_sas(without_query(source))
    if scheme.lower() == "file" and is_local_store(allowed_storage):
        # The local store (data-platform run-local's policy lists file:// prefixes): a local file.
        problem = storage_violation(source, allowed_storage)
        if problem is not None:
            raise AirflowFailException(f"source {problem}, or upload a local file instead.")
        local = local_path(source)
        if local is None:
            raise AirflowFailException(f"source {display!r} is not a file:///ABSOLUTE/PATH URI.")
        return LocalSource(local)
    if scheme.lower() not in ("http", "https"):
        raise AirflowFailException(
            f"source {display!r} has the unsupported scheme {scheme!r}: give {SOURCE_FORMS}."
        )
    parts = urlsplit(source)
    if not parts.hostname or parts.username is not None:
        raise AirflowFailException(f"source {display!r} is not a blob URI: give {SOURCE_FORMS}.")
    problem = storage_violation(source, allowed_storage)
    if problem is not None:
        raise AirflowFailException(f"source {problem}, or upload a local file instead.")
    return BlobSource(uri=source, display=display)


def recorded_source(uri: str) -> LocalSource | BlobSource:
    """An upstream's recorded output (already checked against the tenant's storage): a blob, or
    in the local store (data-platform run-local) a `file:///PATH`, which is a local file."""
    path = local_path(uri)
    return LocalSource(path) if path is not None else BlobSource(uri=uri, display=uri)


@contextmanager
def source_chunks(source: LocalSource | BlobSource) -> Iterator[Iterator[bytes]]:
    """The source's bytes, chunk by chunk; opened (and its errors raised) on entry."""
    if isinstance(source, LocalSource):
        with _local_chunks(source) as chunks:
            yield chunks
    else:
        with _blob_chunks(source) as chunks:
            yield chunks


@contextmanager
def _local_chunks(source: LocalSource) -> Iterator[Iterator[bytes]]:
    path = source.path
    where_hint = (
        "check the path; local paths are only visible to this task's own pod, so data written by another "
        "task belongs in the tenant's blob storage"
    )
    try:
        # stat first: opening a FIFO or device for reading could block or never end.
        status = path.stat()
        if stat.S_ISDIR(status.st_mode):
            raise AirflowFailException(f"local source {path} is a directory: give the path of a file.")
        if not stat.S_ISREG(status.st_mode):
            raise AirflowFailException(f"local source {path} is not a regular file: give the path of a file.")
        file = path.open("rb")
    except FileNotFoundError:
        raise AirflowFailException(f"local source {path} does not exist: {where_hint}.") from None
    except PermissionError:
        raise AirflowFailException(
            f"local source {path} cannot be read by the worker (permission denied): make the file readable "
            "by the task's user."
        ) from None
    except OSError as err:
        raise AirflowFailException(f"local source {path} cannot be opened: {err.strerror or err}.") from None
    with file:
        yield _read_local(file, path)


def _read_local(file: IO[bytes], path: Path) -> Iterator[bytes]:
    while True:
        try:
            chunk = file.read(LOCAL_READ_BYTES)
        except OSError as err:
            raise AirflowFailException(
                f"reading local source {path} failed: {err.strerror or err}."
            ) from None
        if not chunk:
            return
        yield chunk


@contextmanager
def _blob_chunks(source: BlobSource) -> Iterator[Iterator[bytes]]:
    from azure.core.exceptions import AzureError

    with ExitStack() as stack:
        client, credential = blob_client(
            source.uri, stack, max_single_get_size=BLOB_CHUNK_BYTES, max_chunk_get_size=BLOB_CHUNK_BYTES
        )
        try:
            downloader = client.download_blob(max_concurrency=1)
        except AzureError as err:
            # The SDK's errors can quote the request URL, SAS included: never chain them.
            raise blob_error(err, source.display, credential) from None
        yield _read_blob(downloader, source, credential)


def _read_blob(
    downloader: StorageStreamDownloader[bytes], source: BlobSource, credential: BlobCredential
) -> Iterator[bytes]:
    from azure.core.exceptions import AzureError

    received = 0
    try:
        for chunk in downloader.chunks():
            received += len(chunk)
            yield chunk
    except AzureError as err:
        raise blob_error(err, source.display, credential) from None
    if received != downloader.size:
        raise AirflowException(
            f"blob {source.display!r} ended after {received} of {downloader.size} bytes; "
            "nothing was published."
        )
