"""`data-platform validate PATH…`: what the DAG processor would say about pipeline files, for a
tenant's CI, with no Airflow database or network: the YAML, the schema, the policy for the tenant
the path implies (`pipelines/<tenant>/<name>.yaml`), cycles, unknown upstream tasks, ambiguous
inputs, and the DAG's own checks and serialization. Exit 0: all valid; 1: a file is invalid;
2: usage (no such path, bad option)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HELP = "check pipeline files as the DAG processor would (file:line:col: error: …)"
#: See data_platform.commands.main.
FAST_EXIT = True
FORMATS = ("text", "github", "json")


def _files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        else:
            yield path


def _github(value: str, *, property_value: bool = False) -> str:
    """GitHub's workflow-command escaping (a message may span lines)."""
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        value = value.replace(":", "%3A").replace(",", "%2C")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="pipeline files or folders")
    parser.add_argument("--format", choices=FORMATS, default="text", help="text (default), github, json")
    parser.add_argument(
        "--policy", type=Path, help="the platform policy (default: $DATA_PLATFORM_POLICY_FILE)"
    )


def run(options: argparse.Namespace) -> int:
    missing = [str(path) for path in options.paths if not path.exists()]
    if missing:
        print(f"data-platform validate: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    # Importing Airflow writes a default airflow.cfg into $AIRFLOW_HOME: not into a CI's home.
    home = None
    if "AIRFLOW_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="data-platform-validate-")
        os.environ["AIRFLOW_HOME"] = home
    try:
        return _validate(list(_files(options.paths)), options.format, options.policy)
    finally:
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)


def _validate(files: list[Path], output: str, policy_file: Path | None) -> int:
    from data_platform.pipelines.check import check_file
    from data_platform.policy import PolicyError, load_policy

    try:
        policy = load_policy(policy_file)
    except PolicyError as error:
        print(f"data-platform validate: {error}", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    for path in files:
        problems = check_file(path, policy)
        results.append({"file": str(path), "valid": not problems, "problems": problems})
    invalid = sum(not result["valid"] for result in results)
    if output == "json":
        print(json.dumps({"valid": invalid == 0, "files": [
            {**r, "problems": [p.__dict__ for p in r["problems"]]} for r in results
        ]}, indent=2))  # fmt: skip
    else:
        for result in results:
            for problem in result["problems"]:
                if output == "github":
                    message = f"{problem.field}: {problem.message}" if problem.field else problem.message
                    print(
                        f"::error file={_github(problem.file, property_value=True)},line={problem.line},"
                        f"col={problem.column},title=pipeline::{_github(message)}"
                    )
                else:
                    print(problem)
        print(f"{len(results) - invalid} of {len(results)} pipeline files valid", file=sys.stderr)
    return 1 if invalid else 0
