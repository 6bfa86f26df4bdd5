"""Deterministic inputs: the two snapshots, the outputs a task uploads and the lines a chatty
task prints.

Everything comes from seeded generators, so every run (and every machine) measures the same bytes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

_WORDS = [
    "record",
    "event",
    "batch",
    "window",
    "partition",
    "schema",
    "column",
    "value",
    "offset",
    "cursor",
    "tenant",
    "query",
    "result",
    "buffer",
    "payload",
    "stream",
    "source",
    "target",
    "config",
    "client",
    "session",
    "retry",
    "timeout",
    "metric",
    "label",
    "span",
]


@dataclass(frozen=True)
class SnapshotShape:
    """How a generated snapshot looks: `files` files, `raw_bytes` in all, `random_share` of them random."""

    name: str
    files: int
    raw_bytes: int
    random_share: float


def small(quick: bool) -> SnapshotShape:
    """Many source-like files: a typical Python project with its vendored packages."""
    return (
        SnapshotShape("small", 200, 2_480_000, 0.0)
        if quick
        else SnapshotShape("small", 5_000, 62_000_000, 0.0)
    )


def big(quick: bool) -> SnapshotShape:
    """A few large files, half compressible text and half random bytes (models, parquet samples)."""
    if quick:
        return SnapshotShape("big", 5, 8_000_000, 0.5)
    return SnapshotShape("big", 5, 200_000_000, 0.5)


def upload_file_bytes(quick: bool) -> int:
    """The one large output file: a model or a parquet file a task writes."""
    return 16 << 20 if quick else 1 << 30


def write_random_file(path: Path, size: int, seed: str) -> str:
    """Writes `size` seeded random bytes (nothing to gain from compression) and returns their sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left > 0:
            chunk = rng.randbytes(min(left, 16 << 20))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _source_lines(rng: random.Random, count: int) -> list[bytes]:
    lines = []
    for i in range(count):
        a, b, c = rng.choice(_WORDS), rng.choice(_WORDS), rng.choice(_WORDS)
        indent = " " * (4 * rng.randint(0, 3))
        template = rng.randint(0, 4)
        if template == 0:
            line = f"{indent}def {a}_{b}(self, {c}: int = {i % 97}) -> dict[str, {c.title()}]:"
        elif template == 1:
            line = f"{indent}{a}_{c} = self.{b}.get({c!r}, {rng.randint(0, 9999)})  # keep the {a} {b}"
        elif template == 2:
            line = f"{indent}if {a} is None or len({b}) > {rng.randint(1, 512)}:"
        elif template == 3:
            line = f'{indent}raise ValueError(f"{a} {b}: expected {c}, got {{{a}!r}}")'
        else:
            line = f"{indent}return {{'{a}': {b}, '{c}': [{rng.randint(0, 99)}, {rng.randint(0, 99)}]}}"
        lines.append(line.encode() + b"\n")
    return lines


def _text(rng: random.Random, lines: list[bytes], size: int) -> bytes:
    parts: list[bytes] = []
    filled = 0
    while filled < size:
        line = rng.choice(lines)
        parts.append(line)
        filled += len(line)
    return b"".join(parts)[:size]


def write_tree(shape: SnapshotShape, root: Path) -> Manifest:
    """Writes the snapshot's files under `root` and returns what an unpacked copy must hold."""
    rng = random.Random(f"task-agent bench {shape.name}")
    lines = _source_lines(rng, 20_000)
    mean = shape.raw_bytes // shape.files
    manifest = Manifest()
    for index in range(shape.files):
        if shape.random_share > 0:
            relative = Path("data") / f"part-{index:02d}.bin"
            size = mean
        else:
            relative = Path(f"pkg_{index // 100:02d}") / f"module_{index:05d}.py"
            # Sizes spread between a fifth and nine fifths of the mean, so the total stays near it.
            size = rng.randint(mean // 5, mean * 9 // 5)
        random_bytes = int(size * shape.random_share)
        data = _text(rng, lines, size - random_bytes) + rng.randbytes(random_bytes)
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        manifest.add(relative.as_posix(), data)
    return manifest


@dataclass
class Manifest:
    """The files a snapshot unpacks to: their count, total size and one digest over paths and contents."""

    files: int = 0
    raw_bytes: int = 0
    _entries: dict[str, str] | None = None
    _sizes: dict[str, int] | None = None

    def add(self, relative: str, data: bytes) -> None:
        if self._entries is None or self._sizes is None:
            self._entries, self._sizes = {}, {}
        self._entries[relative] = hashlib.sha256(data).hexdigest()
        self._sizes[relative] = len(data)
        self.files += 1
        self.raw_bytes += len(data)

    def sizes(self) -> dict[str, int]:
        """Each file's size by its relative path."""
        return dict(self._sizes or {})

    def sha256sum_digest(self) -> str:
        """The agent's digest of a directory output: the sha256 of `sha256sum`'s lines for its
        files, sorted by path (docs/data-between-tasks.md)."""
        entries = self._entries or {}
        text = "".join(f"{entries[path]}  {path}\n" for path in sorted(entries, key=str.encode))
        return hashlib.sha256(text.encode()).hexdigest()

    def digest(self) -> str:
        entries = self._entries or {}
        text = "".join(f"{path}\0{entries[path]}\n" for path in sorted(entries))
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def of_directory(cls, root: Path) -> Manifest:
        manifest = cls()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            manifest.add(path.relative_to(root).as_posix(), path.read_bytes())
        return manifest


def write_secrets_file(values: list[str], path: Path) -> None:
    """The values the line writer mixes into its output, so masking has real work to do."""
    path.write_text("".join(f"{value}\n" for value in values))
