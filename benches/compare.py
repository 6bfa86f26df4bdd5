"""The agent against the tools a platform team would put on a task's critical path instead.

    benches/compare            # the full run: writes benches/RESULTS.md and benches/results.png
    benches/compare --quick    # small sizes, one run each: proves the harness works (CI runs it)

Run it through `benches/compare`, which installs what it needs and builds the static agent.
Everything runs on this machine: Azurite serves the snapshots and takes the uploaded outputs,
examples/bench_standins.rs plays the Entra ID token endpoint and Key Vault. Unpacking goes to a
tmpfs, and the outputs are read from one, since file creation on a disk is noise here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from comparison import workloads
from comparison.measure import Command, Measured, interleaved, peak_rss_kib, usage
from comparison.results import Bar, Report, Section, Target, write_chart, write_markdown
from comparison.services import Azurite, KeyVaultStandins

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benches" / "peers"
GIB = 1 << 30
MIB = 1 << 20

# Issue 8's targets.
SMALL_VS_PYTHON, SMALL_VS_CURL = 0.35, 0.8
BIG_VS_PYTHON, BIG_VS_CURL = 0.35, 0.6
BIG_RSS_MIB = 32
ENTRY_OVER_TINI_MS = 2.0
FORWARDING_VS_CAT = 0.5
TWENTY_SECRETS_VS_ONE = 2.0
BINARY_MB = 10.0
# Issue 15's targets for outputs: throughput against the best peer and the Python SDK, memory.
UPLOAD_VS_BEST_PEER = 1.0
UPLOAD_VS_PYTHON = 2.0
UPLOAD_RSS_MIB = 64

# What a vault round trip costs in the secrets and forwarding rows: a real vault in the pod's region.
VAULT_LATENCY_MS = 20


@dataclass(frozen=True)
class Plan:
    """How much each comparison measures."""

    quick: bool
    fetch_rounds: int
    entry_rounds: int
    entry_runs: int
    forwarding_bytes: int
    forwarding_rounds: int
    secrets_rounds: int
    secrets_runs: int
    upload_rounds: int

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, 1, 1, 3, 16 * MIB, 1, 1, 1, 1)
        return cls(False, 15, 10, 30, GIB, 7, 10, 3, 5)


@dataclass(frozen=True)
class Tools:
    agent: Path
    standins: Path
    azurite: Path
    azcopy: Path
    python: Path

    @classmethod
    def find(cls, agent: Path, standins: Path) -> Tools:
        azcopy = sorted((ROOT / "benches" / "node_modules").glob("@azure-tools/azcopy-linux/**/azcopy*"))
        azcopy = [p for p in azcopy if p.is_file() and os.access(p, os.X_OK)]
        tools = cls(
            agent=agent,
            standins=standins,
            azurite=ROOT / "tests" / "node_modules" / ".bin" / "azurite-blob",
            azcopy=azcopy[0] if azcopy else ROOT / "benches/node_modules/@azure-tools/azcopy-linux",
            python=Path(sys.executable),
        )
        missing = [
            str(p) for p in (tools.agent, tools.standins, tools.azurite, tools.azcopy) if not p.exists()
        ]
        missing += [name for name in ("hyperfine", "tini", "curl", "tar") if shutil.which(name) is None]
        missing += [] if Path("/usr/bin/time").exists() else ["/usr/bin/time"]
        if missing:
            raise SystemExit(
                f"compare: missing {', '.join(missing)}: run benches/compare, which installs them "
                "(scripts/install-bench-deps) and builds the agent and the stand-ins"
            )
        return tools


def clean_env() -> dict[str, str]:
    """This process's environment without anything that would point a client elsewhere."""
    prefixes = ("AZURE_", "TASK_AGENT_", "IDENTITY_", "MSI_", "IMDS_", "SSL_CERT_", "OTEL_", "AZCOPY_")
    return {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith(prefixes) and not k.upper().endswith("_PROXY")
    }


def run_text(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as error:
        return f"not runnable: {error}"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else ""
    )


