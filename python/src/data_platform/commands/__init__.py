"""`data-platform COMMAND …`, the console script. One module per command, each with `HELP`,
`add_arguments(parser)` and `run(arguments) -> exit code`; this module only dispatches. Command
modules import only the standard library at the top, so listing them costs nothing and each
command pays only for what it uses. To add a command, add its module to COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

COMMANDS = {
    "validate": "data_platform.commands.validate",
    "stubs": "data_platform.commands.stubs",
    "run-local": "data_platform.commands.run_local",
    "cost": "data_platform.commands.cost",
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="data-platform", description="The data platform's command line.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(module=module)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: the command's; 2 for a usage error (argparse's convention)."""
    arguments = parser().parse_args(argv)
    code: int = arguments.module.run(arguments)
    if argv is None and getattr(arguments.module, "FAST_EXIT", False):
        # From the console script: skip unloading Airflow and the Kubernetes client (half a second
        # a tenant's CI would pay on every call); the command has nothing left to clean up.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
