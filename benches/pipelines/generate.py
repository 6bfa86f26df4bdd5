"""Generates TENANTS x 3 pipeline files, their stubs and a policy registering every tenant:
`python generate.py DAG_FOLDER POLICY_FILE --tenants 1000`. Used by dag_processor.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from data_platform.pipelines.stubs import sync_stubs

REPO = Path(__file__).resolve().parents[2]
#: Three shapes per tenant: the seed, a five-task fan-out/fan-in with options, a glue pipeline.
PIPELINES = {
    "daily": """apiVersion: data-platform/v1
kind: Pipeline
schedule: "@daily"
snapshot: https://{t}data.blob.core.windows.net/snapshots/daily.tar.gz
tasks:
  validate: {{type: aks_python, script: validate.py, outputs: [/data/valid.csv]}}
  transform: {{type: aks_python, script: transform.py, upstream: [validate], inputs: [/data/valid.csv],
              outputs: [/data/out.csv]}}
  upload: {{type: sftp_upload, upstream: [transform], source: /data/out.csv, remote_path: /in/out.csv,
           conn_id: sftp}}
""",
    "hourly": """apiVersion: data-platform/v1
kind: Pipeline
schedule: "0 * * * *"
tags: [hourly]
retries: 1
snapshot: {{uri: "https://{t}data.blob.core.windows.net/snapshots/hourly.tar.gz", sha256: "{sha}"}}
tasks:
  start: {{type: dummy}}
  part_a: {{type: aks_python, script: part.py, args: ["a", "{{{{ ds }}}}"], upstream: [start], size: medium,
           secrets: {{DB_PASSWORD: {t}-kv/db}}, env: {{MODE: full}}, timeout: 45m, outputs: [/data/a]}}
  part_b: {{type: aks_python, script: part.py, args: ["b"], upstream: [start], outputs: [/data/b]}}
  join: {{type: aks_python, script: join.py, upstream: [part_a, part_b], inputs: [/data/a, /data/b]}}
  done: {{type: dummy, upstream: [join], trigger_rule: all_done}}
""",
    "notify": """apiVersion: data-platform/v1
kind: Pipeline
schedule: null
tasks:
  note: {{type: python, callable: log_message, op_kwargs: {{message: hello}}}}
""",
}


def generate(folder: Path, policy_file: Path, tenants: int) -> list[Path]:
    policy = yaml.safe_load((REPO / "config" / "platform-policy.yaml").read_text())
    policy["tenants"] = {}
    files = []
    for index in range(tenants):
        tenant = f"t{index:04d}"
        policy["tenants"][tenant] = {
            "allowed_vaults": [f"{tenant}-kv"],
            "storage": [f"https://{tenant}data.blob.core.windows.net/snapshots"],
            "artifacts": f"https://{tenant}data.blob.core.windows.net/runs",
            "size_classes": ["small", "medium"],
            "images": ["python"],
        }
        for name, text in PIPELINES.items():
            path = folder / "pipelines" / tenant / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text.format(t=tenant, sha="ab" * 32), encoding="utf-8")
            files.append(path)
    policy_file.write_text(yaml.safe_dump(policy), encoding="utf-8")
    sync_stubs(folder)
    return files


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("policy", type=Path)
    parser.add_argument("--tenants", type=int, default=1000)
    options = parser.parse_args()
    print(len(generate(options.folder, options.policy, options.tenants)), "pipeline files")