def snapshot_section(
    shape: workloads.SnapshotShape,
    tools: Tools,
    azurite: Azurite,
    scratch: Path,
    plan: Plan,
    env: dict[str, str],
) -> Section:
    print(
        f"snapshot {shape.name}: generating {shape.files} files, {shape.raw_bytes / 1e6:.0f} MB",
        file=sys.stderr,
    )
    tree = scratch / "trees" / shape.name
    manifest = workloads.write_tree(shape, tree)
    archive = scratch / f"{shape.name}.tar.gz"
    packed = subprocess.run(
        [str(tools.agent), "pack", str(tree), "-o", str(archive)], check=True, capture_output=True, text=True
    )
    sha256 = packed.stdout.split()[0]
    shutil.rmtree(tree)
    url = azurite.upload(archive, f"{shape.name}.tar.gz")
    compressed = archive.stat().st_size
    archive.unlink()

    out = scratch / "out"
    # azcopy keeps logs, plans and a pid folder under $HOME unless told otherwise; in pipe mode its
    # errors reach only the log, so it logs at ERROR into the scratch.
    azcopy_dir = scratch / "azcopy"
    azcopy_env = f"HOME={azcopy_dir} AZCOPY_LOG_LOCATION={azcopy_dir} AZCOPY_JOB_PLAN_LOCATION={azcopy_dir}"
    commands = [
        Command(
            "task-agent fetch",
            f"{tools.agent} fetch --log-level error --snapshot '{url}' --snapshot-sha256 {sha256} "
            f"--workdir {out}",
        ),
        Command(
            "Python: azure-storage-blob + tarfile", f"{tools.python} {PEERS}/python_fetch.py '{url}' {out}"
        ),
        Command("curl | tar -xz", f"curl -sSf '{url}' | tar -xz -C {out}"),
        Command(
            "azcopy (BlobPipe) | tar -xz",
            f"{azcopy_env} {tools.azcopy} copy '{url}' --from-to BlobPipe --log-level ERROR "
            f"| tar -xz -C {out}",
        ),
    ]
    prepare = f"rm -rf {out} {scratch}/azcopy && mkdir -p {out}"
    print(f"snapshot {shape.name}: timing", file=sys.stderr)
    rows = interleaved(commands, rounds=plan.fetch_rounds, runs=1, scratch=scratch, env=env, prepare=prepare)
    for row in rows:
        row.peak_rss_kib = peak_rss_kib(row.line, env, prepare)
        unpacked = workloads.Manifest.of_directory(out)
        if (unpacked.files, unpacked.digest()) != (manifest.files, manifest.digest()):
            raise SystemExit(
                f"compare: `{row.name}` unpacked {unpacked.files} files that differ from the "
                f"{manifest.files} packed into the {shape.name} snapshot"
            )
    shutil.rmtree(out)
    about = (
        f"{manifest.files:,} files, {manifest.raw_bytes / 1e6:.0f} MB unpacked, {compressed / 1e6:.1f} MB "
        f"as packed by `task-agent pack` (gzip level 6), from Azurite over http on loopback into a tmpfs. "
        "Each command's unpacked tree was checked file by file against what was packed."
    )
    title = "Snapshot fetch + extract: " + (
        "small (many source files)" if shape.name == "small" else "big (few large files)"
    )
    return Section(title, about, rows, "task-agent fetch", throughput_bytes=None)


def agent_run(tools: Tools, scratch: Path, *extra: str) -> str:
    task = scratch / "task"
    return " ".join(
        [
            str(tools.agent),
            "run",
            "--log-level error",
            f"--workdir {task}/workspace",
            f"--result-file {task}/result.json",
            f"--return-file {task}/return.json",
            *extra,
        ]
    )


UPLOADS = "uploads"
AGENT_UPLOAD = "task-agent run --output"
AZCOPY_UPLOAD = "azcopy copy"
PYTHON_UPLOAD = "Python: upload_blob"
PYTHON_MD5_UPLOAD = "Python: upload_blob, Content-MD5"


