"""The Airflow half of `data-platform run-local`, in a process of its own so that Airflow is
imported with the run's own AIRFLOW_HOME (its SQLite database), as `airflow dags test` would.

    python -m data_platform.local.dag_run DAG_FILE [DAG_ID]

Loads the file as a default DAG processor does (safe mode), starts a local SFTP server for each
SFTP connection of the DAG that is not configured, runs one DAG run with `dag.test()` (Airflow's
own scheduling loop, retries and XComs; pod tasks go to the local runner configured in the
environment) and prints the report. Airflow's own log goes to `$AIRFLOW_HOME/run.log`.
Exit status: 0 when the run succeeded, 1 when it failed, 2 when the DAG did not load.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

EXIT_FAILED = 1
EXIT_NOT_LOADED = 2


def main(argv: list[str]) -> int:
    dag_file, dag_id = Path(argv[0]), (argv[1] if len(argv) > 1 else None)
    home = Path(os.environ["AIRFLOW_HOME"])
    report = _console()

    def out(line: str) -> None:
        print(line, file=report, flush=True)

    from airflow.dag_processing.dagbag import DagBag

    from data_platform.local.services import running_sftp_server
    from data_platform.local.settings import local_settings
    from data_platform.sftp_upload import SftpUploadOperator

    bag: Any = DagBag(dag_folder=str(dag_file), safe_mode=True)
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            out(f"{path} did not load:\n{error}")
        return EXIT_NOT_LOADED
    if not bag.dags:
        out(f"{dag_file} defines no DAG (a DAG file must contain the words 'airflow' and 'dag')")
        return EXIT_NOT_LOADED
    if dag_id is None:
        if len(bag.dags) > 1:
            out(f"{dag_file} defines several DAGs ({', '.join(sorted(bag.dags))}): name one with --dag-id")
            return EXIT_NOT_LOADED
        dag_id = next(iter(bag.dags))
    dag = bag.dags[dag_id]
    settings = local_settings()
    assert settings is not None, "run-local sets AIRFLOW__DATA_PLATFORM__LOCAL_RUNNER"

    with ExitStack() as stack:
        sftp_roots: list[tuple[str, Any]] = []
        for conn_id in sorted({t.sftp_conn_id for t in dag.tasks if isinstance(t, SftpUploadOperator)}):
            variable = f"AIRFLOW_CONN_{conn_id.upper()}"
            if variable in os.environ:
                continue
            out(f"-- starting a local SFTP server (sshd) for connection {conn_id!r}")
            server = stack.enter_context(running_sftp_server(home.parent / f"sftp-{conn_id}"))
            os.environ[variable] = server.connection_json()
            sftp_roots.append((conn_id, server))
            out(f"   sftp://{server.user}@{server.host}:{server.port}/ is {server.root} on this machine")
        out(f"-- running DAG {dag_id} once through Airflow (dag.test; Airflow's log: {home / 'run.log'})")
        # Airflow 3.3.2's dag.test() fails when it marks the run done if the DAG has a
        # DeadlineAlert (it looks the alert up by a dict instead of its id); a run deadline
        # is no concern of a local run, so it is not armed.
        dag.deadline = None
        try:
            run = dag.test()
        except Exception:
            out(f"Airflow failed while running the DAG; the end of its log ({home / 'run.log'}):")
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            for line in (home / "run.log").read_text(errors="replace").splitlines()[-15:]:
                out(f"  | {line}")
            return EXIT_FAILED
        status = _report(out, run, settings.root)
        for conn_id, server in sftp_roots:
            for path in sorted(p for p in server.root.rglob("*") if p.is_file()):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                remote = "/" + str(path.relative_to(server.root))
                out(f"-- on the SFTP server of {conn_id!r}: {remote} (here: {path}) sha256 {digest}")
    return status


def _report(out: Any, run: Any, root: Path) -> int:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from data_platform.local.report import pod_directory, report_task

    with create_session() as session:
        instances = sorted(run.get_task_instances(session=session),
                           key=lambda ti: (ti.start_date is None, ti.start_date, ti.task_id))  # fmt: skip
        for ti in instances:
            rows = session.scalars(
                XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=ti.task_id,
                                   map_indexes=ti.map_index)
            ).all()  # fmt: skip
            xcom = {row.key: XComModel.deserialize_value(row) for row in rows}  # type: ignore[attr-defined]
            directory = pod_directory(root, run.dag_id, run.run_id, ti.task_id, ti.map_index)
            report_task(out, ti.task_id, str(ti.state), ti.try_number, directory, xcom)
        state = str(run.state)
    out(f"== DAG run {run.run_id}: {state}")
    return 0 if state == "success" else EXIT_FAILED


def _console() -> TextIO:
    """The report goes to the original stdout; everything else Airflow prints goes to its log."""
    console = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open(Path(os.environ["AIRFLOW_HOME"]) / "run.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    return console


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
