//! `task-agent run` with secrets, end to end: values from the Key Vault stand-in (read with
//! workload identity through the Entra ID stand-in, over https trusting only the test CA) or
//! from local `env:`/`file:` references, delivered to the child as variables or 0400 files,
//! masked in everything the agent forwards or writes, absent from the agent's own
//! environment, and every failure path ending before the child starts.
//!
//! Every agent command here gets an explicit environment for everything that chooses a
//! credential, a trust store or an HTTP proxy (as tests/snapshot_blob.rs does), so nothing
//! from the environment the tests run in can change what is being tested.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::Task;
use common::agent::Agent;
use common::assertions::assert_exit_code;
use common::entra::{CLIENT_ID, Entra, FEDERATED_TOKEN, TENANT_ID, VAULT_SCOPE};
use common::keyvault::KeyVault;
use common::tls::Tls;
use serde_json::{Value, json};

/// The secret every masking test tries to leak. Twenty characters, so its first ten and its
/// last ten can be printed apart.
const CANARY: &str = "kv-canary-7Qx9Lm2Zp4";

/// A multi-line secret (a PEM key, say): each line is masked on its own too.
const MULTI_LINE: &str = "first-line-Hq3v\nsecond-line-Wn8k";

/// A secret with characters JSON escapes: masked before the JSON log format encodes it.
const SPECIAL: &str = r#"kv"quoted\slash-R7"#;

/// `SPECIAL` as a JSON string holds it.
const SPECIAL_ESCAPED: &str = r#"kv\"quoted\\slash-R7"#;

/// The agent's own log lines go to stderr; at `error` level a clean run logs nothing, so
/// stderr then holds only what the child wrote.
const QUIET: &[&str] = &["--log-level", "error"];

/// The Entra ID and Key Vault stand-ins, and the federated token file of a workload-identity
/// pod that Entra accepts.
struct Cloud {
    tls: Tls,
    entra: Entra,
    kv: KeyVault,
    /// Holds the federated token file.
    dir: tempfile::TempDir,
}

impl Cloud {
    fn start() -> Cloud {
        let tls = Tls::new();
        let entra = Entra::start(&tls, FEDERATED_TOKEN);
        let kv = KeyVault::start(&tls, &entra);
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("azure-identity-token"), FEDERATED_TOKEN).unwrap();
        Cloud {
            tls,
            entra,
            kv,
            dir,
        }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("azure-identity-token")
    }

    /// The environment of a workload-identity pod, pointed at the Entra stand-in and
    /// trusting the test CA, on top of a cleared one.
    fn identity(&self, command: &mut Command) {
        common::isolate(command)
            .env("AZURE_FEDERATED_TOKEN_FILE", self.token_file())
            .env("AZURE_CLIENT_ID", CLIENT_ID)
            .env("AZURE_TENANT_ID", TENANT_ID)
            .env("AZURE_AUTHORITY_HOST", self.entra.authority())
            .env("SSL_CERT_FILE", self.tls.ca_file());
    }

    /// `task-agent run` with the task's paths and the pod's identity, ready for more options.
    fn command(&self, task: &Task) -> Command {
        let mut command = task.command();
        self.identity(&mut command);
        command
    }

    /// `ENV=URL` of the stand-in's secret `name` (latest, or `version`).
    fn env_ref(&self, env: &str, name: &str, version: Option<&str>) -> String {
        format!("{env}={}", self.kv.secret_url(name, version))
    }

    /// Token requests Entra answered with a token.
    fn tokens_issued(&self) -> usize {
        self.entra
            .requests()
            .iter()
            .filter(|r| r.status == 200)
            .count()
    }
}

/// `task-agent run` with the task's paths and no cloud at all in its environment.
fn offline(task: &Task) -> Command {
    let mut command = task.command();
    common::isolate(&mut command);
    command
}

/// How long any agent here may run: the slowest waits out a 3-second retry budget. One that
/// overruns is killed, so a retry loop that ignores its budget fails the test quickly.
const AGENT_LIMIT: Duration = Duration::from_secs(15);

/// Runs `command -- sh -c SCRIPT` with `options`; gives the output and how long it took.
fn run(mut command: Command, options: &[String], script: &str) -> (Output, Duration) {
    command
        .args(options)
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("task-agent starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for task-agent") {
            break status;
        }
        if started.elapsed() > AGENT_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "task-agent did not finish within {AGENT_LIMIT:?}; killed. Its stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let output = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    (output, elapsed)
}

fn strings(options: &[&str]) -> Vec<String> {
    options.iter().map(|s| s.to_string()).collect()
}

/// `--secret ENV=REF` for each pair.
fn secret_flags(pairs: &[String]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|pair| ["--secret".to_string(), pair.clone()])
        .collect()
}

/// Stdout, stderr and the record file, for "appears nowhere" checks.
fn everything(output: &Output, task: &Task) -> String {
    format!(
        "{}\n{}\n{}",
        common::stdout(output),
        common::stderr(output),
        fs::read_to_string(task.result_file()).unwrap_or_default()
    )
}

#[track_caller]
fn assert_nowhere(text: &str, values: &[&str], what: &str) {
    for value in values {
        assert!(
            !text.contains(value),
            "{value:?} appears in {what}:\n{text}"
        );
    }
}

/// The pieces a masker must never let through: the canary, the multi-line value and each
/// of its lines, the secret with JSON-escaped characters raw and escaped.
fn leaks() -> Vec<&'static str> {
    let mut leaks = vec![CANARY, MULTI_LINE, SPECIAL, SPECIAL_ESCAPED];
    leaks.extend(MULTI_LINE.lines());
    leaks
}