@dataclass(frozen=True)
class UploadSource:
    """What a task declares as its output: one file or a directory, and what must arrive."""

    name: str
    path: Path
    # Each file's size by its path relative to `path` ("" for the file itself).
    sizes: dict[str, int]
    # The agent's digest of it: a file's sha256, or a directory's sha256sum digest.
    sha256: str

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def upload_sources(scratch: Path, plan: Plan) -> tuple[UploadSource, UploadSource]:
    size = workloads.upload_file_bytes(plan.quick)
    print(f"upload: generating one file of {size / MIB:,.0f} MiB", file=sys.stderr)
    big = scratch / "outputs" / "model.bin"
    big_sha256 = workloads.write_random_file(big, size, "task-agent bench upload")
    shape = workloads.small(plan.quick)
    print(f"upload: generating {shape.files} files, {shape.raw_bytes / 1e6:.0f} MB", file=sys.stderr)
    tree = scratch / "outputs" / "site-packages"
    manifest = workloads.write_tree(shape, tree)
    return (
        UploadSource("file", big, {"": size}, big_sha256),
        UploadSource("tree", tree, manifest.sizes(), manifest.sha256sum_digest()),
    )


def check_upload(
    row: Measured, source: UploadSource, azurite: Azurite, record_file: Path, check_content: bool
) -> None:
    """Fails the run unless the row's command put every file of `source`, at its size, and nothing
    else, under its prefix; for the agent, also the manifest and a record with the source's digest;
    with `check_content`, reads the one blob back and compares its sha256."""
    prefix, root = upload_destination(row.name, source)
    found = azurite.blob_sizes(UPLOADS, prefix + "/")
    if row.name == AGENT_UPLOAD and found.pop(f"{prefix}/_manifest.json", None) is None:
        raise SystemExit(f"compare: `{row.name}` wrote no _manifest.json under {prefix}/")
    expected = {f"{root}/{relative}".rstrip("/"): size for relative, size in source.sizes.items()}
    if found != expected:
        raise SystemExit(
            f"compare: `{row.name}` uploaded {len(found)} blobs, {sum(found.values()):,} bytes; expected "
            f"{len(expected)} blobs, {source.total_bytes:,} bytes under {root}"
        )
    if row.name == AGENT_UPLOAD:
        outputs = json.loads(record_file.read_text()).get("outputs") or [{}]
        got = (outputs[0].get("sha256"), outputs[0].get("bytes"), outputs[0].get("files"))
        if got != (source.sha256, source.total_bytes, len(source.sizes)):
            raise SystemExit(
                f"compare: `{row.name}` recorded (sha256, bytes, files) {got}, the source is "
                f"{(source.sha256, source.total_bytes, len(source.sizes))}"
            )
    if check_content:
        (name,) = expected
        if (sha256 := azurite.blob_sha256(UPLOADS, name)) != source.sha256:
            raise SystemExit(
                f"compare: `{row.name}` uploaded {name} with sha256 {sha256}, not {source.sha256}"
            )


def upload_destination(command: str, source: UploadSource) -> tuple[str, str]:
    """The folder a command uploads into, and the blob name its source becomes there."""
    prefix = {
        AGENT_UPLOAD: "agent",
        AZCOPY_UPLOAD: "azcopy",
        PYTHON_UPLOAD: "python",
        PYTHON_MD5_UPLOAD: "python-md5",
    }[command]
    if command == AGENT_UPLOAD:
        return prefix, f"{prefix}/files{source.path}"
    return prefix, f"{prefix}/{source.path.name}"


