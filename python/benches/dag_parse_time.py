"""How long a DAG file with 50 pod tasks takes to parse: `python benches/dag_parse_time.py [--runs N]`.

Each run is a fresh interpreter, as a DAG processor's parsing child is. Two numbers per run:

- `dag file`: importing the generated DAG file once Airflow and `data_platform` are loaded (what
  every re-parse of the file costs the DAG processor);
- `cold`: the same plus the first import of `data_platform` (its factories, the pod operator and
  the policy file), as in a processor that has not imported it yet.

Airflow's own import is excluded from both: every DAG file pays it, with or without the platform.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO / "config" / "platform-policy.yaml"

#: Run in each fresh interpreter: prints {"cold": seconds, "dag_file": seconds, "tasks": n,
#: "discovered": whether Airflow's default (safe-mode) discovery would parse the file at all}.
_MEASURE = """
import importlib.util, json, sys, time
import airflow.sdk  # Airflow itself: not measured
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator  # noqa: F401
started = time.perf_counter()
import data_platform  # noqa: F401
imported = time.perf_counter()
spec = importlib.util.spec_from_file_location("generated_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
done = time.perf_counter()
# After the clock stops, so the check costs the numbers nothing: a file Airflow's safe-mode
# discovery would skip is never parsed by a DAG processor, and its timing would mean nothing.
from airflow.utils.file import might_contain_dag
discovered = might_contain_dag(sys.argv[1], safe_mode=True)
print(json.dumps({"cold": done - started, "dag_file": done - imported, "tasks": len(module.dag.tasks),
                  "discovered": discovered}))
"""


def generate_dag_file(path: Path, tasks: int = 50, dag_id: str = "generated_pipeline") -> Path:
    """A DAG of `tasks` chained aks_python tasks in varied shapes (sizes, secrets, env, timeouts)."""
    lines = [
        # "Airflow" and "DAG" both in the file, or a default Airflow (safe mode) never parses it.
        '"""Generated Airflow DAG with many pod tasks, for parse-time checks."""',
        "",
        "from data_platform import CustomerDAGFactory, PlatformTaskFactory, Snapshot",
        "",
        "snapshot = Snapshot(",
        '    "https://user1data.blob.core.windows.net/snapshots/generated/2026-11-26.tar.gz",',
        f'    "{"ab" * 32}",',
        ")",
        f'dag = CustomerDAGFactory.create("{dag_id}", tenant="user1", schedule="@daily", tags=["generated"])',
        "tasks = PlatformTaskFactory(dag)",
        "previous = None",
    ]
    for index in range(tasks):
        options = [f'args=["--part", "{index}", "--date", "{{{{ ds }}}}"]']
        if index % 2:
            options.append('size="medium"')
        if index % 3 == 0:
            options.append('secrets={"DB_PASSWORD": "user1-kv/db-password"}')
        if index % 5 == 0:
            options.append('secret_files={"certs/client.pem": "user1-kv/client-cert"}')
        if index % 4 == 0:
            options.append(f'env={{"PART": "{index}", "MODE": "full"}}')
        if index % 7 == 0:
            options.append('timeout="45m"')
        lines += [
            f'task = tasks.aks_python("part_{index:03d}", snapshot, "part.py", {", ".join(options)})',
            "if previous is not None:",
            "    previous >> task",
            "previous = task",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def measure(dag_file: Path, runs: int) -> list[dict[str, float]]:
    home = tempfile.mkdtemp(prefix="airflow-home-")
    env = {
        **os.environ,
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DATA_PLATFORM_POLICY_FILE": str(POLICY_FILE),
    }
    env.pop("DATA_PLATFORM_POD_TEMPLATE_FILE", None)
    results = []
    for _ in range(runs):
        finished = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(dag_file)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(finished.stdout.strip().splitlines()[-1]))
    return results


def _summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{name:>9}: median {statistics.median(ms):7.1f} ms   min {min(ms):7.1f} ms   max {max(ms):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh interpreters to time (default 10)")
    parser.add_argument("--tasks", type=int, default=50, help="aks_python tasks in the DAG (default 50)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dag-parse-") as folder:
        dag_file = generate_dag_file(Path(folder) / "generated_pipeline.py", options.tasks)
        results = measure(dag_file, options.runs)
    assert all(r["tasks"] == options.tasks for r in results)
    assert all(r["discovered"] for r in results), "a default Airflow would skip the generated file"
    print(f"DAG file with {options.tasks} aks_python tasks, {options.runs} fresh interpreters:")
    print(_summary("dag file", [r["dag_file"] for r in results]))
    print(_summary("cold", [r["cold"] for r in results]))
    per_task = statistics.median(r["dag_file"] for r in results) / options.tasks * 1000
    print(f"   per task: {per_task:.2f} ms (median dag file / tasks)")


if __name__ == "__main__":
    main()
