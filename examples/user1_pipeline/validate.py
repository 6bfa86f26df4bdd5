"""Validates the day's input, writes the valid rows to valid.csv for transform, and returns the row
count to Airflow (through task-agent)."""

import csv
import io
import json
import os
import sys
from pathlib import Path

SAMPLE = "id,amount\n1,10.5\n2,7.25\n3,12.0\n"

rows = list(csv.DictReader(io.StringIO(os.environ.get("INPUT_CSV", SAMPLE))))
bad = [row for row in rows if float(row["amount"]) < 0]
if bad:
    print(f"validate: {len(bad)} rows with a negative amount", file=sys.stderr)
    sys.exit(1)
# A declared output (outputs=["/data/valid.csv"]): the platform uploads it once this script exits 0.
# /data in the pod. Run by the local runner's process back-end (no container), the pod's /data is
# the directory $DATA_PLATFORM_LOCAL_ROOT/data of the local run; OUTPUT_DIR overrides both.
out_dir = Path(os.environ.get("OUTPUT_DIR") or os.environ.get("DATA_PLATFORM_LOCAL_ROOT", "") + "/data")
out_dir.mkdir(parents=True, exist_ok=True)
with (out_dir / "valid.csv").open("w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=["id", "amount"])
    writer.writeheader()
    writer.writerows(rows)
print(f"validate: {len(rows)} rows ok")
with open(os.environ["TASK_AGENT_RETURN_FILE"], "w") as out:
    json.dump({"rows": len(rows)}, out)