def upload_section(
    source: UploadSource, tools: Tools, azurite: Azurite, scratch: Path, plan: Plan, env: dict[str, str]
) -> Section:
    sas = azurite.account_sas()
    container = azurite.container_url(UPLOADS)
    azcopy_dir = scratch / "azcopy"
    azcopy_env = f"HOME={azcopy_dir} AZCOPY_LOG_LOCATION={azcopy_dir} AZCOPY_JOB_PLAN_LOCATION={azcopy_dir}"
    azcopy = f"{azcopy_env} {tools.azcopy} copy '{source.path}'"
    recursive = " --recursive" if source.path.is_dir() else ""

    def destination(command: str) -> str:
        return f"'{container}/{upload_destination(command, source)[0]}/?{sas}'"

    commands = [
        Command(
            AGENT_UPLOAD,
            agent_run(
                tools,
                scratch,
                f"--artifacts {destination(AGENT_UPLOAD)}",
                f"--output {source.path}",
                "-- true",
            ),
        ),
        Command(
            AZCOPY_UPLOAD,
            f"{azcopy} {destination(AZCOPY_UPLOAD)} --from-to LocalBlob{recursive} --log-level ERROR",
        ),
    ]
    python = f"{tools.python} {PEERS}/python_upload.py"
    commands.append(
        Command(
            PYTHON_UPLOAD,
            f"{python} '{source.path}' '{container}?{sas}' {upload_destination(PYTHON_UPLOAD, source)[0]}",
        )
    )
    # Azurite computes a CRC64 of every Put Block sent without a Content-MD5, in JavaScript, a
    # byte at a time: a cost the real service does not have. With Content-MD5 it checks that
    # instead (OpenSSL), as for the agent's blocks; this row is the like-for-like one.
    if source.path.is_file():
        commands.append(
            Command(
                PYTHON_MD5_UPLOAD,
                f"{python} --md5 '{source.path}' '{container}?{sas}' "
                f"{upload_destination(PYTHON_MD5_UPLOAD, source)[0]}",
            )
        )

    def fresh() -> None:
        azurite.restart()
        azurite.container(UPLOADS).create_container()

    prepare = f"rm -rf {azcopy_dir}"
    what = "one file" if source.path.is_file() else "a directory"
    print(f"upload {what}: timing", file=sys.stderr)
    rows = interleaved(
        commands,
        rounds=plan.upload_rounds,
        runs=1,
        scratch=scratch,
        env=env,
        prepare=prepare,
        before_round=fresh,
    )
    fresh()
    for row in rows:
        before = azurite.cpu_seconds()
        used = usage(row.line, env, prepare)
        row.peak_rss_kib, row.cpu_seconds = used.peak_rss_kib, used.cpu_seconds
        row.server_cpu_seconds = azurite.cpu_seconds() - before
        check_upload(
            row, source, azurite, scratch / "task" / "result.json", check_content=source.path.is_file()
        )
    if source.path.is_file():
        title = f"Output upload: one {source.total_bytes / MIB:,.0f} MiB file"
        about = (
            f"A task's one output file of {source.total_bytes / MIB:,.0f} MiB (random bytes) uploaded "
            "from a tmpfs as one block blob: `task-agent run --artifacts URL?SAS --output FILE -- true` "
            "(4 MiB blocks, 8 in flight, each with its Content-MD5; the sha256 of the whole), "
            "`azcopy copy FILE URL?SAS` (its defaults: 8 MiB blocks, no MD5), and the Python SDK's "
            "`upload_blob(max_concurrency=8)` (`benches/peers/python_upload.py`: 4 MiB blocks), without "
            "and with `validate_content=True` (a Content-MD5 on every block, as the agent sends). Azurite "
            "computes a CRC64 of every block that comes without a Content-MD5, in JavaScript, a byte at a "
            "time: that slows the azcopy and plain Python rows here, and the real service does not have "
            "that cost, so the targets take the faster Python row. After each command's measured run, "
            "its blob was read back and its sha256 compared with the source's; the agent's record had "
            "to carry it."
        )
    else:
        title = f"Output upload: a directory of {len(source.sizes):,} files"
        about = (
            f"A task's output directory of {len(source.sizes):,} source files, "
            f"{source.total_bytes / 1e6:.0f} MB (the small snapshot's tree), uploaded as one blob per "
            "file: `task-agent run --artifacts URL?SAS --output DIR -- true` (16 files in flight, each "
            "one Put Blob with its Content-MD5; the directory's sha256 digest), `azcopy copy DIR URL?SAS "
            "--recursive`, and the Python SDK's `upload_blob` per file on a pool of 16 threads "
            "(`benches/peers/python_upload.py`). Azurite computes every Put Blob's MD5 whatever the "
            "client sends. After each command's measured run, the blobs under its folder had to be "
            "exactly the files, each at its size; the agent's record had to carry the directory's "
            "digest."
        )
    about += (
        " Azurite (in memory, over http on loopback) restarts empty before every round: its store "
        "frees overwritten blobs only every 10 minutes. CPU is the user + system seconds of the "
        "command, and of Azurite, in the measured run; they share the machine's cores."
    )
    return Section(
        title, about, rows, AGENT_UPLOAD, throughput_bytes=source.total_bytes, throughput_unit="MB/s"
    )