/// A loopback port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    port
}

/// The file the scripts touch first: its absence proves the child never started.
fn ran(task: &Task) -> PathBuf {
    task.workdir().join("ran")
}

/// The record's `secrets` is `{count, duration_ms}` and the `secrets` phase is timed.
#[track_caller]
fn assert_secrets_counted(record: &Value, count: u64) {
    let secrets = record["secrets"]
        .as_object()
        .unwrap_or_else(|| panic!("no secrets in the record: {record:#}"));
    assert_eq!(
        secrets.keys().collect::<Vec<_>>(),
        ["count", "duration_ms"],
        "{record:#}"
    );
    assert_eq!(secrets["count"], count, "{record:#}");
    assert!(secrets["duration_ms"].is_u64(), "{record:#}");
    assert!(
        record["durations_ms"]["secrets"].is_u64(),
        "no durations_ms.secrets: {record:#}"
    );
}

/// A secrets phase that failed: the exit code, an ERROR line with `kind=KIND` naming
/// `reference`, the record saying so, and a child that never ran. Gives the record's message.
#[track_caller]
fn assert_secret_failure(
    task: &Task,
    output: &Output,
    code: i32,
    kind: &str,
    retryable: bool,
    reference: &str,
) -> String {
    assert_exit_code(output, code);
    let stderr = common::stderr(output);
    let line = stderr
        .lines()
        .find(|line| {
            line.starts_with("[task-agent] ERROR") && line.contains(&format!("kind={kind}"))
        })
        .unwrap_or_else(|| panic!("no ERROR line with kind={kind}:\n{stderr}"));
    assert!(line.contains(reference), "{reference} not in {line}");
    let record = task.record();
    assert_eq!(record["status"], "agent_error", "{record:#}");
    assert_eq!(record["phase"], "secrets", "{record:#}");
    assert_eq!(record["exit_code"], code, "{record:#}");
    assert_eq!(record["child_exit_code"], Value::Null, "{record:#}");
    assert_eq!(record["retryable"], retryable, "{record:#}");
    assert_eq!(record["error"]["kind"], kind, "{record:#}");
    assert_eq!(record["secrets"], Value::Null, "{record:#}");
    let message = record["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains(reference), "{reference} not in {message}");
    assert!(
        !ran(task).exists(),
        "the child ran despite the failure:\n{stderr}"
    );
    message
}

/// A usage error: exit 64, kind=usage, `expected` in the message, no child.
#[track_caller]
fn assert_usage_error(task: &Task, output: &Output, expected: &str) {
    assert_exit_code(output, 64);
    let stderr = common::stderr(output);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("[task-agent] ERROR") && l.contains("kind=usage")),
        "no usage ERROR line:\n{stderr}"
    );
    assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    let record = task.record();
    assert_eq!(record["error"]["kind"], "usage", "{record:#}");
    assert_eq!(record["retryable"], false);
    assert!(!ran(task).exists(), "the child ran:\n{stderr}");
}

// ---------------------------------------------------------------------------------------
// 1. Delivery

#[test]
fn env_secrets_come_from_key_vault_latest_and_pinned() {
    let cloud = Cloud::start();
    let older = cloud.kv.set_secret("db-password", "older-value-1111");
    cloud.kv.add_version("db-password", "latest-value-2222");
    cloud.kv.set_secret("api-key", "api-key-value-3333");
    let task = Task::new();
    let options = secret_flags(&[
        cloud.env_ref("DB_PASSWORD", "db-password", None),
        cloud.env_ref("DB_PASSWORD_OLD", "db-password", Some(&older)),
        cloud.env_ref("API_KEY", "API-KEY", None),
    ]);
    let (output, _) = run(
        cloud.command(&task),
        &options,
        "touch ran; printf '%s' \"$DB_PASSWORD\" > new; printf '%s' \"$DB_PASSWORD_OLD\" > old; \
         printf '%s' \"$API_KEY\" > api",
    );
    assert_exit_code(&output, 0);
    let read = |name: &str| fs::read_to_string(task.workdir().join(name)).unwrap();
    assert_eq!(read("new"), "latest-value-2222");
    assert_eq!(read("old"), "older-value-1111");
    assert_eq!(read("api"), "api-key-value-3333");

    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_secrets_counted(&record, 3);
    // The record counts; it names neither the variables nor the secrets, and holds no value.
    let text = fs::read_to_string(task.result_file()).unwrap();
    assert_nowhere(
        &text,
        &[
            "DB_PASSWORD",
            "API_KEY",
            "db-password",
            "api-key",
            "older-value-1111",
            "latest-value-2222",
            "api-key-value-3333",
            &older,
        ],
        "the record",
    );
    assert_nowhere(
        &everything(&output, &task),
        &[
            "older-value-1111",
            "latest-value-2222",
            "api-key-value-3333",
        ],
        "the output",
    );
    // One token for the vault, reused for all three.
    assert_eq!(cloud.tokens_issued(), 1, "{:#?}", cloud.entra.requests());
    assert_eq!(cloud.entra.requests()[0].field("scope"), Some(VAULT_SCOPE));
}

