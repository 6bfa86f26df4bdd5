"""Blob access from Airflow workers, with the same credential order as task-agent.

A SAS in the URL, else `AZURE_STORAGE_CONNECTION_STRING` (an emulator, or a key kept in the
worker's secret store), else the worker's Entra identity (workload identity on AKS).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from azure.storage.blob import BlobClient

CONNECTION_STRING_VAR = "AZURE_STORAGE_CONNECTION_STRING"


def blob_client(uri: str) -> BlobClient:
    if "sig=" in (urlsplit(uri).query or ""):
        return BlobClient.from_blob_url(uri)
    credential: Any
    connection_string = os.environ.get(CONNECTION_STRING_VAR)
    if connection_string:
        credential = _account_key(connection_string)
    else:
        # Imported here: it is slow to import and only needed on AKS.
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BlobClient.from_blob_url(uri, credential=credential)


def _account_key(connection_string: str) -> dict[str, str] | None:
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    if "AccountName" in fields and "AccountKey" in fields:
        return {"account_name": fields["AccountName"], "account_key": fields["AccountKey"]}
    return None
