//! The command line. Every option can also come from a `TASK_AGENT_<NAME>` environment
//! variable (the flag wins), so a pod template can set platform defaults in `env:` and the
//! Airflow side adds per-task flags.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use crate::artifacts::{
    self, Location,
    spec::{InputSpec, OutputSpec},
};
use crate::error::{AgentError, exit};
use crate::identity::TaskIdentity;
use crate::logging::LogLevel;
use crate::report::{Outcome, Reporter, ResultFile};
use crate::secrets;
use crate::snapshot::source::BlobLocation;
use crate::snapshot::{self, Source};
use crate::supervise::LogFormat;
use crate::units::{parse_cpu, parse_duration, parse_size};

/// Where Kubernetes reads a container's termination message.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

#[derive(Debug, Parser)]
#[command(
    name = "task-agent",
    version,
    about = "Entrypoint of every task pod: runs the task's command, enforces its limits and reports one result record.",
    long_about = "Entrypoint of every task pod: runs the task's command as PID 1 should (signals, \
                  zombies), enforces its deadline and memory limit, forwards its output, and writes \
                  one JSON result record (at most 4096 bytes) to the pod's termination message, \
                  where Airflow reads it back.\n\n\
                  Every option can also be set through the environment variable named in its help \
                  (TASK_AGENT_<NAME>); a flag on the command line wins over the variable.",
    after_help = "Exit codes: the command's own code when it exits; 128+N when a signal N from elsewhere \
                  killed it; 124 timed out; 137 over the memory limit; 143 terminated (SIGTERM to the \
                  agent); 64 usage; 65 bad data; 66 not found; 69 unavailable (retryable); 70 internal; \
                  77 permission denied; 126 command not executable; 127 command not found."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND as the task: prepare, supervise, report.
    #[command(
        after_help = "Example:\n  task-agent run --workdir /workspace --timeout 30m --memory-limit 2Gi \\\n    --result-file /dev/termination-log -- python main.py --date 2026-11-26"
    )]
    Run(Box<RunArgs>),
    /// Fetch, verify and unpack a snapshot into DIR, and nothing else (init containers, debugging).
    #[command(
        after_help = "Prints one JSON line: {\"source\",\"sha256\",\"bytes\",\"files\",\"cache\"}.\n\nExample:\n  task-agent fetch --snapshot https://acct.blob.core.windows.net/code/etl-1.4.tar.gz --workdir /workspace"
    )]
    Fetch(FetchArgs),
    /// Pack DIR into a reproducible .tar.gz and print its sha256 (same tree, same digest).
    #[command(
        after_help = "Prints `SHA256  FILE`, as sha256sum does. .git and __pycache__ directories are left out."
    )]
    Pack(PackArgs),
    /// Upload a snapshot (a directory, packed first, or a .tar.gz) to Blob Storage and print the digest to pin.
    #[command(
        after_help = "Prints `SHA256  URI` (the URI without any SAS query).\n\nExample:\n  task-agent publish ./etl --to https://acct.blob.core.windows.net/code/etl-1.4.tar.gz"
    )]
    Publish(PublishArgs),
    /// Copy this binary into DIR as DIR/task-agent (mode 0555), for an init container to give any image the agent.
    #[command(
        after_help = "Prints the installed path.\n\nExample (the init container of a pod; the main container mounts /opt/task-agent read-only):\n  task-agent install /opt/task-agent"
    )]
    Install(InstallArgs),
}

/// Where a snapshot comes from and the limits it is unpacked under.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Snapshot")]
pub struct SnapshotArgs {
    /// The task's code: https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH[?SAS], an emulator URL, file:///PATH or a local path (.tar.gz or .tar).
    #[arg(long, env = "TASK_AGENT_SNAPSHOT", value_name = "URI", value_parser = snapshot::source::parse, hide_env_values = true)]
    pub snapshot: Option<Source>,