#[test]
fn secret_files_are_0400_owned_by_the_agent_user_under_a_created_dir() {
    let cloud = Cloud::start();
    cloud.kv.set_secret(
        "tls-key",
        "-----BEGIN KEY-----\nABCDEFGH\n-----END KEY-----",
    );
    cloud.kv.set_secret("token", "file-token-4444");
    let task = Task::new();
    // Neither the directory nor its parent exists yet.
    let dir = task.path("run/secrets");
    let options = vec![
        "--secrets-dir".to_string(),
        dir.display().to_string(),
        "--secret-file".to_string(),
        format!("tls/key.pem={}", cloud.kv.secret_url("tls-key", None)),
        "--secret-file".to_string(),
        format!("token={}", cloud.kv.secret_url("token", None)),
    ];
    let (output, _) = run(
        cloud.command(&task),
        &options,
        &format!(
            "touch ran; [ -r '{0}/tls/key.pem' ] && [ -r '{0}/token' ] && touch readable",
            dir.display()
        ),
    );
    assert_exit_code(&output, 0);
    assert!(
        task.workdir().join("readable").exists(),
        "child could not read its files"
    );
    // The agent runs as the test's user, who made the task's temp dir.
    let uid = fs::metadata(task.dir.path()).unwrap().uid();
    for (path, value) in [
        (
            dir.join("tls/key.pem"),
            "-----BEGIN KEY-----\nABCDEFGH\n-----END KEY-----",
        ),
        (dir.join("token"), "file-token-4444"),
    ] {
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            value,
            "{}",
            path.display()
        );
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "{}", path.display());
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o400,
            "{}",
            path.display()
        );
        assert_eq!(meta.uid(), uid, "{}", path.display());
    }
    let record = task.record();
    assert_secrets_counted(&record, 2);
    assert_nowhere(
        &fs::read_to_string(task.result_file()).unwrap(),
        &["tls-key", "key.pem", "ABCDEFGH", "file-token-4444"],
        "the record",
    );
}

#[test]
fn a_symlink_at_a_secret_file_path_is_replaced_not_written_through() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("token", "file-token-5555");
    let task = Task::new();
    let dir = task.path("secrets");
    fs::create_dir_all(&dir).unwrap();
    let victim = task.path("victim");
    fs::write(&victim, "original").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    symlink(&victim, dir.join("token")).unwrap();
    let options = vec![
        "--secrets-dir".to_string(),
        dir.display().to_string(),
        "--secret-file".to_string(),
        format!("token={}", cloud.kv.secret_url("token", None)),
    ];
    let (output, _) = run(cloud.command(&task), &options, "touch ran");
    assert_exit_code(&output, 0);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "original");
    let meta = fs::symlink_metadata(dir.join("token")).unwrap();
    assert!(meta.file_type().is_file(), "still a symlink");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o400);
    assert_eq!(
        fs::read_to_string(dir.join("token")).unwrap(),
        "file-token-5555"
    );
}

#[test]
fn secrets_from_yaml_and_json_lists() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("db-password", "yaml-db-6666");
    let key_version = cloud.kv.set_secret("tls-key", "yaml-key-7777");
    cloud.kv.set_secret("api-key", "json-api-8888");
    let task = Task::new();
    let dir = task.path("secrets");
    let yaml = task.path("secrets.yaml");
    fs::write(
        &yaml,
        format!(
            "# from the DAG\n- env: DB_PASSWORD\n  ref: {}\n- {{file: tls/key.pem, ref: '{}'}}\n",
            cloud.kv.secret_url("db-password", None),
            cloud.kv.secret_url("tls-key", Some(&key_version)),
        ),
    )
    .unwrap();
    let json_list = task.path("secrets.json");
    fs::write(
        &json_list,
        json!([{"env": "API_KEY", "ref": cloud.kv.secret_url("api-key", None)}]).to_string(),
    )
    .unwrap();
    let script = format!(
        "touch ran; printf '%s|%s|' \"$DB_PASSWORD\" \"$API_KEY\" > got; \
         cat '{}/tls/key.pem' >> got 2>/dev/null || true",
        dir.display()
    );
    let yaml_options = vec![
        "--secrets-dir".to_string(),
        dir.display().to_string(),
        "--secrets-from".to_string(),
        yaml.display().to_string(),
    ];
    let (output, _) = run(cloud.command(&task), &yaml_options, &script);
    assert_exit_code(&output, 0);
    let got = fs::read_to_string(task.workdir().join("got")).unwrap();
    assert_eq!(got, "yaml-db-6666||yaml-key-7777");
    assert_secrets_counted(&task.record(), 2);

    fs::remove_dir_all(&dir).unwrap();
    let task = Task::new();
    let json_options = vec![
        "--secrets-from".to_string(),
        json_list.display().to_string(),
    ];
    let (output, _) = run(cloud.command(&task), &json_options, &script);
    assert_exit_code(&output, 0);
    let got = fs::read_to_string(task.workdir().join("got")).unwrap();
    assert_eq!(got, "|json-api-8888|");
    assert_secrets_counted(&task.record(), 1);
}