def best_peer(section: Section, prefix: str = "") -> Measured:
    """The fastest peer of a comparison (by median time), of those whose name starts with `prefix`."""
    peers = [r for r in section.rows if r.name != section.agent and r.name.startswith(prefix)]
    return min(peers, key=lambda r: r.median)


def entry_section(tools: Tools, scratch: Path, plan: Plan, env: dict[str, str]) -> Section:
    print("entry overhead: timing", file=sys.stderr)
    commands = [
        Command("task-agent run -- true", agent_run(tools, scratch, "-- true")),
        Command("tini -- true", "tini -- true"),
        Command("true", "true"),
    ]
    rows = interleaved(
        commands,
        rounds=plan.entry_rounds,
        runs=plan.entry_runs,
        scratch=scratch,
        env=env,
        shell=False,
        warmup=3,
    )
    for row in rows:
        row.peak_rss_kib = peak_rss_kib(row.line, env)
    about = (
        "What a pod's entrypoint adds before and after the task: each starts `true` and waits for it. "
        "The agent's task declares no inputs and no outputs (and no snapshot or secrets), the "
        "common case, so this is also what the inputs and outputs phases cost when unused. "
        "tini warns that it is not PID 1 here; it does the same work either way."
    )
    return Section("Entry overhead", about, rows, "task-agent run -- true")


def secret_args(standins: KeyVaultStandins, count: int) -> str:
    return " ".join(f"--secret S{i}={s.url}" for i, s in enumerate(standins.secrets[:count]))


def forwarding_section(
    tools: Tools, standins: KeyVaultStandins, scratch: Path, plan: Plan, env: dict[str, str]
) -> Section:
    values = [s.value for s in standins.secrets[:10]]
    secrets_file = scratch / "secrets.txt"
    workloads.write_secrets_file(values, secrets_file)
    writer = f"{tools.python} {PEERS}/write_lines.py --secrets-file {secrets_file}"
    masked = secret_args(standins, 10)

    # The agent must really mask: a short run's output holds no value, and as many lines as went in.
    check_bytes = 4 * MIB
    direct = subprocess.run(
        f"{writer} --bytes {check_bytes}", shell=True, check=True, capture_output=True, env=env
    )
    through = subprocess.run(
        agent_run(tools, scratch, "--log-format text", masked, "--", writer, f"--bytes {check_bytes}"),
        shell=True,
        check=True,
        capture_output=True,
        env=env,
    )
    leaked = [v for v in values if v.encode() in through.stdout]
    lines_in, lines_out = direct.stdout.count(b"\n"), through.stdout.count(b"\n")
    if leaked or lines_out != lines_in or values[0].encode() not in direct.stdout:
        raise SystemExit(
            f"compare: the agent's text output is not the writer's lines with the secrets masked "
            f"({len(leaked)} values leaked; {lines_out} lines out of {lines_in})"
        )

    size = plan.forwarding_bytes
    commands = [
        Command(
            "task-agent run, text, 10 secrets masked",
            agent_run(
                tools, scratch, "--log-format text", masked, "--", writer, f"--bytes {size} > /dev/null"
            ),
        ),
        Command(
            "task-agent run, JSON, 10 secrets masked",
            agent_run(
                tools, scratch, "--log-format json", masked, "--", writer, f"--bytes {size} > /dev/null"
            ),
        ),
        Command("cat", f"{writer} --bytes {size} | cat > /dev/null"),
    ]
    print("output forwarding: timing", file=sys.stderr)
    rows = interleaved(commands, rounds=plan.forwarding_rounds, runs=1, scratch=scratch, env=env)
    for row in rows:
        row.peak_rss_kib = peak_rss_kib(row.line, env)
    about = (
        f"A task writing {size / MIB:,.0f} MiB of log lines (one in 400 holding a secret) to stdout, read "
        "through the agent (which masks 10 secrets fetched from the Key Vault stand-in, and in JSON mode "
        "wraps every line in a JSON object) or through `cat`, into /dev/null. The writer (Python) costs "
        "the same in every row, and its 16 MiB are the peak RSS of each: the agent stays below it."
    )
    return Section("Output forwarding", about, rows, "task-agent run, text, 10 secrets masked", size)