    /// The snapshot's expected sha256 (64 hex digits, as `task-agent pack` prints); a mismatch exits 65.
    #[arg(long, env = "TASK_AGENT_SNAPSHOT_SHA256", value_name = "HEX", value_parser = parse_sha256)]
    pub snapshot_sha256: Option<String>,

    /// Node-local directory caching snapshots by sha256 (needs --snapshot-sha256).
    #[arg(long, env = "TASK_AGENT_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Most bytes the snapshot may unpack to.
    #[arg(long, env = "TASK_AGENT_SNAPSHOT_MAX_BYTES", value_name = "SIZE", value_parser = parse_size, default_value = "4Gi")]
    pub snapshot_max_bytes: u64,

    /// Most entries (files, directories, links) in the snapshot.
    #[arg(
        long,
        env = "TASK_AGENT_SNAPSHOT_MAX_ENTRIES",
        value_name = "N",
        default_value_t = 100_000
    )]
    pub snapshot_max_entries: u64,

    /// Longest entry name, in bytes.
    #[arg(
        long,
        env = "TASK_AGENT_SNAPSHOT_MAX_PATH_BYTES",
        value_name = "N",
        default_value_t = 1024
    )]
    pub snapshot_max_path_bytes: usize,

    /// Deepest entry, in path components.
    #[arg(
        long,
        env = "TASK_AGENT_SNAPSHOT_MAX_DEPTH",
        value_name = "N",
        default_value_t = 64
    )]
    pub snapshot_max_depth: usize,

    /// Highest unpacked:compressed ratio once 16Mi are unpacked (gzip bombs exceed it).
    #[arg(
        long,
        env = "TASK_AGENT_SNAPSHOT_MAX_RATIO",
        value_name = "N",
        default_value_t = 200
    )]
    pub snapshot_max_ratio: u64,

    /// Total time spent retrying a download (throttling, 5xx, broken connections) before exiting 69.
    #[arg(long, env = "TASK_AGENT_SNAPSHOT_RETRY_BUDGET", value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub snapshot_retry_budget: Duration,

    /// A download that delivers nothing for this long is treated as broken and resumed.
    #[arg(long, env = "TASK_AGENT_SNAPSHOT_STALL_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, default_value = "20s")]
    pub snapshot_stall_timeout: Duration,

    /// Ranged reads in flight at once (1: one streaming GET).
    #[arg(long, env = "TASK_AGENT_SNAPSHOT_PARALLELISM", value_name = "N", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    pub snapshot_parallelism: usize,

    /// Size of each ranged read when --snapshot-parallelism is above 1.
    #[arg(long, env = "TASK_AGENT_SNAPSHOT_BLOCK_SIZE", value_name = "SIZE", value_parser = parse_block_size, default_value = "2Mi")]
    pub snapshot_block_size: u64,
}

impl SnapshotArgs {
    pub fn request(&self) -> Option<snapshot::Request> {
        let source = self.snapshot.clone()?;
        Some(snapshot::Request {
            source,
            sha256: self.snapshot_sha256.clone(),
            cache_dir: self.cache_dir.clone(),
            budget: snapshot::Budget {
                max_bytes: self.snapshot_max_bytes,
                max_entries: self.snapshot_max_entries,
                max_path_bytes: self.snapshot_max_path_bytes,
                max_depth: self.snapshot_max_depth,
                max_ratio: self.snapshot_max_ratio,
            },
            transfer: snapshot::Transfer {
                retry_budget: self.snapshot_retry_budget,
                parallelism: self.snapshot_parallelism,
                block_size: usize::try_from(self.snapshot_block_size).unwrap_or(4 << 20),
                stall_timeout: self.snapshot_stall_timeout.max(Duration::from_millis(100)),
            },
        })
    }
}

