"""Airflow's real DAG processor (`airflow dag-processor`, default settings, SQLite) over generated
pipelines: `python dag_processor.py --tenants 1000` (3 pipelines each).

Reports: seconds from start until every DAG is serialized (the first full parse cycle), the
processor's peak memory (its whole process tree, sampled from /proc every 0.2 s), seconds until
a changed file's new schedule is in the database, and that a file broken afterwards becomes one
import error while every other DAG stays. Not run in CI at 1,000 tenants (minutes); scripts/test
runs it with --tenants 30.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import generate

AIRFLOW = Path(sys.executable).parent / "airflow"
#: What the chart's airflow_local_settings.py adds: every process of Airflow (the DAG processor's
#: manager included) imports the loader once, so the parsing children it forks inherit it.
PRELOAD = "import data_platform.pipelines.loader  # noqa: F401\n"


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and its descendants (the manager and its parsing children)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def count(db: Path, sql: str, *args: object) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return int(connection.execute(sql, args).fetchone()[0])
    except sqlite3.OperationalError:
        return -1


def wait(condition: object, process: subprocess.Popen[bytes], peak: list[int], limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        peak[0] = max(peak[0], tree_rss(process.pid))
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        if process.poll() is not None:
            raise RuntimeError("the DAG processor exited")
        time.sleep(0.2)
    raise TimeoutError(f"not within {limit} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument(
        "--preload",
        action="store_true",
        help="the chart's airflow_local_settings.py: import data_platform's loader once in the manager",
    )
    parser.add_argument("--limit", type=float, default=900, help="seconds to wait for each step")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pipelines-bench-"))
    folder, policy = work / "dags", work / "policy.yaml"
    files = generate(folder, policy, options.tenants)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(work / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DATA_PLATFORM_POLICY_FILE": str(policy),
    }
    if options.preload:
        (work / "home" / "config").mkdir(parents=True)
        (work / "home" / "config" / "airflow_local_settings.py").write_text(PRELOAD, encoding="utf-8")
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    db = work / "home" / "airflow.db"
    log = (work / "dag-processor.log").open("wb")
    process = subprocess.Popen(
        [AIRFLOW, "dag-processor"], env=env, stdout=log, stderr=log, start_new_session=True
    )
    peak = [0]
    try:
        expected = len(files)
        first = wait(
            lambda: count(db, "select count(*) from serialized_dag") >= expected, process, peak, options.limit
        )
        errors = count(db, "select count(*) from import_error")
        changed = files[0]
        dag_id = f"{changed.parent.name}_{changed.stem}"
        changed.write_text(changed.read_text().replace('"@daily"', '"@weekly"'))
        edited = time.monotonic()
        weekly = "select count(*) from dag where dag_id = ? and timetable_summary = '0 0 * * 0'"
        wait(lambda: count(db, weekly, dag_id) == 1, process, peak, options.limit)
        change_seen = time.monotonic() - edited
        broken = files[1]
        broken.write_text(broken.read_text().replace("script: part.py", "script: part.py, size: huge", 1))
        wait(lambda: count(db, "select count(*) from import_error") == 1, process, peak, options.limit)
        healthy = count(db, "select count(*) from dag where is_stale = 0")
        message = ""
        with sqlite3.connect(db) as connection:
            message = connection.execute("select filename, stacktrace from import_error").fetchone()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: only what this script started
            process.wait()
    print(json.dumps({
        "tenants": options.tenants, "preload": options.preload, "dags": expected,
        "first_cycle_s": round(first, 1),
        "import_errors_after_first_cycle": errors, "change_visible_s": round(change_seen, 1),
        "peak_rss_mib": round(peak[0] / 2**20), "healthy_dags_with_one_broken": healthy,
        "import_error": [message[0], message[1].strip().splitlines()[-1]],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
