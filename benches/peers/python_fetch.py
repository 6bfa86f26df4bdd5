"""The usual Python platform approach to fetching a snapshot: download the blob with
Microsoft's azure-storage-blob client, then unpack it with tarfile.

    python_fetch.py SAS_URL DEST

The archive goes to a temporary file beside DEST (a tmpfs in the benchmark), with the
client's own parallel download, and is unpacked with tarfile's `data` filter, the safe one.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

from azure.storage.blob import BlobClient


def main() -> int:
    url, dest = sys.argv[1], Path(sys.argv[2])
    dest.mkdir(parents=True, exist_ok=True)
    client = BlobClient.from_blob_url(url)
    with tempfile.TemporaryFile(dir=dest.parent) as archive:
        client.download_blob(max_concurrency=4).readinto(archive)
        archive.seek(0)
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