def secrets_section(
    tools: Tools, standins: KeyVaultStandins, scratch: Path, plan: Plan, env: dict[str, str]
) -> Section:
    commands = [
        Command(
            f"task-agent run, {n} secret{'s' if n > 1 else ''}",
            agent_run(tools, scratch, secret_args(standins, n), "-- true"),
        )
        for n in (20, 1)
    ]
    print("secrets: timing", file=sys.stderr)
    rows = interleaved(
        commands, rounds=plan.secrets_rounds, runs=plan.secrets_runs, scratch=scratch, env=env, shell=False
    )
    for row, count in zip(rows, (20, 1), strict=True):
        row.peak_rss_kib = peak_rss_kib(row.line, env)
        record = json.loads((scratch / "task" / "result.json").read_text())
        if record.get("secrets", {}).get("count") != count:
            raise SystemExit(f"compare: `{row.name}` reported {record.get('secrets')} in its record")
    about = (
        f"`task-agent run --secret … -- true` reading 20 secrets or one from the Key Vault stand-in over "
        f"https, with workload identity through the Entra ID stand-in; every vault answer takes "
        f"{VAULT_LATENCY_MS} ms, as a vault in the pod's region does."
    )
    return Section("Secrets", about, rows, "task-agent run, 20 secrets")


def machine() -> list[tuple[str, str]]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} cores"),
        ("Memory", f"{memory_kib / (1 << 20):.1f} GiB"),
        ("Kernel", platform.release()),
        ("OS", run_text(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])),
        ("Unpacking into", run_text(["stat", "-f", "-c", "%T", "/dev/shm"])),
    ]


def source_commit() -> str:
    """The commit the agent was built from, as far as this checkout tells: HEAD, and whether the
    agent's sources had uncommitted changes."""
    head = run_text(["git", "-C", str(ROOT), "log", "-1", "--format=%h %ad", "--date=format:%Y-%m-%d %H:%M"])
    changed = run_text(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", ".cargo"]
    )
    return f"{head}{' with uncommitted changes to its sources' if changed else ''}"


