"""`data-platform stubs DAG_FOLDER`: one generated `.py` stub per `pipelines/<tenant>/<name>.yaml`,
and none for a deleted one. Run where the DAG folder is assembled (the deployment's git-sync repo
CI), after tenants' YAML files are merged: tenants never write Python."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write a DAG stub next to every pipelines/<tenant>/<name>.yaml, remove stale ones"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dag_folder", type=Path, help="the DAG folder holding pipelines/")


def run(options: argparse.Namespace) -> int:
    if not options.dag_folder.is_dir():
        print(f"data-platform stubs: {options.dag_folder} is not a directory", file=sys.stderr)
        return 2
    from data_platform.pipelines.stubs import sync_stubs

    changes = sync_stubs(options.dag_folder)
    for path in changes.written:
        print(f"wrote {path}")
    for path in changes.removed:
        print(f"removed {path}")
    return 0
