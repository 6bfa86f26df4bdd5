#!/bin/sh
# A small task: prints progress, reports a warning on stderr, and returns a value to Airflow
# through the file task-agent names in TASK_AGENT_RETURN_FILE.
set -eu
echo "hello from $(pwd)"
for step in 1 2 3; do
  echo "step $step of 3"
done
echo "warning: this is only a demo" >&2
printf '{"rows": %d, "status": "%s"}\n' 3 ok > "$TASK_AGENT_RETURN_FILE"