/// Secrets the child gets, and the tenant policy that bounds them.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Secrets")]
pub struct SecretArgs {
    /// Set the child's variable ENV_NAME to a secret. REF: https://VAULT.vault.azure.net/secrets/NAME[/VERSION],
    /// VAULT/NAME[/VERSION], env:NAME or file:PATH. Repeatable.
    #[arg(
        long = "secret",
        env = "TASK_AGENT_SECRET",
        value_name = "ENV_NAME=REF",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub secret: Vec<String>,

    /// Write a secret to PATH under --secrets-dir (mode 0400). Repeatable.
    #[arg(
        long = "secret-file",
        env = "TASK_AGENT_SECRET_FILE",
        value_name = "PATH=REF",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub secret_file: Vec<String>,

    /// A JSON or YAML list of secrets: `- {env: NAME, ref: REF}` or `- {file: PATH, ref: REF}`.
    #[arg(long, env = "TASK_AGENT_SECRETS_FROM", value_name = "FILE")]
    pub secrets_from: Option<PathBuf>,

    /// Where --secret-file secrets are written (mount a memory-backed emptyDir there).
    #[arg(
        long,
        env = "TASK_AGENT_SECRETS_DIR",
        value_name = "DIR",
        default_value = "/run/secrets"
    )]
    pub secrets_dir: PathBuf,

    /// Vaults this task may read, by name or host (set by the platform, not the user).
    #[arg(
        long,
        env = "TASK_AGENT_ALLOWED_VAULTS",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub allowed_vaults: Option<Vec<String>>,

    /// The tenant policy file the chart mounts (`allowed_vaults:` or `tenants: {NAME: {allowed_vaults:}}`).
    #[arg(long, env = "TASK_AGENT_POLICY_FILE", value_name = "FILE")]
    pub policy_file: Option<PathBuf>,

    /// DNS suffix of short VAULT/NAME references (sovereign clouds: vault.usgovcloudapi.net, vault.azure.cn).
    #[arg(long, env = "TASK_AGENT_VAULT_SUFFIX", value_name = "SUFFIX", default_value = secrets::reference::PUBLIC_VAULT_SUFFIX)]
    pub vault_suffix: String,

    /// Total time spent retrying Key Vault (throttling, 5xx, unreachable) before exiting 69.
    #[arg(long, env = "TASK_AGENT_SECRETS_RETRY_BUDGET", value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub secrets_retry_budget: Duration,
}

impl SecretArgs {
    /// What the task asks for and the policy that applies; `Ok(None)` when it asks for nothing.
    pub fn request(&self, tenant: Option<&str>) -> Result<Option<secrets::Request>, String> {
        let mut wanted = Vec::new();
        for text in &self.secret {
            wanted.push(
                secrets::spec::parse_env(text, &self.vault_suffix)
                    .map_err(|e| format!("--secret: {e}"))?,
            );
        }
        for text in &self.secret_file {
            wanted.push(
                secrets::spec::parse_file(text, &self.vault_suffix)
                    .map_err(|e| format!("--secret-file: {e}"))?,
            );
        }
        if let Some(path) = &self.secrets_from {
            let origin = format!("--secrets-from {}", path.display());
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{origin}: cannot read it: {e}"))?;
            wanted.extend(secrets::spec::parse_list(
                &text,
                &origin,
                &self.vault_suffix,
            )?);
        }
        secrets::spec::check_unique(&wanted)?;
        let mut policy = match &self.allowed_vaults {
            Some(list) => secrets::VaultPolicy::allow(list.clone()),
            None => secrets::VaultPolicy::unrestricted(),
        };
        if let Some(path) = &self.policy_file {
            let origin = format!("--policy-file {}", path.display());
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{origin}: cannot read it: {e}"))?;
            policy = policy.and(secrets::policy::from_file(&text, &origin, tenant)?);
        }
        if wanted.is_empty() {
            return Ok(None);
        }
        Ok(Some(secrets::Request {
            wanted,
            policy,
            secrets_dir: self.secrets_dir.clone(),
            retry_budget: self.secrets_retry_budget,
        }))
    }
}