def versions(tools: Tools, agent: Path) -> list[tuple[str, str]]:
    """What ran; `agent` is where the measured binary was copied from."""
    import azure.storage.blob

    size = tools.agent.stat().st_size
    return [
        (
            "task-agent",
            f"{run_text([str(tools.agent), '--version'])} ({os.path.relpath(agent, ROOT)}, {size:,} bytes)",
        ),
        ("task-agent source", source_commit()),
        ("rustc", run_text(["rustc", "--version"])),
        ("Python", platform.python_version()),
        ("azure-storage-blob", azure.storage.blob.__version__),
        ("curl", run_text(["curl", "--version"])),
        ("tar", run_text(["tar", "--version"])),
        ("gzip", run_text(["gzip", "--version"])),
        ("azcopy", run_text([str(tools.azcopy), "--version"])),
        ("tini", run_text(["tini", "--version"])),
        ("hyperfine", run_text(["hyperfine", "--version"])),
        ("Azurite", run_text([str(tools.azurite), "--version"])),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each (CI)")
    parser.add_argument("--agent", type=Path, required=True, help="the task-agent binary to measure")
    parser.add_argument("--standins", type=Path, required=True, help="the bench-standins example binary")
    parser.add_argument("--out", type=Path, required=True, help="directory for RESULTS.md and results.png")
    parser.add_argument(
        "--scratch", type=Path, default=Path("/dev/shm"), help="a tmpfs for archives and unpacking"
    )
    args = parser.parse_args()

    plan = Plan.of(args.quick)
    tools = Tools.find(args.agent.resolve(), args.standins.resolve())
    env = clean_env()
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.scratch, prefix="task-agent-bench-") as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "task").mkdir()
        # The run measures a copy, so a build elsewhere on the machine cannot swap it mid-run.
        shown_agent = tools.agent
        shutil.copy2(tools.agent, scratch / "task-agent")
        tools = dataclasses.replace(tools, agent=scratch / "task-agent")
        binary_mb = tools.agent.stat().st_size / 1e6
        ran = versions(tools, shown_agent)
        with Azurite(tools.azurite, scratch) as azurite:
            small = snapshot_section(workloads.small(plan.quick), tools, azurite, scratch, plan, env)
            big = snapshot_section(workloads.big(plan.quick), tools, azurite, scratch, plan, env)
        file_source, tree_source = upload_sources(scratch, plan)
        with Azurite(tools.azurite, scratch) as azurite:
            upload_file = upload_section(file_source, tools, azurite, scratch, plan, env)
            upload_tree = upload_section(tree_source, tools, azurite, scratch, plan, env)
        shutil.rmtree(scratch / "outputs")
        entry = entry_section(tools, scratch, plan, env)
        with KeyVaultStandins(tools.standins, scratch, secrets=20, latency_ms=VAULT_LATENCY_MS) as standins:
            vault_env = env | standins.env
            forwarding = forwarding_section(tools, standins, scratch, plan, vault_env)
            secrets = secrets_section(tools, standins, scratch, plan, vault_env)

    python, curl, azcopy = (
        "Python: azure-storage-blob + tarfile",
        "curl | tar -xz",
        "azcopy (BlobPipe) | tar -xz",
    )
    entry_over_tini_ms = (
        entry.row("task-agent run -- true").median - entry.row("tini -- true").median
    ) * 1000
    forwarding_vs_cat = forwarding.row("cat").median / forwarding.row(forwarding.agent).median
    big_rss = big.row("task-agent fetch").peak_rss_kib or 0
    upload_targets: list[Target] = []
    upload_bars: list[Bar] = []
    for section, label in ((upload_file, "upload file"), (upload_tree, "upload directory")):
        best = best_peer(section)
        python_best = best_peer(section, prefix="Python")
        agent_rss = section.row(AGENT_UPLOAD).peak_rss_kib or 0
        upload_targets += [
            Target(
                f"{label}: agent throughput ÷ best peer's ({best.name})",
                1 / section.ratio(best.name),
                UPLOAD_VS_BEST_PEER,
                "×",
                at_least=True,
            ),
            Target(
                f"{label}: agent throughput ÷ Python SDK's ({python_best.name})",
                1 / section.ratio(python_best.name),
                UPLOAD_VS_PYTHON,
                "×",
                at_least=True,
            ),
            Target(f"{label}: agent peak RSS", agent_rss / 1024, UPLOAD_RSS_MIB, "MiB"),
        ]
        for row in section.rows:
            if row.name == section.agent:
                continue
            limits = [1 / UPLOAD_VS_PYTHON] if row is python_best else []
            limits += [1 / UPLOAD_VS_BEST_PEER] if row is best else []
            short = row.name.replace("Python: upload_blob", "Python")
            upload_bars.append(
                Bar(f"{label}: ÷ {short}", section.ratio(row.name), min(limits) if limits else None)
            )
    targets = [
        Target("small snapshot: agent ÷ Python", small.ratio(python), SMALL_VS_PYTHON, "×"),
        Target("small snapshot: agent ÷ curl | tar", small.ratio(curl), SMALL_VS_CURL, "×"),
        Target("big snapshot: agent ÷ Python", big.ratio(python), BIG_VS_PYTHON, "×"),
        Target("big snapshot: agent ÷ curl | tar", big.ratio(curl), BIG_VS_CURL, "×"),
        Target("big snapshot: agent peak RSS", big_rss / 1024, BIG_RSS_MIB, "MiB"),
        *upload_targets,
        Target(
            "entry overhead (no inputs, no outputs): agent − tini",
            entry_over_tini_ms,
            ENTRY_OVER_TINI_MS,
            "ms",
        ),
        Target(
            "forwarding, text: agent throughput ÷ cat's",
            forwarding_vs_cat,
            FORWARDING_VS_CAT,
            "×",
            at_least=True,
        ),
        Target("secrets: 20 ÷ 1", secrets.ratio("task-agent run, 1 secret"), TWENTY_SECRETS_VS_ONE, "×"),
        Target("static binary size", binary_mb, BINARY_MB, "MB"),
    ]
    tini = entry.row("tini -- true").median
    bars = [
        Bar("small: ÷ Python", small.ratio(python), SMALL_VS_PYTHON),
        Bar("small: ÷ curl | tar", small.ratio(curl), SMALL_VS_CURL),
        Bar("small: ÷ azcopy | tar", small.ratio(azcopy)),
        Bar("big: ÷ Python", big.ratio(python), BIG_VS_PYTHON),
        Bar("big: ÷ curl | tar", big.ratio(curl), BIG_VS_CURL),
        Bar("big: ÷ azcopy | tar", big.ratio(azcopy)),
        *upload_bars,
        Bar("entry: ÷ tini", entry.ratio("tini -- true"), (tini + ENTRY_OVER_TINI_MS / 1000) / tini),
        Bar("forwarding text: ÷ cat", forwarding.ratio("cat"), 1 / FORWARDING_VS_CAT),
        Bar("forwarding JSON: ÷ cat", forwarding.ratio("cat", forwarding.rows[1].name)),
        Bar("secrets: 20 ÷ 1", secrets.ratio("task-agent run, 1 secret"), TWENTY_SECRETS_VS_ONE),
    ]
    mode = "quick (small sizes, one run each: proves the harness, measures nothing)" if plan.quick else "full"
    report = Report(
        title="task-agent against its peers",
        sections=[small, big, upload_file, upload_tree, entry, forwarding, secrets],
        targets=targets,
        bars=bars,
        machine=machine(),
        versions=ran,
        how=[
            f"`benches/compare{' --quick' if plan.quick else ''}`, {mode}, "
            f"started {started:%Y-%m-%d %H:%M} UTC.",
            "Commands of a comparison are timed by hyperfine in rounds that each run every command once "
            "(entry overhead: 30 times) in a rotating order, so drift of the machine falls on all alike.",
            "The snapshot peers unpack into a tmpfs; the archive and blob live in memory (Azurite's "
            "`--inMemoryPersistence`). The Python peer keeps its archive in a temporary file on the "
            "same tmpfs.",
            "The upload peers read their sources from a tmpfs and upload into a second Azurite, in memory, "
            "restarted empty before every round; each command writes under its own folder of one "
            "container, with an account SAS (read, write, create, list) in its URL.",
            "Load average (1, 5, 15 min) of the machine at the start: "
            f"{', '.join(f'{x:.1f}' for x in load_at_start)}; at the end: "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (on {os.cpu_count()} cores; above 1 per core, "
            "other work shared the machine during the run).",
        ],
        analysis=(ROOT / "benches" / "comparison" / "analysis.md").read_text().strip() + "\n",
        notes=(
            "Generated by `benches/compare` from one run; regenerate it with the same command. "
            "Everything below ran on one machine, so the ratios hold better than the absolute times."
        ),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_markdown(report, args.out / "RESULTS.md", "results.png")
    write_chart(bars, args.out / "results.png", f"task-agent ÷ peers ({mode.split(' ')[0]} run)")
    print((args.out / "RESULTS.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
