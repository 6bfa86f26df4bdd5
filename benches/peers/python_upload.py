"""The usual Python platform approach to publishing a task's output: Microsoft's
azure-storage-blob client.

    python_upload.py [--md5] SOURCE CONTAINER_SAS_URL PREFIX

A file becomes the blob PREFIX/NAME, uploaded by the client's own parallel block upload
(`max_concurrency=8`, the agent's default parallelism). A directory becomes one blob per file
under PREFIX/NAME/, each one `upload_blob` call, 16 at a time on a thread pool (the agent keeps
16 small files in flight), all through one container client and so one connection pool.
`--md5` asks the client to send every request's Content-MD5 (`validate_content=True`), which the
service checks, as the agent does.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azure.storage.blob import ContainerClient

FILE_CONCURRENCY = 8
THREADS = 16


def upload(container: ContainerClient, path: Path, name: str, md5: bool, concurrency: int = 1) -> None:
    with path.open("rb") as data:
        container.get_blob_client(name).upload_blob(
            data, overwrite=True, max_concurrency=concurrency, validate_content=md5
        )


def main() -> int:
    args = sys.argv[1:]
    md5 = args[0] == "--md5"
    source, url, prefix = Path(args[md5 + 0]), args[md5 + 1], args[md5 + 2]
    container = ContainerClient.from_container_url(url)
    root = f"{prefix}/{source.name}"
    if source.is_file():
        upload(container, source, root, md5, FILE_CONCURRENCY)
        return 0
    files = sorted(p for p in source.rglob("*") if p.is_file())
    with ThreadPoolExecutor(THREADS) as pool:
        done = [
            pool.submit(upload, container, path, f"{root}/{path.relative_to(source).as_posix()}", md5)
            for path in files
        ]
        for future in done:
            future.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