#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Directory to unpack into; created if missing.
    #[arg(
        long,
        env = "TASK_AGENT_WORKDIR",
        value_name = "DIR",
        default_value = "/workspace"
    )]
    pub workdir: PathBuf,

    #[command(flatten)]
    pub snapshot: SnapshotArgs,

    #[arg(long, env = "TASK_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    pub log_format: LogFormat,

    #[arg(long, env = "TASK_AGENT_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info, help_heading = "Logging")]
    pub log_level: LogLevel,
}

#[derive(Debug, Clone, Args)]
pub struct PackArgs {
    /// The directory to pack.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The .tar.gz to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// The directory to install into (created if missing), usually a shared emptyDir.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// A directory (packed first) or a .tar.gz / .tar snapshot.
    #[arg(value_name = "DIR|FILE")]
    pub path: PathBuf,
    /// The blob to write: https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH[?SAS].
    #[arg(long, value_name = "BLOB_URI", value_parser = parse_blob)]
    pub to: Source,
    /// Total time spent retrying the upload before exiting 69.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub retry_budget: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Working directory of the command; created if missing.
    #[arg(
        long,
        env = "TASK_AGENT_WORKDIR",
        value_name = "DIR",
        default_value = "/workspace"
    )]
    pub workdir: PathBuf,

    /// Stop the command after this long: SIGTERM, then SIGKILL after --grace (exit 124).
    #[arg(long, env = "TASK_AGENT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, help_heading = "Limits")]
    pub timeout: Option<Duration>,

    /// Time between SIGTERM and SIGKILL on timeout or pod termination.
    #[arg(long, env = "TASK_AGENT_GRACE", value_name = "DURATION", value_parser = parse_duration, default_value = "30s", help_heading = "Limits")]
    pub grace: Duration,

    /// Soft memory limit for the command's processes together (summed RSS), e.g. 512Mi or 2Gi.
    /// Default: the container's cgroup limit less headroom (5%, at least 32Mi, at most 256Mi);
    /// none outside a memory-limited cgroup. Crossing it stops the command (exit 137).
    #[arg(long, env = "TASK_AGENT_MEMORY_LIMIT", value_name = "SIZE", value_parser = parse_memory_limit, help_heading = "Limits")]
    pub memory_limit: Option<u64>,

    /// How often memory use is sampled.
    #[arg(long, env = "TASK_AGENT_MEMORY_POLL_INTERVAL", value_name = "DURATION", value_parser = parse_duration, default_value = "100ms", help_heading = "Limits")]
    pub memory_poll_interval: Duration,

    /// Where to write the result record. Default: /dev/termination-log when it exists, else none.
    #[arg(
        long,
        env = "TASK_AGENT_RESULT_FILE",
        value_name = "PATH",
        help_heading = "Result"
    )]
    pub result_file: Option<PathBuf>,

    /// Where the command may write its JSON return value (passed to it as TASK_AGENT_RETURN_FILE).
    #[arg(
        long,
        env = "TASK_AGENT_RETURN_FILE",
        value_name = "PATH",
        default_value = "/airflow/xcom/return.json",
        help_heading = "Result"
    )]
    pub return_file: PathBuf,

    /// How many of the last stderr lines the record keeps (as budget allows).
    #[arg(
        long,
        env = "TASK_AGENT_LOG_TAIL_LINES",
        value_name = "N",
        default_value_t = 20,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1000),
        help_heading = "Result"
    )]
    pub log_tail_lines: usize,

    /// text: the command's output unchanged; json: one JSON object per line.
    #[arg(long, env = "TASK_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    pub log_format: LogFormat,

    /// The least severe of the agent's own events to log.
    #[arg(long, env = "TASK_AGENT_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info, help_heading = "Logging")]
    pub log_level: LogLevel,

    /// Blob prefix for a return value too large for the record: it is uploaded there as
    /// SHA256.json and the record carries {uri, sha256, bytes} in return_value_ref.
    #[arg(long, env = "TASK_AGENT_RETURN_UPLOAD", value_name = "BLOB_PREFIX", value_parser = parse_blob_prefix, hide_env_values = true, help_heading = "Result")]
    pub return_upload: Option<Source>,

    /// Longest the agent waits at exit for telemetry to reach the collector (exported only
    /// when OTEL_EXPORTER_OTLP_ENDPOINT or another OTEL_* setting asks for it).
    #[arg(long, env = "TASK_AGENT_TELEMETRY_TIMEOUT", value_name = "DURATION", value_parser = parse_duration, default_value = "2s", help_heading = "Telemetry")]
    pub telemetry_timeout: Duration,

    /// The pod's CPU request (Kubernetes quantity: 250m, 1), for the record's usage and cost.
    #[arg(long, env = "TASK_AGENT_CPU_REQUEST", value_name = "CPU", value_parser = parse_cpu, help_heading = "Usage")]
    pub cpu_request: Option<u64>,

    /// The pod's CPU limit.
    #[arg(long, env = "TASK_AGENT_CPU_LIMIT", value_name = "CPU", value_parser = parse_cpu, help_heading = "Usage")]
    pub cpu_limit: Option<u64>,

    /// The pod's memory request (512Mi, 2Gi).
    #[arg(long, env = "TASK_AGENT_MEMORY_REQUEST", value_name = "SIZE", value_parser = parse_size, help_heading = "Usage")]
    pub memory_request: Option<u64>,

    /// The pod's memory limit. Default: the container's cgroup limit.
    #[arg(long, env = "TASK_AGENT_POD_MEMORY_LIMIT", value_name = "SIZE", value_parser = parse_size, help_heading = "Usage")]
    pub pod_memory_limit: Option<u64>,

    #[command(flatten)]
    pub snapshot: SnapshotArgs,

    #[command(flatten)]
    pub secrets: SecretArgs,

    #[command(flatten)]
    pub artifacts: ArtifactArgs,

    #[command(flatten)]
    pub task: TaskArgs,

    /// The command to run and its arguments (put them after `--`).
    #[arg(value_name = "COMMAND", trailing_var_arg = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// Data between tasks: what the task reads and writes in the tenant's Blob Storage.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Inputs and outputs (data between tasks)")]
