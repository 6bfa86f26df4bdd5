"""Validates the day's input and returns its row count to Airflow (through task-agent)."""

import csv
import io
import json
import os
import sys

SAMPLE = "id,amount\n1,10.5\n2,7.25\n3,12.0\n"

rows = list(csv.DictReader(io.StringIO(os.environ.get("INPUT_CSV", SAMPLE))))
bad = [row for row in rows if float(row["amount"]) < 0]
if bad:
    print(f"validate: {len(bad)} rows with a negative amount", file=sys.stderr)
    sys.exit(1)
print(f"validate: {len(rows)} rows ok")
with open(os.environ["TASK_AGENT_RETURN_FILE"], "w") as out:
    json.dump({"rows": len(rows)}, out)