#[test]
fn local_env_and_file_references_need_no_cloud() {
    let task = Task::new();
    let local_file = task.path("local-key");
    fs::write(&local_file, "local-file-9999\n").unwrap();
    let dir = task.path("secrets");
    let mut command = offline(&task);
    command.env("MY_LOCAL_PASSWORD", "local-env-0000");
    let options = vec![
        "--secrets-dir".to_string(),
        dir.display().to_string(),
        "--secret".to_string(),
        "DB_PASSWORD=env:MY_LOCAL_PASSWORD".to_string(),
        "--secret-file".to_string(),
        format!("key=file:{}", local_file.display()),
        "--log-level".to_string(),
        "error".to_string(),
    ];
    let (output, _) = run(
        command,
        &options,
        &format!(
            "touch ran; printf '%s' \"$DB_PASSWORD\" > got; echo \"pw=$DB_PASSWORD\"; cat '{}/key'; echo",
            dir.display()
        ),
    );
    assert_exit_code(&output, 0);
    assert_eq!(
        fs::read_to_string(task.workdir().join("got")).unwrap(),
        "local-env-0000"
    );
    // The trailing newline of a local file is not part of the value.
    assert_eq!(
        fs::read_to_string(dir.join("key")).unwrap(),
        "local-file-9999"
    );
    // Local values are masked like any other.
    assert_eq!(common::stdout(&output), "pw=***\n***\n");
    let record = task.record();
    assert_eq!(record["status"], "succeeded");
    assert_secrets_counted(&record, 2);
    assert_nowhere(
        &everything(&output, &task),
        &["local-env-0000", "local-file-9999"],
        "the output",
    );
}

// ---------------------------------------------------------------------------------------
// 2. Masking

/// A vault holding the canary and the multi-line secret, and the options that give them to
/// the child as `$KV`, `$ML` and `$SP`.
fn canary_cloud() -> (Cloud, Vec<String>) {
    let cloud = Cloud::start();
    cloud.kv.set_secret("canary", CANARY);
    cloud.kv.set_secret("multi-line", MULTI_LINE);
    cloud.kv.set_secret("special", SPECIAL);
    let options = secret_flags(&[
        cloud.env_ref("KV", "canary", None),
        cloud.env_ref("ML", "multi-line", None),
        cloud.env_ref("SP", "special", None),
    ]);
    (cloud, options)
}

/// Prints the secrets every way a task might: whole lines, inside lines, split across two
/// writes with a pause, each line of the multi-line value, on both streams.
const PRINT_EVERY_WAY: &str = r#"touch ran
printf '%s\n' "$KV"
echo "before $KV after"
printf 'split: %.10s' "$KV"; sleep 0.2; printf '%s\n' "${KV#??????????}"
printf 'sp: %s\n' "$SP"
printf '%s\n' "$ML" | sed 's/^/ml: /'
printf '%s\n' "$ML"
echo "err: $KV" >&2
printf 'err split: %.10s' "$KV" >&2; sleep 0.2; printf '%s end\n' "${KV#??????????}" >&2
printf '%s\n' "$ML" | sed 's/^/err ml: /' >&2
"#;

#[test]
fn the_canary_is_masked_however_the_child_prints_it() {
    let (cloud, mut options) = canary_cloud();
    options.extend(strings(QUIET));
    let task = Task::new();
    let (output, _) = run(cloud.command(&task), &options, PRINT_EVERY_WAY);
    assert_exit_code(&output, 0);
    let stdout = common::stdout(&output);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..6],
        [
            "***",
            "before *** after",
            "split: ***",
            "sp: ***",
            "ml: ***",
            "ml: ***"
        ],
        "{stdout}"
    );
    // The whole multi-line value printed at once: masked, whether as one match or per line.
    assert!(
        lines[6..].iter().all(|line| *line == "***") && !lines[6..].is_empty(),
        "{stdout}"
    );
    assert_eq!(
        common::stderr(&output),
        "err: ***\nerr split: *** end\nerr ml: ***\nerr ml: ***\n"
    );
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(
        record["log_tail"],
        json!([
            "err: ***",
            "err split: *** end",
            "err ml: ***",
            "err ml: ***"
        ]),
        "{record:#}"
    );
    assert_nowhere(
        &everything(&output, &task),
        &leaks(),
        "the output or record",
    );
}