pub struct ArtifactArgs {
    /// This try's own folder for outputs: https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX[?SAS].
    /// Outputs without a URI go to PREFIX/files/ABSOLUTE_PATH; PREFIX/_manifest.json is written last.
    #[arg(long, env = "TASK_AGENT_ARTIFACTS", value_name = "BLOB_PREFIX", value_parser = parse_folder, hide_env_values = true)]
    pub artifacts: Option<Location>,

    /// Upload PATH (a file or a directory) after the command exits 0. Options after `#`:
    /// `archive` (a directory as one .tar.gz), `optional`. Repeatable.
    #[arg(long = "output", value_name = "PATH[=BLOB_URI][#OPTIONS]", value_parser = artifacts::spec::parse_output)]
    pub output: Vec<OutputSpec>,

    /// Download BLOB_URI to PATH before the command starts (a URI ending in / is a folder).
    /// Options after `#`: `sha256=HEX` (the producer's digest), `archive`. Repeatable.
    #[arg(long = "input", value_name = "PATH=BLOB_URI[#OPTIONS]", value_parser = artifacts::spec::parse_input)]
    pub input: Vec<InputSpec>,

    /// A JSON or YAML list of outputs: `- {path: P, uri: U, archive: B, optional: B}`.
    #[arg(long, env = "TASK_AGENT_OUTPUTS_FROM", value_name = "FILE")]
    pub outputs_from: Option<PathBuf>,

    /// A JSON or YAML list of inputs: `- {path: P, uri: U, sha256: HEX, archive: B}`.
    #[arg(long, env = "TASK_AGENT_INPUTS_FROM", value_name = "FILE")]
    pub inputs_from: Option<PathBuf>,

