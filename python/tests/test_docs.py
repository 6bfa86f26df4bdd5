"""The README and the guides in docs/ do not rot.

- Every shell block marked runnable (a fenced block whose info string is ``sh runnable``) is run
  here, in an empty directory, with bash -euo pipefail, the agent under test and the
  ``data-platform`` command on PATH, and must exit 0.
- Every relative link (and every anchor into a Markdown file) points at something that exists.
- The README stays a front page: at most 250 lines, the two commands first, a diagram, the guides.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCE = re.compile(r"^(```+|~~~+)(.*)$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def blocks(page: Path) -> list[tuple[str, str, int]]:
    """(info string, body, first line number) of every fenced block in the page."""
    found: list[tuple[str, str, int]] = []
    fence: str | None = None
    info, body, start = "", [], 0
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line.strip()) if fence is None else None
        if fence is None and match:
            fence, info, body, start = match.group(1), match.group(2).strip(), [], number
        elif fence is not None and line.strip() == fence:
            found.append((info, "\n".join(body) + "\n", start))
            fence = None
        elif fence is not None:
            body.append(line)
    assert fence is None, f"{page}: a fenced block opened at line {start} is never closed"
    return found


def prose(page: Path) -> str:
    """The page without its fenced blocks, where links and headings are."""
    lines, fence = [], None
    for line in page.read_text(encoding="utf-8").splitlines():
        match = FENCE.match(line.strip())
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and line.strip() == fence:
            fence = None
        elif fence is None:
            lines.append(line)
    return "\n".join(lines)


def runnable() -> list[tuple[Path, str, int]]:
    return [
        (page, body, start)
        for page in PAGES
        for info, body, start in blocks(page)
        if info.split()[:2] == ["sh", "runnable"]
    ]


RUNNABLE = runnable()


def test_the_docs_have_runnable_blocks():
    """A marker lost in an edit would silently stop the test below from testing anything."""
    assert len(RUNNABLE) >= 3
    assert {page.name for page, _, _ in RUNNABLE} >= {"agent.md", "dag-authors.md"}


@pytest.mark.parametrize(
    ("page", "script", "line"), RUNNABLE, ids=[f"{p.relative_to(REPO)}:{n}" for p, _, n in RUNNABLE]
)
def test_runnable_block(page: Path, script: str, line: int, agent_binary: Path, tmp_path: Path):
    venv_bin = Path(sys.executable).parent
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TASK_AGENT_", "OTEL_", "DATA_PLATFORM_"))
        },
        "PATH": os.pathsep.join([str(agent_binary.resolve().parent), str(venv_bin), os.environ["PATH"]]),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    where = f"{page.relative_to(REPO)}, the block at line {line}"
    assert done.returncode == 0, f"{where} exited {done.returncode}\n{done.stdout}\n{done.stderr}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", prose(page), flags=re.MULTILINE)}


def links() -> list[tuple[Path, str]]:
    return [(page, m.group(1)) for page in PAGES for m in LINK.finditer(prose(page))]


def test_every_relative_link_points_at_something():
    broken = []
    for page, target in links():
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:, …
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
    assert len(links()) > 30  # the link pattern still finds the links


def test_the_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    first_sh = next(body for info, body, _ in blocks(README) if info == "sh")
    commands = [line.split()[0] for line in first_sh.splitlines() if line.strip()]
    assert commands == ["scripts/quickstart", "scripts/test"], "the two commands come first, in this order"
    assert any(info == "mermaid" for info, _, _ in blocks(README)), "the task's flow as a diagram"
    linked = {target for page, target in links() if page == README}
    for guide in ("dag-authors", "install-aks", "agent", "operations", "performance", "development"):
        assert f"docs/{guide}.md" in linked, f"the README links to docs/{guide}.md"


def test_the_guides_pipeline_is_the_seeds():
    """The YAML a DAG author reads, and the one the runnable block validates, are the seed's."""
    seed = yaml.safe_load((REPO / "examples" / "pipelines" / "user1" / "pipeline.yaml").read_text())
    guide = REPO / "docs" / "dag-authors.md"
    shown = next(body for info, body, _ in blocks(guide) if info == "yaml")
    assert yaml.safe_load(shown) == seed
    script = next(body for page, body, _ in RUNNABLE if page == guide and "pipeline.yaml" in body)
    written = script.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    assert yaml.safe_load(written) == seed