#[test]
fn the_canary_is_masked_in_json_log_format() {
    let (cloud, mut options) = canary_cloud();
    options.extend(strings(&["--log-format", "json"]));
    let task = Task::new();
    let (output, _) = run(cloud.command(&task), &options, PRINT_EVERY_WAY);
    assert_exit_code(&output, 0);
    let objects = |bytes: &[u8]| -> Vec<Value> {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    };
    let stdout = objects(&output.stdout);
    let messages: Vec<&str> = stdout
        .iter()
        .map(|o| o["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages[..6],
        [
            "***",
            "before *** after",
            "split: ***",
            "sp: ***",
            "ml: ***",
            "ml: ***"
        ],
        "{messages:?}"
    );
    let stderr = objects(&output.stderr);
    let child_stderr: Vec<&str> = stderr
        .iter()
        .filter(|o| o["stream"] == "stderr")
        .map(|o| o["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        child_stderr,
        [
            "err: ***",
            "err split: *** end",
            "err ml: ***",
            "err ml: ***"
        ],
        "{stderr:#?}"
    );
    assert_eq!(task.record()["status"], "succeeded");
    assert_nowhere(
        &everything(&output, &task),
        &leaks(),
        "the output or record",
    );
}

/// Output is framed into lines of at most 64 KiB before masking; a longer line is handed on
/// in 65536-byte fragments. A canary across the cut must still be masked. (This depends on
/// the fix to masking across fragment boundaries in src/mask.rs and src/supervise/.)
#[test]
fn the_canary_is_masked_across_the_64_kib_fragment_boundary() {
    const BEFORE: usize = 65536 - 8;
    let (cloud, mut options) = canary_cloud();
    options.extend(strings(QUIET));
    let task = Task::new();
    let script = format!(
        "touch ran; line() {{ head -c {BEFORE} /dev/zero | tr '\\0' x; printf '%sy\\n' \"$KV\"; }}; line; line >&2"
    );
    let (output, _) = run(cloud.command(&task), &options, &script);
    assert_exit_code(&output, 0);
    let expected = format!("{}***y\n", "x".repeat(BEFORE));
    let show =
        |bytes: &[u8]| String::from_utf8_lossy(&bytes[BEFORE.min(bytes.len())..]).into_owned();
    assert!(
        output.stdout == expected.as_bytes(),
        "stdout after byte {BEFORE}: {:?}",
        show(&output.stdout)
    );
    assert!(
        output.stderr == expected.as_bytes(),
        "stderr after byte {BEFORE}: {:?}",
        show(&output.stderr)
    );
    assert_nowhere(
        &everything(&output, &task),
        &leaks(),
        "the output or record",
    );
}

#[test]
fn the_canary_is_masked_in_the_agents_error_message_and_log() {
    let (cloud, options) = canary_cloud();
    let task = Task::new();
    // A return value that is not JSON fails the task with a message naming its path; the
    // message quotes no content of the file (serde_json's errors give only a position), so
    // the canary is put in the path, where it reaches the message and the agent's log.
    let return_file = task.path(&format!("{CANARY}/return.json"));
    let mut command = task.command_returning_to(&return_file);
    cloud.identity(&mut command);
    let (output, _) = run(
        command,
        &options,
        r#"touch ran; printf '{"token": "%s", ' "$KV" > "$TASK_AGENT_RETURN_FILE""#,
    );
    assert_exit_code(&output, 65);
    assert!(
        fs::read_to_string(&return_file).unwrap().contains(CANARY),
        "the child wrote the canary into its return value"
    );
    let record = task.record();
    assert_eq!(
        record["error"]["kind"], "return_value_invalid",
        "{record:#}"
    );
    let message = record["error"]["message"].as_str().unwrap();
    assert!(message.contains("/***/return.json"), "{message}");
    let stderr = common::stderr(&output);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("[task-agent] ERROR") && l.contains("/***/return.json")),
        "{stderr}"
    );
    assert_nowhere(
        &everything(&output, &task),
        &leaks(),
        "the output or record",
    );
}

/// The record is something the agent writes, and docs/agent.md promises values are "never in
/// the record"; a return value that carries a secret must come out masked like the rest.
#[test]
fn the_canary_is_masked_in_the_return_value_in_the_record() {
    let (cloud, options) = canary_cloud();
    let task = Task::new();
    let (output, _) = run(
        cloud.command(&task),
        &options,
        r#"touch ran; printf '{"token": "%s", "rows": 3}' "$KV" > "$TASK_AGENT_RETURN_FILE""#,
    );
    assert_exit_code(&output, 0);
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["return_value"]["rows"], 3, "{record:#}");
    assert_eq!(record["return_value"]["token"], "***", "{record:#}");
    assert_nowhere(
        &everything(&output, &task),
        &leaks(),
        "the output or record",
    );
}

#[test]
fn the_canary_is_in_the_childs_environment_not_the_agents() {
    let (cloud, options) = canary_cloud();
    let task = Task::new();
    let mut command = cloud.command(&task);
    command.args(&options).args([
        "--",
        "sh",
        "-c",
        "env > child-env; touch ready; while [ ! -e stop ]; do sleep 0.05; done",
    ]);
    let mut agent = Agent::spawn(&task, command);
    agent.wait_for(&task.workdir().join("ready"));
    let environ = fs::read(format!("/proc/{}/environ", agent.pid())).expect("agent's environ");
    let child_env = fs::read_to_string(task.workdir().join("child-env")).unwrap();
    fs::write(task.workdir().join("stop"), "").unwrap();
    let (status, _) = agent.wait();
    assert_eq!(status.code(), Some(0), "{}", agent.log());
    for leak in leaks() {
        assert!(
            !environ.windows(leak.len()).any(|w| w == leak.as_bytes()),
            "{leak:?} is in the agent's /proc/<pid>/environ"
        );
    }
    assert!(
        child_env.contains(&format!("KV={CANARY}\n")),
        "the child lacks $KV:\n{child_env}"
    );
    assert!(child_env.contains(&format!("ML={MULTI_LINE}\n")));
    // The agent's settings are its own: the child gets none of them but the return file.
    assert!(
        child_env
            .lines()
            .filter(|l| l.starts_with("TASK_AGENT_"))
            .all(|l| l.starts_with("TASK_AGENT_RETURN_FILE=")),
        "{child_env}"
    );
    assert_nowhere(&agent.log(), &leaks(), "the agent's log");
}

// ---------------------------------------------------------------------------------------
// 3. Failures

#[test]
fn a_missing_secret_is_not_found_and_nothing_is_delivered() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("present", "present-value-1212");
    cloud.kv.set_secret("also-present", "file-value-3434");
    let task = Task::new();
    let dir = task.path("secrets");
    let missing = cloud.kv.secret_url("no-such-secret", None);
    let mut options = secret_flags(&[
        cloud.env_ref("PRESENT", "present", None),
        format!("MISSING={missing}"),
    ]);
    options.extend([
        "--secrets-dir".to_string(),
        dir.display().to_string(),
        "--secret-file".to_string(),
        format!("a/file={}", cloud.kv.secret_url("also-present", None)),
    ]);
    let (output, _) = run(cloud.command(&task), &options, "touch ran");
    let message = assert_secret_failure(&task, &output, 66, "secret_not_found", false, &missing);
    assert!(message.contains("check its name"), "{message}");
    assert_nowhere(
        &everything(&output, &task),
        &["present-value-1212", "file-value-3434"],
        "the output or record",
    );
    // All or nothing: no file was left behind.
    assert!(
        !dir.join("a/file").exists(),
        "a secret file was written for a task that did not start"
    );

    // A missing version of an existing secret is not found either.
    let task = Task::new();
    let version = "0".repeat(32);
    let wrong_version = cloud.kv.secret_url("present", Some(&version));
    let (output, _) = run(
        cloud.command(&task),
        &secret_flags(&[format!("X={wrong_version}")]),
        "touch ran",
    );
    assert_secret_failure(
        &task,
        &output,
        66,
        "secret_not_found",
        false,
        &wrong_version,
    );
    assert_nowhere(
        &everything(&output, &task),
        &["present-value-1212"],
        "the output",
    );
}