    /// Total time spent retrying one transfer (throttling, 5xx, broken connections) before exiting 69.
    #[arg(long, env = "TASK_AGENT_TRANSFER_RETRY_BUDGET", value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub transfer_retry_budget: Duration,

    /// Blocks of one upload in flight at once (memory: about N+1 blocks).
    #[arg(long, env = "TASK_AGENT_UPLOAD_PARALLELISM", value_name = "N", default_value_t = 8,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=32))]
    pub upload_parallelism: usize,

    /// Size of each uploaded block; a file no larger is one Put Blob.
    #[arg(long, env = "TASK_AGENT_UPLOAD_BLOCK_SIZE", value_name = "SIZE", value_parser = parse_block_size, default_value = "4Mi")]
    pub upload_block_size: u64,
}

/// What the task declared, from the options and the files together.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub outputs: Vec<OutputSpec>,
    pub inputs: Vec<InputSpec>,
}

impl ArtifactArgs {
    /// Every declaration, checked: outputs need --artifacts (the manifest goes there).
    pub fn declared(&self) -> Result<Declared, String> {
        let mut declared = Declared {
            outputs: self.output.clone(),
            inputs: self.input.clone(),
        };
        if let Some(path) = &self.outputs_from {
            declared
                .outputs
                .extend(artifacts::spec::outputs_from(path)?);
        }
        if let Some(path) = &self.inputs_from {
            declared.inputs.extend(artifacts::spec::inputs_from(path)?);
        }
        if !declared.outputs.is_empty() && self.artifacts.is_none() {
            return Err(
                "outputs are declared but --artifacts is not set; give this try's folder, e.g. --artifacts https://ACCOUNT.blob.core.windows.net/runs/DAG/RUN/TASK/MAP/TRY/"
                    .into(),
            );
        }
        Ok(declared)
    }

    pub fn transfer(&self) -> snapshot::Transfer {
        snapshot::Transfer {
            retry_budget: self.transfer_retry_budget,
            ..snapshot::Transfer::default()
        }
    }

    /// The blob locations named in options (not files): for masking and `conceal`.
    pub fn locations(&self) -> Vec<&BlobLocation> {
        self.artifacts
            .iter()
            .chain(self.output.iter().filter_map(|o| o.destination.as_ref()))
            .chain(self.input.iter().map(|i| &i.source))
            .filter_map(Location::blob)
            .collect()
    }
}

/// A folder: a blob prefix (its URL made to end in `/`), or a `file://` directory.
fn parse_folder(text: &str) -> Result<Location, String> {
    if let Some(rest) = text.strip_prefix("file://") {
        return match snapshot::source::parse(text)? {
            Source::Local(path) => Ok(Location::Local(path)),
            Source::Blob(_) => Err(format!("`{rest}` is not a local directory")),
        };
    }
    match parse_blob_prefix(text)? {
        Source::Blob(mut location) => {
            if let Ok(mut path) = location.url.path_segments_mut() {
                path.pop().push("");
            }
            Ok(Location::Blob(location))
        }
        Source::Local(_) => Err(format!(
            "`{}` is neither a blob prefix nor a file:// directory",
            snapshot::source::without_query(text)
        )),
    }
}

/// The Airflow task this pod runs, stamped on JSON log lines and the record.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Task identity (set by the Airflow side)")]
pub struct TaskArgs {
    /// Tenant that owns the task.
    #[arg(long, env = "TASK_AGENT_TENANT", value_name = "NAME")]
    pub tenant: Option<String>,
    /// Airflow DAG id.
    #[arg(long, env = "TASK_AGENT_DAG_ID", value_name = "ID")]
    pub dag_id: Option<String>,
    /// Airflow task id.
    #[arg(long, env = "TASK_AGENT_TASK_ID", value_name = "ID")]
    pub task_id: Option<String>,
    /// Airflow DAG run id.
    #[arg(long, env = "TASK_AGENT_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,
    /// Airflow try number (1 for the first try).
    #[arg(long, env = "TASK_AGENT_TRY_NUMBER", value_name = "N")]
    pub try_number: Option<u32>,
    /// Airflow map index of a mapped task (-1 when not mapped).
    #[arg(
        long,
        env = "TASK_AGENT_MAP_INDEX",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub map_index: Option<i64>,
}

