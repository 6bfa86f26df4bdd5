"""Timing with hyperfine, interleaved, and peak memory with /usr/bin/time -v.

hyperfine runs each command's repetitions back to back. To let slow drift of the machine (other
tenants, thermal, page cache) fall on every command alike, each round here is one hyperfine call
over all the commands, and the rounds rotate their order; the samples of all rounds are pooled.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Command:
    """One row of a comparison: a label and the command line hyperfine runs."""

    name: str
    line: str


@dataclass
class Measured:
    name: str
    line: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_kib: int | None = None
    # CPU seconds (user + system) of the command, and of the server it talks to, in one run.
    cpu_seconds: float | None = None
    server_cpu_seconds: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def low(self) -> float:
        return min(self.seconds)

    @property
    def high(self) -> float:
        return max(self.seconds)


def interleaved(
    commands: list[Command],
    *,
    rounds: int,
    runs: int,
    scratch: Path,
    env: Mapping[str, str],
    prepare: str | None = None,
    shell: bool = True,
    warmup: int = 0,
    before_round: Callable[[], None] | None = None,
) -> list[Measured]:
    """Times `commands` in `rounds` rotating rounds of `runs` runs each; returns them in their order.
    `before_round` runs before each round, untimed."""
    measured = {c.name: Measured(c.name, c.line) for c in commands}
    export = scratch / "hyperfine.json"
    for round_index in range(rounds):
        shift = round_index % len(commands)
        order = commands[shift:] + commands[:shift]
        argv = ["hyperfine", "--style", "none", "--runs", str(runs), "--export-json", str(export)]
        argv += ["--warmup", str(warmup if round_index == 0 else 0)]
        if not shell:
            argv.append("--shell=none")
        if prepare is not None:
            argv += ["--prepare", prepare]
        for command in order:
            argv += ["--command-name", command.name, command.line]
        print(f"  round {round_index + 1}/{rounds}", file=sys.stderr, flush=True)
        if before_round is not None:
            before_round()
        subprocess.run(argv, check=True, env=dict(env), stdout=subprocess.DEVNULL)
        for result in json.loads(export.read_text())["results"]:
            measured[result["command"]].seconds.extend(result["times"])
    return [measured[c.name] for c in commands]


_MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
_CPU = re.compile(r"(?:User|System) time \(seconds\): ([\d.]+)")


@dataclass(frozen=True)
class Usage:
    peak_rss_kib: int
    cpu_seconds: float


def usage(line: str, env: Mapping[str, str], prepare: str | None = None) -> Usage:
    """Runs `line` once under `/usr/bin/time -v`: the largest resident set of any of its processes
    (for a pipeline, its hungriest member), in KiB, and the CPU time of all of them."""
    if prepare is not None:
        subprocess.run(["bash", "-c", prepare], check=True, env=dict(env))
    done = subprocess.run(
        ["/usr/bin/time", "-v", "bash", "-c", line],
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"`{line}` failed with exit code {done.returncode}:\n{done.stderr[-4000:]}")
    found = _MAX_RSS.findall(done.stderr)
    if not found:
        raise RuntimeError(f"/usr/bin/time -v printed no peak RSS for `{line}`:\n{done.stderr[-2000:]}")
    return Usage(int(found[-1]), sum(float(t) for t in _CPU.findall(done.stderr)[-2:]))


def peak_rss_kib(line: str, env: Mapping[str, str], prepare: str | None = None) -> int:
    """Runs `line` once under `/usr/bin/time -v` and returns the largest resident set of any of its
    processes (for a pipeline, its hungriest member), in KiB."""
    return usage(line, env, prepare).peak_rss_kib