#[test]
fn one_bad_local_secret_among_good_ones_delivers_nothing() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("good", "good-value-5656");
    let task = Task::new();
    let dir = task.path("secrets");
    let options = vec![
        "--secrets-dir".to_string(),
        dir.display().to_string(),
        "--secret-file".to_string(),
        format!("one={}", cloud.kv.secret_url("good", None)),
        "--secret-file".to_string(),
        format!("two/deep={}", cloud.kv.secret_url("good", None)),
        "--secret".to_string(),
        "UNSET=env:TASK_SECRETS_TEST_UNSET_VARIABLE".to_string(),
    ];
    let (output, _) = run(cloud.command(&task), &options, "touch ran");
    assert_secret_failure(
        &task,
        &output,
        66,
        "secret_not_found",
        false,
        "env:TASK_SECRETS_TEST_UNSET_VARIABLE",
    );
    assert!(!dir.join("one").exists() && !dir.join("two/deep").exists());
    assert_nowhere(
        &everything(&output, &task),
        &["good-value-5656"],
        "the output",
    );
}

#[test]
fn a_forbidden_secret_is_denied() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("locked", "locked-value-7878");
    cloud.kv.forbid("locked");
    let task = Task::new();
    let reference = cloud.kv.secret_url("locked", None);
    let (output, _) = run(
        cloud.command(&task),
        &secret_flags(&[format!("LOCKED={reference}")]),
        "touch ran",
    );
    let message = assert_secret_failure(&task, &output, 77, "secret_denied", false, &reference);
    assert!(message.contains("HTTP 403"), "{message}");
    assert_nowhere(
        &everything(&output, &task),
        &["locked-value-7878"],
        "the output",
    );
}

#[test]
fn a_stale_federated_token_is_denied_by_entra() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("db-password", "db-value-9090");
    // The kubelet rotated the projected token; Entra now knows only the new one.
    cloud.entra.set_federated_token("a-newer-projected-token");
    let task = Task::new();
    let reference = cloud.kv.secret_url("db-password", None);
    let mut options = secret_flags(&[format!("DB={reference}")]);
    options.extend(strings(&["--secrets-retry-budget", "5s"]));
    let (output, elapsed) = run(cloud.command(&task), &options, "touch ran");
    let message = assert_secret_failure(&task, &output, 77, "secret_denied", false, &reference);
    assert!(message.contains("AADSTS700213"), "{message}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(
        cloud.kv.requests().iter().all(|r| !r.authorized),
        "{:#?}",
        cloud.kv.requests()
    );
    assert_nowhere(
        &everything(&output, &task),
        &["db-value-9090", FEDERATED_TOKEN],
        "the output",
    );
}

#[test]
fn throttling_is_waited_out_with_retry_after() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("busy", "busy-value-1313");
    cloud.kv.throttle_next(2);
    let task = Task::new();
    let (output, elapsed) = run(
        cloud.command(&task),
        &secret_flags(&[cloud.env_ref("BUSY", "busy", None)]),
        "touch ran; printf '%s' \"$BUSY\" > got",
    );
    assert_exit_code(&output, 0);
    assert_eq!(
        fs::read_to_string(task.workdir().join("got")).unwrap(),
        "busy-value-1313"
    );
    let statuses: Vec<u16> = cloud.kv.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 429, 429, 200]);
    // Retry-After: 1, twice.
    assert!(
        elapsed >= Duration::from_millis(1900),
        "took only {elapsed:?}"
    );
    let requests = cloud.kv.requests();
    for pair in requests[1..].windows(2) {
        let gap = pair[1].started - pair[0].ended;
        assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    }
}

#[test]
fn an_always_unavailable_vault_is_retryable_within_the_budget() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("flaky", "flaky-value-1414");
    cloud.kv.fail_next(503, 100_000);
    let task = Task::new();
    let reference = cloud.kv.secret_url("flaky", None);
    let mut options = secret_flags(&[format!("FLAKY={reference}")]);
    options.extend(strings(&["--secrets-retry-budget", "3s"]));
    let (output, elapsed) = run(cloud.command(&task), &options, "touch ran");
    assert_secret_failure(&task, &output, 69, "secret_unavailable", true, &reference);
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    let served = cloud
        .kv
        .requests()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert!(served >= 2, "not retried: {:#?}", cloud.kv.requests());
}

#[test]
fn an_unreachable_vault_is_retryable_within_the_budget() {
    let cloud = Cloud::start();
    let task = Task::new();
    let reference = format!("https://127.0.0.1:{}/secrets/anything", closed_port());
    let mut options = secret_flags(&[format!("X={reference}")]);
    options.extend(strings(&["--secrets-retry-budget", "2s"]));
    let (output, elapsed) = run(cloud.command(&task), &options, "touch ran");
    assert_secret_failure(&task, &output, 69, "secret_unavailable", true, &reference);
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
}

