"""Transforms the day's input into out.csv and returns where it is and what it holds."""

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

out_dir = Path(os.environ.get("OUTPUT_DIR", "/data"))
out_dir.mkdir(parents=True, exist_ok=True)
target = out_dir / "out.csv"
with target.open("w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["id", "amount_cents"])
    for row_id, amount in ((1, 10.5), (2, 7.25), (3, 12.0)):
        writer.writerow([row_id, round(amount * 100)])
digest = hashlib.sha256(target.read_bytes()).hexdigest()
print(f"transform: wrote {target} sha256={digest}")
print("transform: done", file=sys.stderr)
with open(os.environ["TASK_AGENT_RETURN_FILE"], "w") as out:
    json.dump({"output": str(target), "sha256": digest}, out)
