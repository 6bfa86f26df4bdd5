//! Shared by the integration tests: running the real `task-agent` binary in a scratch
//! directory and reading back the record it wrote, and the services it talks to for
//! snapshots and secrets (Azurite, an Entra ID token endpoint stand-in, a Key Vault
//! stand-in, a fault-injecting proxy, TLS for them, Microsoft's Python clients to prove the
//! stand-ins), an OTLP receiver for telemetry. Each test file uses only some of it.

#![allow(dead_code)]

pub mod agent;
pub mod archive;
pub mod assertions;
pub mod azurite;
pub mod entra;
pub mod http;
pub mod keyvault;
pub mod otlp;
pub mod procs;
pub mod proxy;
pub mod python;
pub mod sas;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub const AGENT: &str = env!("CARGO_BIN_EXE_task-agent");

/// The agent with no arguments of ours and none of the test environment's TASK_AGENT_*,
/// OpenTelemetry settings or trace context.
pub fn agent_command() -> Command {
    let mut command = Command::new(AGENT);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("TASK_AGENT_")
            || name.starts_with("OTEL_")
            || name == "TRACEPARENT"
            || name == "TRACESTATE"
        {
            command.env_remove(key);
        }
    }
    command.stdin(Stdio::null());
    command
}

/// `wrapper` (a program that execs the rest of its command line, such as `unshare`), given
/// `command`'s program and arguments and its changes to the environment, which the exec'd
/// agent inherits, so the same settings apply. Its stdin is null, as `Task::command`'s is.
pub fn command_under(mut wrapper: Command, command: &Command) -> Command {
    wrapper
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::null());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapper.env(key, value),
            None => wrapper.env_remove(key),
        };
    }
    wrapper
}

/// Environment variables through which the test environment could change which credential,
/// trust store or proxy the agent uses. Tests that talk to Azure stand-ins clear them all on
/// each agent command, then set what the test needs.
pub const AMBIENT: &[&str] = &[
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// Clears `AMBIENT` and anything else Azure- or proxy-related the test process has.
pub fn isolate(command: &mut Command) -> &mut Command {
    for name in AMBIENT {
        command.env_remove(name);
    }
    for (key, _) in std::env::vars_os() {
        let upper = key.to_string_lossy().to_ascii_uppercase();
        if upper.starts_with("AZURE_") || upper.ends_with("_PROXY") {
            command.env_remove(&key);
        }
    }
    command
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `command` run as `nobody` with no capabilities, as a pod's hardened container runs the
/// agent (needs root to switch). Pair with `Task::open_to_nobody`.
pub fn as_nobody(command: &Command) -> Command {
    let mut wrapper = Command::new("setpriv");
    wrapper.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]);
    command_under(wrapper, command)
}

/// A scratch directory with the paths a task uses.
pub struct Task {
    pub dir: tempfile::TempDir,
}

impl Task {
    pub fn new() -> Task {
        Task {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn workdir(&self) -> PathBuf {
        self.path("workspace")
    }

    pub fn result_file(&self) -> PathBuf {
        self.path("termination-log")
    }

    pub fn return_file(&self) -> PathBuf {
        self.path("xcom/return.json")
    }

    /// `task-agent run` with this task's paths, ready for more options and `-- COMMAND`.
    /// The agent's own TASK_AGENT_* variables from the test environment are cleared.
    pub fn command(&self) -> Command {
        self.command_returning_to(&self.return_file())
    }

    /// `command`, with the return value file at `return_file` instead.
    pub fn command_returning_to(&self, return_file: &Path) -> Command {
        let mut command = agent_command();
        command
            .arg("run")
            .arg("--workdir")
            .arg(self.workdir())
            .arg("--result-file")
            .arg(self.result_file())
            .arg("--return-file")
            .arg(return_file);
        command
    }

    /// Runs `task-agent run … -- sh -c SCRIPT` to the end.
    pub fn run_sh(&self, options: &[&str], script: &str) -> Output {
        self.command()
            .args(options)
            .args(["--", "sh", "-c", script])
            .output()
            .expect("task-agent runs")
    }

    /// Lets an agent running as another user (`as_nobody`) reach the directory and write
    /// the record, with the workdir created with `workdir_mode`; returns a return-file path
    /// that user can write.
    pub fn open_to_nobody(&self, workdir_mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        mode(self.dir.path(), 0o755);
        std::fs::create_dir_all(self.workdir()).expect("workdir");
        mode(&self.workdir(), workdir_mode);
        std::fs::write(self.result_file(), "").expect("result file");
        mode(&self.result_file(), 0o666);
        let returns = self.path("returns");
        std::fs::create_dir_all(&returns).expect("return directory");
        mode(&returns, 0o777);
        returns.join("return.json")
    }

    /// The record as written, checked against the schema and the 4096-byte budget.
    pub fn record(&self) -> Value {
        let bytes = std::fs::read(self.result_file()).expect("result file exists");
        check_record(&bytes)
    }
}

/// Parses a record and asserts it is valid under `schema/task-result.schema.json` and
/// within the termination-message budget.
pub fn check_record(bytes: &[u8]) -> Value {
    assert!(
        bytes.len() <= 4096,
        "record is {} bytes, over 4096",
        bytes.len()
    );
    let value: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "record is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    });
    let errors: Vec<String> = validator()
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "record violates the schema: {errors:?}\n{value:#}"
    );
    value
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/task-result.schema.json");
        let schema: Value = serde_json::from_slice(&std::fs::read(path).expect("schema file"))
            .expect("schema is JSON");
        jsonschema::validator_for(&schema).expect("schema compiles")
    })
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