#[test]
fn an_unreachable_token_endpoint_is_retryable_within_the_budget() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("db-password", "db-value-1717");
    let task = Task::new();
    let reference = cloud.kv.secret_url("db-password", None);
    let mut options = secret_flags(&[format!("DB={reference}")]);
    options.extend(strings(&["--secrets-retry-budget", "3s"]));
    let mut command = cloud.command(&task);
    command.env(
        "AZURE_AUTHORITY_HOST",
        format!("https://127.0.0.1:{}", closed_port()),
    );
    let (output, elapsed) = run(command, &options, "touch ran");
    assert_secret_failure(&task, &output, 69, "secret_unavailable", true, &reference);
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    assert_nowhere(
        &everything(&output, &task),
        &["db-value-1717"],
        "the output",
    );
}

#[test]
fn an_unavailable_token_endpoint_is_retryable_within_the_budget() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("db-password", "db-value-1818");
    cloud.entra.fail_next(&[503; 1000]);
    let task = Task::new();
    let reference = cloud.kv.secret_url("db-password", None);
    let mut options = secret_flags(&[format!("DB={reference}")]);
    options.extend(strings(&["--secrets-retry-budget", "3s"]));
    let (output, elapsed) = run(cloud.command(&task), &options, "touch ran");
    assert_secret_failure(&task, &output, 69, "secret_unavailable", true, &reference);
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    assert!(
        cloud.entra.requests().len() >= 2,
        "the token request was not retried: {:#?}",
        cloud.entra.requests()
    );
}

#[test]
fn a_vault_outside_allowed_vaults_is_refused_before_any_network_call() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("db-password", "db-value-1515");
    let task = Task::new();
    let reference = cloud.kv.secret_url("db-password", None);
    let mut options = secret_flags(&[format!("DB={reference}")]);
    options.extend(strings(&[
        "--allowed-vaults",
        "team-kv,shared.vault.azure.net",
    ]));
    let (output, _) = run(cloud.command(&task), &options, "touch ran");
    let message = assert_secret_failure(&task, &output, 77, "policy_denied", false, &reference);
    assert!(
        message.contains("team-kv, shared.vault.azure.net"),
        "{message}"
    );
    assert!(cloud.kv.requests().is_empty(), "{:#?}", cloud.kv.requests());
    assert!(
        cloud.entra.requests().is_empty(),
        "{:#?}",
        cloud.entra.requests()
    );

    // The same vault, allowed by its host, is read.
    let task = Task::new();
    let mut options = secret_flags(&[format!("DB={reference}")]);
    options.extend(["--allowed-vaults".to_string(), cloud.kv.addr().to_string()]);
    let (output, _) = run(cloud.command(&task), &options, "touch ran");
    assert_exit_code(&output, 0);
}

