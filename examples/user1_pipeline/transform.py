"""Transforms validate's rows into out.csv and returns where it is and what it holds.

`/data/valid.csv` is a declared input (validate's output, downloaded and sha256-checked by the
platform before this script starts); `/data/out.csv` a declared output (uploaded after it exits 0).
"""

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

# /data in the pod. Run by the local runner's process back-end (no container), the pod's /data is
# the directory $DATA_PLATFORM_LOCAL_ROOT/data of the local run; OUTPUT_DIR overrides both.
data_dir = Path(os.environ.get("OUTPUT_DIR") or os.environ.get("DATA_PLATFORM_LOCAL_ROOT", "") + "/data")
data_dir.mkdir(parents=True, exist_ok=True)
with (data_dir / "valid.csv").open(newline="") as handle:
    rows = list(csv.DictReader(handle))
target = data_dir / "out.csv"
with target.open("w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["id", "amount_cents"])
    for row in rows:
        writer.writerow([row["id"], round(float(row["amount"]) * 100)])
digest = hashlib.sha256(target.read_bytes()).hexdigest()
print(f"transform: wrote {target} sha256={digest}")
print("transform: done", file=sys.stderr)
with open(os.environ["TASK_AGENT_RETURN_FILE"], "w") as out:
    json.dump({"output": str(target), "sha256": digest}, out)
