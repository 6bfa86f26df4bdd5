"""What is wrong with a pipeline file, where (`file:line:col`), and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: A file with many mistakes reports the first ones; more would hide them in the UI.
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    #: Where in the document (`tasks.transform.size`), or "" for the file as a whole.
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}:{self.column}: error: {where}{self.message}"


class PipelineError(ValueError):
    """A pipeline file Airflow must not schedule. Its text is every problem, one per line, so the
    import error Airflow shows against the stub names the YAML file, line and column."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems[:MAX_PROBLEMS])
        lines = [str(problem) for problem in self.problems]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"… and {len(problems) - MAX_PROBLEMS} more")
        super().__init__("\n".join(lines))


def dotted(path: Sequence[str | int]) -> str:
    """`tasks.transform.outputs[0]` for ("tasks", "transform", "outputs", 0)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text and ("." in part or "/" in part):
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text