#[test]
fn a_per_tenant_policy_file_is_enforced_before_any_network_call() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("db-password", "db-value-1616");
    let task = Task::new();
    let policy = task.path("policy.yaml");
    fs::write(
        &policy,
        format!(
            "tenants:\n  acme:\n    allowed_vaults: [acme-kv]\n  beta:\n    allowed_vaults:\n      - \"{}\"\n",
            cloud.kv.addr()
        ),
    )
    .unwrap();
    let reference = cloud.kv.secret_url("db-password", None);
    let with_tenant = |tenant: &str| {
        let mut options = secret_flags(&[format!("DB={reference}")]);
        options.extend([
            "--policy-file".to_string(),
            policy.display().to_string(),
            "--tenant".to_string(),
            tenant.to_string(),
        ]);
        options
    };
    let (output, _) = run(cloud.command(&task), &with_tenant("acme"), "touch ran");
    let message = assert_secret_failure(&task, &output, 77, "policy_denied", false, &reference);
    assert!(message.contains("acme-kv"), "{message}");
    assert!(cloud.kv.requests().is_empty(), "{:#?}", cloud.kv.requests());
    assert!(
        cloud.entra.requests().is_empty(),
        "{:#?}",
        cloud.entra.requests()
    );

    let beta = Task::new();
    let (output, _) = run(
        cloud.command(&beta),
        &with_tenant("beta"),
        "touch ran; printf '%s' \"$DB\" > got",
    );
    assert_exit_code(&output, 0);
    assert_eq!(
        fs::read_to_string(beta.workdir().join("got")).unwrap(),
        "db-value-1616"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Concurrency

#[test]
fn secrets_are_fetched_concurrently_with_one_token() {
    let cloud = Cloud::start();
    let mut pairs = Vec::new();
    for i in 0..10 {
        let name = format!("secret-{i}");
        cloud
            .kv
            .set_secret(&name, &format!("concurrent-value-{i:02}"));
        pairs.push(cloud.env_ref(&format!("S{i}"), &name, None));
    }
    cloud.kv.set_latency(Duration::from_millis(200));
    let task = Task::new();
    let (output, elapsed) = run(
        cloud.command(&task),
        &secret_flags(&pairs),
        "touch ran; printf '%s,' \"$S0\" \"$S9\" > got",
    );
    assert_exit_code(&output, 0);
    assert_eq!(
        fs::read_to_string(task.workdir().join("got")).unwrap(),
        "concurrent-value-00,concurrent-value-09,"
    );
    let peak = cloud.kv.peak_in_flight();
    assert!(
        peak >= 5,
        "at most {peak} fetches overlapped (in {elapsed:?}): {:#?}",
        cloud.kv.requests()
    );
    assert_eq!(cloud.tokens_issued(), 1, "{:#?}", cloud.entra.requests());
    assert_eq!(cloud.entra.requests().len(), 1);
    assert_secrets_counted(&task.record(), 10);
}

#[test]
fn two_vaults_are_read_in_parallel_with_one_token() {
    let cloud = Cloud::start();
    let other = KeyVault::start(&cloud.tls, &cloud.entra);
    let mut pairs = Vec::new();
    for (vault, prefix) in [(&cloud.kv, "A"), (&other, "B")] {
        for i in 0..3 {
            let name = format!("secret-{i}");
            vault.set_secret(&name, &format!("vault-{prefix}-value-{i}"));
            pairs.push(format!("{prefix}{i}={}", vault.secret_url(&name, None)));
        }
        vault.set_latency(Duration::from_millis(300));
    }
    let task = Task::new();
    let (output, _) = run(
        cloud.command(&task),
        &secret_flags(&pairs),
        "touch ran; printf '%s,' \"$A0\" \"$B2\" > got",
    );
    assert_exit_code(&output, 0);
    assert_eq!(
        fs::read_to_string(task.workdir().join("got")).unwrap(),
        "vault-A-value-0,vault-B-value-2,"
    );
    // Each vault's first request (the challenge) overlaps the other's.
    let (a, b) = (cloud.kv.requests(), other.requests());
    assert!(
        a[0].started < b[0].ended && b[0].started < a[0].ended,
        "the vaults were read one after the other:\n{a:#?}\n{b:#?}"
    );
    // Both vaults are the same resource (https://vault.azure.net): one token serves both.
    assert_eq!(cloud.tokens_issued(), 1, "{:#?}", cloud.entra.requests());
    assert_secrets_counted(&task.record(), 6);
}

// ---------------------------------------------------------------------------------------
// 5. Usage errors

#[test]
fn malformed_secret_requests_are_usage_errors() {
    let missing_list = std::env::temp_dir().join("task-agent-no-such-secrets-list.yaml");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (strings(&["--secret", "DB=kv"]), "is not a secret reference"),
        (
            strings(&["--secret", "DB=https://kv.vault.azure.net/keys/x"]),
            "is not a secret identifier",
        ),
        (strings(&["--secret", "TASK_AGENT_X=env:HOME"]), "reserved"),
        (
            strings(&["--secret-file", "../x=env:HOME"]),
            "inside the secrets directory",
        ),
        (
            strings(&["--secret", "X=env:HOME", "--secret", "X=env:PATH"]),
            "the variable X is given twice",
        ),
        (
            strings(&[
                "--secret-file",
                "a=env:HOME",
                "--secret-file",
                "./a=env:PATH",
            ]),
            "the file a is given twice",
        ),
        (
            vec![
                "--secrets-from".to_string(),
                missing_list.display().to_string(),
            ],
            "cannot read it",
        ),
    ];
    for (options, expected) in cases {
        let task = Task::new();
        let mut options = options;
        options.extend([
            "--secrets-dir".to_string(),
            task.path("secrets").display().to_string(),
        ]);
        let (output, _) = run(offline(&task), &options, "touch ran");
        assert_usage_error(&task, &output, expected);
        assert!(!task.path("secrets").exists(), "{options:?}");
    }

    // A list that cannot be read for another reason (a directory, even for root) is the
    // same error.
    let task = Task::new();
    let options = vec![
        "--secrets-from".to_string(),
        task.dir.path().display().to_string(),
    ];
    let (output, _) = run(offline(&task), &options, "touch ran");
    assert_usage_error(&task, &output, "cannot read it");
}

#[test]
fn a_malformed_secrets_list_is_a_usage_error_naming_the_entry() {
    let task = Task::new();
    let list = task.path("secrets.yaml");
    fs::write(
        &list,
        "- {env: A, ref: env:HOME}\n- {env: B, file: b, ref: env:HOME}\n",
    )
    .unwrap();
    let options = vec!["--secrets-from".to_string(), list.display().to_string()];
    let (output, _) = run(offline(&task), &options, "touch ran");
    assert_usage_error(&task, &output, "entry 2");
}

#[test]
fn sigterm_while_the_vault_is_slow_ends_the_task_at_once() {
    let cloud = Cloud::start();
    cloud.kv.set_secret("slow", "slow-secret-value");
    cloud.kv.set_latency(Duration::from_secs(10));
    let task = Task::new();
    let mut command = cloud.command(&task);
    command
        .args(["--secret", &cloud.env_ref("SLOW", "slow", None)])
        .args(["--", "touch", "ran"]);
    let mut agent = Agent::spawn(&task, command);
    // The stand-in records a request when it is answered, which takes 10 s here: by 1.5 s
    // the agent is waiting on the vault.
    thread::sleep(Duration::from_millis(1500));
    agent.check_running("the vault answered");
    let signalled = Instant::now();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, exited) = agent.wait();

    assert_eq!(status.code(), Some(143), "log:\n{}", agent.log());
    assert!(
        exited - signalled < Duration::from_secs(3),
        "took {:?} to stop while the vault was slow",
        exited - signalled
    );
    let record = task.record();
    assert_eq!(record["status"], "terminated", "{record:#}");
    assert_eq!(record["phase"], "secrets");
    assert!(
        !task.workdir().join("ran").exists(),
        "the command ran after SIGTERM"
    );
}
