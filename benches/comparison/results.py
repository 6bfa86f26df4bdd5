"""benches/RESULTS.md and its chart, from the measurements of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .measure import Measured


@dataclass
class Section:
    """One comparison: the agent's row against its peers."""

    title: str
    about: str
    rows: list[Measured]
    agent: str
    # Bytes each run moves, for a throughput column, in MiB/s or MB/s.
    throughput_bytes: int | None = None
    throughput_unit: str = "MiB/s"

    def row(self, name: str) -> Measured:
        return next(r for r in self.rows if r.name == name)

    def ratio(self, peer: str, agent: str | None = None) -> float:
        """The agent's median time over `peer`'s: below 1 is faster."""
        return self.row(agent or self.agent).median / self.row(peer).median


@dataclass
class Target:
    """A target of issue 8 or 15, as measured: met when `measured` is on the right side of `limit`."""

    what: str
    measured: float
    limit: float
    unit: str
    at_least: bool = False
    # What bounds it, when it is missed: the profile's verdict.
    bound: str = ""

    @property
    def met(self) -> bool:
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit

    def shown(self, value: float) -> str:
        if self.unit == "×":
            return f"{value:.2f}×"
        if self.unit == "ms":
            return f"{value:+.2f} ms"
        return f"{value:,.1f} {self.unit}"


@dataclass
class Bar:
    """One bar of the chart: the agent's time over a peer's, and the target line if there is one."""

    label: str
    ratio: float
    target: float | None = None


@dataclass
class Report:
    title: str
    sections: list[Section]
    targets: list[Target]
    bars: list[Bar]
    machine: list[tuple[str, str]]
    versions: list[tuple[str, str]]
    how: list[str] = field(default_factory=list)
    notes: str = ""
    # What bounds each result: benches/comparison/analysis.md, written from profiles.
    analysis: str = ""


def _time(seconds: float) -> str:
    if seconds < 0.1:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 10:
        return f"{seconds * 1000:,.0f} ms"
    return f"{seconds:.2f} s"


def _cell(text: str) -> str:
    """Text for a Markdown table cell, where a bare `|` would end the cell."""
    return text.replace("|", "\\|")


def _mib(kib: int | None) -> str:
    return "" if kib is None else f"{kib / 1024:.1f} MiB"


_UNITS = {"MiB/s": 1 << 20, "MB/s": 1_000_000}


def _cpu(row: Measured) -> str:
    if row.cpu_seconds is None:
        return ""
    server = "" if row.server_cpu_seconds is None else f" + {row.server_cpu_seconds:.1f} s"
    return f"{row.cpu_seconds:.1f} s{server}"


def section_markdown(section: Section) -> str:
    agent = section.row(section.agent)
    head = "| command | median | min – max | runs | agent ÷ this |"
    rule = "|---|---:|---:|---:|---:|"
    if section.throughput_bytes is not None:
        head += " throughput |"
        rule += "---:|"
    head += " peak RSS |"
    rule += "---:|"
    with_cpu = any(row.cpu_seconds is not None for row in section.rows)
    if with_cpu:
        with_server = any(row.server_cpu_seconds is not None for row in section.rows)
        head += " CPU: command + Azurite |" if with_server else " CPU |"
        rule += "---:|"
    lines = [f"### {section.title}", "", section.about, "", head, rule]
    for row in section.rows:
        ratio = "—" if row is agent else f"{agent.median / row.median:.2f}×"
        cells = [
            f"`{row.name}`" if row is agent else _cell(row.name),
            _time(row.median),
            f"{_time(row.low)} – {_time(row.high)}",
            str(len(row.seconds)),
            ratio,
        ]
        if section.throughput_bytes is not None:
            rate = section.throughput_bytes / row.median / _UNITS[section.throughput_unit]
            cells.append(f"{rate:,.0f} {section.throughput_unit}")
        cells.append(_mib(row.peak_rss_kib))
        if with_cpu:
            cells.append(_cpu(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def targets_markdown(targets: list[Target]) -> str:
    lines = ["| target | limit | measured | met |", "|---|---:|---:|:---:|"]
    for target in targets:
        limit = ("≥ " if target.at_least else "≤ ") + target.shown(target.limit)
        met = "yes" if target.met else "**no**"
        lines.append(f"| {_cell(target.what)} | {limit} | {target.shown(target.measured)} | {met} |")
    missed = [t for t in targets if not t.met and t.bound]
    if missed:
        lines += ["", "What bounds the targets missed:", ""]
        lines += [f"- **{t.what}:** {t.bound}" for t in missed]
    return "\n".join(lines) + "\n"


def write_markdown(report: Report, path: Path, chart_name: str) -> None:
    parts = [
        f"# {report.title}",
        "",
        report.notes,
        "",
        f"![agent time over peer time]({chart_name})",
        "",
        "## Targets",
        "",
        targets_markdown(report.targets),
        "## What bounds each result",
        "",
        report.analysis,
        "## Measurements",
        "",
        "Times are wall-clock medians of all runs; `agent ÷ this` is the agent's median over the row's "
        "(below 1: the agent is faster). Peak RSS is `/usr/bin/time -v`'s maximum resident set of the "
        "hungriest process of the command (for a pipeline, its largest member), from one separate run.",
        "",
    ]
    parts += [section_markdown(s) for s in report.sections]
    parts += ["## How it was run", ""] + [f"- {line}" for line in report.how] + [""]
    parts += ["## Machine", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report.machine] + [""]
    parts += ["## Versions", "", "| | |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in report.versions]
    path.write_text("\n".join(parts) + "\n")


def write_chart(bars: list[Bar], path: Path, title: str) -> None:
    """A horizontal bar per comparison, on a log scale around 1, with each target as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low = min([b.ratio for b in bars] + [b.target for b in bars if b.target is not None]) / 1.6
    high = max([b.ratio for b in bars] + [1.0]) * 1.6
    figure, axes = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.6), dpi=110)
    positions = list(range(len(bars)))[::-1]
    for y, bar in zip(positions, bars, strict=True):
        if bar.target is None:
            color = "#8c8c8c"
        elif bar.ratio <= bar.target:
            color = "#2a9d5b"
        else:
            color = "#d1495b"
        # On a log axis a bar cannot start at 0: it starts at the left edge.
        axes.barh(y, bar.ratio - low, left=low, color=color, height=0.6)
        # The label goes right of both the bar and its target tick, so neither hides it.
        axes.text(max(bar.ratio, bar.target or 0) * 1.05, y, f"{bar.ratio:.2f}×", va="center", fontsize=8)
        if bar.target is not None:
            axes.plot([bar.target, bar.target], [y - 0.38, y + 0.38], color="black", linewidth=1.6)
    axes.axvline(1.0, color="#444444", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_xlim(low, high)
    axes.set_yticks(positions, [b.label for b in bars], fontsize=8)
    axes.set_xlabel("agent time ÷ peer time (log scale; left of 1 the agent is faster; black tick: target)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