impl TaskArgs {
    pub fn identity(&self) -> TaskIdentity {
        TaskIdentity {
            tenant: self.tenant.clone(),
            dag_id: self.dag_id.clone(),
            task_id: self.task_id.clone(),
            run_id: self.run_id.clone(),
            try_number: self.try_number,
            map_index: self.map_index,
        }
    }
}

/// A memory limit below 1 MiB cannot run any command; it is a typo, not a limit.
fn parse_memory_limit(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if bytes < 1 << 20 {
        return Err(format!(
            "`{text}` is below 1Mi; give the limit with a unit, such as 512Mi or 2Gi"
        ));
    }
    Ok(bytes)
}

fn parse_sha256(text: &str) -> Result<String, String> {
    let hex = text
        .strip_prefix("sha256:")
        .unwrap_or(text)
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "`{text}` is not a sha256 digest; give the 64 hex digits `task-agent pack` or `sha256sum` prints"
        ))
    }
}

fn parse_block_size(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if !(64 << 10..=256 << 20).contains(&bytes) {
        return Err(format!(
            "`{text}` is outside 64Ki..256Mi; 2Mi to 8Mi suits most links"
        ));
    }
    Ok(bytes)
}

fn parse_blob(text: &str) -> Result<Source, String> {
    match snapshot::source::parse(text)? {
        blob @ Source::Blob(_) => Ok(blob),
        Source::Local(_) => Err(format!(
            "`{}` is not a blob URL; give https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH",
            snapshot::source::without_query(text)
        )),
    }
}

/// A prefix names a container and maybe a folder, so a placeholder blob name makes it parse.
fn parse_blob_prefix(text: &str) -> Result<Source, String> {
    let (base, query) = match text.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (text, None),
    };
    let probe = format!(
        "{}/_{}",
        base.trim_end_matches('/'),
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    parse_blob(&probe).map_err(|e| e.replace("/_`", "`"))
}

/// Parses the command line and runs it; returns the process exit code.
pub fn main_with(args: Vec<OsString>) -> i32 {
    match Cli::try_parse_from(&args) {
        Ok(cli) => match cli.command {
            Command::Run(run_args) => crate::run::run(*run_args),
            Command::Fetch(fetch_args) => crate::commands::fetch(fetch_args),
            Command::Pack(pack_args) => crate::commands::pack(pack_args),
            Command::Publish(publish_args) => crate::commands::publish(publish_args),
            Command::Install(install_args) => crate::commands::install(install_args),
        },
        Err(error) => match error.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = error.print();
                0
            }
            _ => {
                // clap quotes the rejected value, which may be a URL with a SAS token.
                let message = snapshot::blob::redact(&error.render().to_string(), &[]);
                eprint!("{message}");
                report_usage_error(&args, &message);
                exit::USAGE
            }
        },
    }
}

/// A bad command line still leaves a record where one was asked for, so Airflow fails the
/// task without spending retries instead of guessing from an empty termination message.
fn report_usage_error(args: &[OsString], message: &str) {
    let Some(path) = result_file_hint(args) else {
        return;
    };
    let Ok(file) = ResultFile::open(&path) else {
        return;
    };
    let message = message.trim().trim_start_matches("error: ").to_string();
    let mut reporter = Reporter::new(Some(file), TaskIdentity::default(), Default::default());
    reporter.finish(Outcome::from_error(&AgentError::Usage(message)));
}

