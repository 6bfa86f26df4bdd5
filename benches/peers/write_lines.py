"""A chatty task: writes BYTES of log lines to stdout, the same bytes on every run.

One line in 400 carries one of the values in --secrets-file (one per line), so an agent told
to mask them has real matches to replace. The 1 MiB block is built once and written again and
again, so the writer itself costs little next to whoever reads the pipe.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

BLOCK = 1 << 20


def block(secrets: list[str]) -> bytes:
    rng = random.Random("task-agent bench lines")
    lines: list[bytes] = []
    size = 0
    number = 0
    while size < BLOCK:
        number += 1
        level = rng.choice(("INFO", "INFO", "INFO", "DEBUG", "WARNING"))
        rows, took = rng.randint(0, 10**6), rng.random()
        line = f"2026-11-26T12:00:{number % 60:02d}Z {level} batch={number} rows={rows} took={took:.4f}s"
        if secrets and number % 400 == 0:
            line += f" connecting with {secrets[number // 400 % len(secrets)]}"
        encoded = line.encode() + b"\n"
        lines.append(encoded)
        size += len(encoded)
    data = b"".join(lines)
    # End the block on a line boundary so repeats stay whole lines.
    return data[: data.rfind(b"\n", 0, BLOCK) + 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, required=True, help="how much to write")
    parser.add_argument("--secrets-file", type=Path, help="values to mix in, one per line")
    args = parser.parse_args()
    secrets = args.secrets_file.read_text().split() if args.secrets_file else []
    data = block(secrets)
    out = sys.stdout.buffer
    left = args.bytes
    while left >= len(data):
        out.write(data)
        left -= len(data)
    tail = data[:left]
    out.write(tail[: tail.rfind(b"\n") + 1] if b"\n" in tail else b"")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
