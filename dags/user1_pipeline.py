"""Airflow DAG: user1's daily pipeline: validate, transform, upload to the partner. The seed's example.

The first line names both "Airflow" and "DAG" on purpose: with its default
`[core] dag_discovery_safe_mode = True`, Airflow parses only files that contain both words.

The DAG says what runs and in what order; the platform policy decides images, memory, retries,
secrets and logging. The snapshot is the tenant's code, packed and published with
`task-agent pack` / `task-agent publish`.
"""

import os

from data_platform import CustomerDAGFactory, PlatformTaskFactory, Snapshot

# Where CI published this pipeline's code (overridable so the local simulation can use Azurite).
snapshot = Snapshot(
    uri=os.environ.get(
        "USER1_PIPELINE_SNAPSHOT",
        "https://user1data.blob.core.windows.net/snapshots/user1_pipeline/2026-11-26.tar.gz",
    ),
    sha256=os.environ.get("USER1_PIPELINE_SNAPSHOT_SHA256") or None,
)

dag = CustomerDAGFactory.create("user1_pipeline", tenant="user1", schedule="@daily")
tasks = PlatformTaskFactory(dag)
# Each task runs in its own pod: files pass between them through user1's storage. A declared
# output is uploaded to the run's artifacts after the script succeeds; an input naming an upstream
# task's output is downloaded (sha256-checked) before the script starts; `upload` streams
# transform's /data/out.csv blob to the partner, checked against the digest transform recorded.
validate = tasks.aks_python("validate", snapshot, "validate.py", outputs=["/data/valid.csv"])
transform = tasks.aks_python(
    "transform", snapshot, "transform.py", inputs=["/data/valid.csv"], outputs=["/data/out.csv"]
)
upload = tasks.sftp_upload("upload", "/data/out.csv", "/incoming/out.csv", "sftp")
validate >> transform >> upload