/// The result file a command line meant, even one that does not parse.
fn result_file_hint(args: &[OsString]) -> Option<PathBuf> {
    let mut words = args.iter().skip(1).take_while(|w| *w != "--");
    while let Some(word) = words.next() {
        let word = word.to_string_lossy();
        if word == "--result-file" {
            return words.next().map(PathBuf::from);
        }
        if let Some(value) = word.strip_prefix("--result-file=") {
            return Some(PathBuf::from(value));
        }
    }
    if let Some(value) = std::env::var_os("TASK_AGENT_RESULT_FILE") {
        return Some(PathBuf::from(value));
    }
    default_result_file()
}

pub fn default_result_file() -> Option<PathBuf> {
    let path = PathBuf::from(TERMINATION_LOG);
    path.exists().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut all = vec!["task-agent", "run"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|cli| match cli.command {
            Command::Run(run) => *run,
            other => panic!("not run: {other:?}"),
        })
    }

    #[test]
    fn the_command_and_its_own_flags_follow_double_dash() {
        let run = parse(&[
            "--timeout",
            "90s",
            "--",
            "python",
            "-c",
            "print(1)",
            "--timeout",
        ])
        .unwrap();
        assert_eq!(run.timeout, Some(Duration::from_secs(90)));
        assert_eq!(run.command, vec!["python", "-c", "print(1)", "--timeout"]);
    }

    #[test]
    fn defaults_are_the_pod_conventions() {
        let run = parse(&["--", "true"]).unwrap();
        assert_eq!(run.workdir, PathBuf::from("/workspace"));
        assert_eq!(run.return_file, PathBuf::from("/airflow/xcom/return.json"));
        assert_eq!(run.grace, Duration::from_secs(30));
        assert_eq!(run.timeout, None);
        assert_eq!(run.log_format, LogFormat::Text);
        assert_eq!(run.telemetry_timeout, Duration::from_secs(2));
    }

    #[test]
    fn malformed_values_name_the_option_and_the_expected_form() {
        let err = parse(&["--memory-limit", "2GB", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--memory-limit"), "{err}");
        assert!(err.contains("512Mi"), "{err}");
        let err = parse(&["--timeout", "soon", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--timeout") && err.contains("90s"), "{err}");
        let err = parse(&["--telemetry-timeout", "2", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--telemetry-timeout"), "{err}");
    }

    #[test]
    fn absurd_values_are_refused_not_obeyed() {
        let err = parse(&["--log-tail-lines", "100000000", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--log-tail-lines") && err.contains("1000"),
            "{err}"
        );
        let err = parse(&["--timeout", "100000d", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn a_missing_command_is_a_usage_error() {
        let err = parse(&["--timeout", "1s"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn a_rejected_snapshot_url_is_quoted_without_its_signature() {
        let err = parse(&[
            "--snapshot",
            "https://acct.blob.core.windows.net/only?sv=1&sig=SECRETSIG",
            "--",
            "true",
        ])
        .unwrap_err()
        .render()
        .to_string();
        assert!(
            err.contains("SECRETSIG"),
            "clap itself quotes the value: {err}"
        );
        let shown = snapshot::blob::redact(&err, &[]);
        assert!(
            !shown.contains("SECRETSIG") && shown.contains("sig=REDACTED"),
            "{shown}"
        );
    }

    #[test]
    fn the_result_file_is_found_in_a_broken_command_line() {
        let args: Vec<OsString> = [
            "task-agent",
            "run",
            "--bogus",
            "--result-file",
            "/tmp/r.json",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        assert_eq!(result_file_hint(&args), Some(PathBuf::from("/tmp/r.json")));
        let args: Vec<OsString> = [
            "task-agent",
            "run",
            "--result-file=/tmp/x",
            "--",
            "--result-file",
            "no",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        assert_eq!(result_file_hint(&args), Some(PathBuf::from("/tmp/x")));
    }
}
