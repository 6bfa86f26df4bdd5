"""The tenant's blob storage, seen from Airflow workers: which URIs a tenant may use, how a URI
is shown (never with its SAS), and which credential reads it — in the same order as task-agent:
a SAS in the URI, else `AZURE_STORAGE_CONNECTION_STRING`, else the worker's Azure identity.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from airflow.sdk.exceptions import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobClient

CONNECTION_STRING_VAR = "AZURE_STORAGE_CONNECTION_STRING"
STORAGE_FIX = "ask the platform team to add the container to the tenant's storage"

_SAS_SIGNATURE_IN_TEXT = re.compile(r"(?i)(sig=)[^&#\s'\"]+")
_SAS_SIGNATURE_IN_URI = re.compile(r"(?i)[?&]sig=([^&#\s]+)")


def without_query(uri: str) -> str:
    """scheme://host/path: a URI as messages, logs and XCom may show it (its query may hold a SAS)."""
    parts = urlsplit(uri.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


def without_sas(text: str) -> str:
    """Blank out every `sig=` value in `text`: the rest of a SAS is harmless, the signature is the key."""
    return _SAS_SIGNATURE_IN_TEXT.sub(r"\1REDACTED", text)


def has_sas(uri: str) -> bool:
    return _SAS_SIGNATURE_IN_URI.search(uri) is not None


def mask_sas_signatures(text: object) -> None:
    """Registers every SAS signature in `text` with Airflow's secrets masker, as written and
    decoded, so task logs and the rendered fields the UI shows carry `***` instead."""
    if not isinstance(text, str):
        return
    from airflow.sdk.log import mask_secret

    for signature in _SAS_SIGNATURE_IN_URI.findall(text):
        mask_secret(signature)
        mask_secret(unquote(signature))


def storage_violation(uri: str, storage: Sequence[str], owner: str = "the tenant") -> str | None:
    """Why `uri` is not a blob in one of the `storage` prefixes, or None when it is. Pure.

    Prefixes match on whole path segments (`…/tenant` does not admit `…/tenant-b`), and dot
    segments are refused: HTTP clients resolve them before sending, so `..` could leave a prefix.
    """
    shown = without_sas(without_query(uri))
    if any(segment in (".", "..") for segment in unquote(urlsplit(uri).path).replace("\\", "/").split("/")):
        return (
            f"{shown!r} has a '.' or '..' path segment; give the blob's plain URL "
            "https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH"
        )
    prefixes = [without_query(entry).rstrip("/") for entry in storage]
    if not prefixes:
        return f"{shown!r} is a blob, but {owner} has no blob storage; {STORAGE_FIX}"
    if not any(shown.startswith(prefix + "/") for prefix in prefixes):
        return f"{shown!r} is not in {owner}'s storage (allowed: {', '.join(prefixes)}); {STORAGE_FIX}"
    return None


def is_local_store(storage: Sequence[str]) -> bool:
    """Whether `storage` lists a file:// prefix (the local disk, data-platform run-local only)."""
    return any(urlsplit(entry).scheme.lower() == "file" for entry in storage)


def local_path(uri: str) -> Path | None:
    """The absolute local path of a `file:///PATH` URI, or None for any other URI."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file" or parts.netloc not in ("", "localhost"):
        return None
    path = Path(unquote(parts.path))
    return path if path.is_absolute() else None


@dataclass(frozen=True)
class BlobCredential:
    credential: Any
    """None when the SAS in the URI is the credential."""
    description: str
    fix_when_denied: str


def blob_credential(uri: str, stack: ExitStack) -> BlobCredential:
    """The credential that reads `uri`; one that must be closed is closed with `stack`."""
    if has_sas(uri):
        return BlobCredential(
            None,
            "the SAS in the URI",
            "the SAS may have expired, lack read permission or be for another blob; issue a new SAS",
        )
    connection_string = os.environ.get(CONNECTION_STRING_VAR)
    if connection_string:
        from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential

        fields = {}
        for field in connection_string.split(";"):
            name, _, value = field.partition("=")
            fields[name.strip().lower()] = value.strip()
        account = fields.get("accountname")
        key = fields.get("accountkey")
        sas = fields.get("sharedaccesssignature")
        if account and key:
            return BlobCredential(
                AzureNamedKeyCredential(account, key),
                f"the key of account {account!r} from AZURE_STORAGE_CONNECTION_STRING",
                "the key must be for the blob's storage account; fix AZURE_STORAGE_CONNECTION_STRING",
            )
        if sas:
            return BlobCredential(
                AzureSasCredential(sas),
                "the SAS from AZURE_STORAGE_CONNECTION_STRING",
                "the SAS may have expired or lack read permission; fix AZURE_STORAGE_CONNECTION_STRING",
            )
        raise AirflowFailException(
            "AZURE_STORAGE_CONNECTION_STRING is set but has neither AccountName with AccountKey nor "
            "SharedAccessSignature: fix it, or unset it to use the worker's Azure identity."
        )
    from azure.identity import DefaultAzureCredential

    return BlobCredential(
        stack.enter_context(DefaultAzureCredential()),
        "the worker's Azure identity (DefaultAzureCredential)",
        "the tenant's workload identity needs the 'Storage Blob Data Reader' role on the container; "
        "ask the platform team",
    )


def blob_client(uri: str, stack: ExitStack, **options: Any) -> tuple[BlobClient, BlobCredential]:
    """A client for the blob `uri` (closed with `stack`), and the credential it uses."""
    from azure.storage.blob import BlobClient

    credential = blob_credential(uri, stack)
    try:
        client = BlobClient.from_blob_url(uri, credential=credential.credential, **options)
    except ValueError as err:
        # E.g. no container or blob name, or a token credential on a plain-http endpoint.
        raise AirflowFailException(
            f"{without_sas(without_query(uri))!r} cannot be read with {credential.description}: "
            f"{without_sas(str(err))} Expected https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH."
        ) from None
    return stack.enter_context(client), credential


def blob_error(err: AzureError, shown: str, credential: BlobCredential) -> AirflowException:
    """An Azure SDK error as the task's exception. Never chain the original: it can quote the SAS."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import CredentialUnavailableError

    status = getattr(err, "status_code", None)
    error_code = getattr(err, "error_code", None)
    summary = without_sas(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    http = f"HTTP {status}{f' {error_code}' if error_code else ''}"
    if isinstance(err, CredentialUnavailableError):
        return AirflowFailException(
            f"no Azure credential is available to read blob {shown!r} ({summary}): "
            "the task's pod needs the tenant's workload identity, or give the blob URI with a SAS."
        )
    if status == 404:
        return AirflowFailException(
            f"blob {shown!r} does not exist ({http}): check the container and path, and that the "
            "task producing it has run."
        )
    if status in (401, 403):
        return AirflowFailException(
            f"reading blob {shown!r} was denied ({http}) using {credential.description}: "
            f"{credential.fix_when_denied}."
        )
    if isinstance(err, ClientAuthenticationError):
        return AirflowException(
            f"could not get an Azure token to read blob {shown!r} using {credential.description}: {summary}"
        )
    detail = http if status is not None else summary
    return AirflowException(f"reading blob {shown!r} failed: {detail}")
