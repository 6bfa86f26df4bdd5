//! `task-agent fetch`, `run --snapshot`, `publish` and `run --return-upload` against a real
//! blob endpoint: Azurite (one per test, in memory), over plain http for SAS, account-key and
//! connection-string access, and over https with `--oauth basic` for Microsoft Entra ID
//! workload identity through the token stand-in. Network faults come from the proxy in
//! `common::proxy`, placed between the agent and Azurite.
//!
//! Every agent command here gets an explicit environment for everything that chooses a
//! credential, a trust store or an HTTP proxy, so nothing from the environment the tests
//! run in can change what is being tested.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::agent::Agent;
use common::archive::{self, Tar};
use common::assertions::assert_exit_code;
use common::azurite::{ACCOUNT, ACCOUNT_KEY, Azurite};
use common::entra::{CLIENT_ID, Entra, FEDERATED_TOKEN, JWT_BEARER, STORAGE_SCOPE, TENANT_ID};
use common::proxy::{Fault, Plan, Proxy};
use common::sas;
use common::tls::Tls;
use common::{Task, agent_command};
use serde_json::{Value, json};

const CONTAINER: &str = "snapshots";

/// A well-formed account key that is not Azurite's.
const WRONG_KEY: &str =
    "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleQ==";

/// Far beyond the response head of a blob GET (about 600 bytes from Azurite), well inside
/// the ~1 MiB body of `Snapshot::large`.
const FAULT_AFTER: u64 = 300_000;

/// `task-agent fetch --snapshot SOURCE --workdir WORKDIR` with a clean environment.
fn fetch_command(workdir: &Path, source: &str) -> Command {
    let mut command = agent_command();
    common::isolate(&mut command)
        .arg("fetch")
        .arg("--snapshot")
        .arg(source)
        .arg("--workdir")
        .arg(workdir);
    command
}

/// `task-agent run --snapshot SOURCE` with the task's paths and a clean environment, ready
/// for more options and `-- COMMAND`.
fn run_command(task: &Task, source: &str) -> Command {
    let mut command = task.command();
    common::isolate(&mut command).arg("--snapshot").arg(source);
    command
}

/// Runs `command` to the end; gives its output and how long it took.
fn timed(command: &mut Command) -> (Output, Duration) {
    let started = Instant::now();
    let output = command.output().expect("task-agent runs");
    (output, started.elapsed())
}

/// A deterministic archive, what it unpacks to, and its digest.
struct Snapshot {
    bytes: Vec<u8>,
    sha256: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    /// A tar (gzip'd when `gzip`) of these regular files, each preceded by its parent
    /// directories.
    fn of(files: &[(&str, &[u8])], gzip: bool) -> Snapshot {
        let mut tar = Tar::new();
        let mut dirs = Vec::new();
        for (path, contents) in files {
            let parts: Vec<&str> = path.split('/').collect();
            for depth in 1..parts.len() {
                let dir = parts[..depth].join("/");
                if !dirs.contains(&dir) {
                    tar = tar.dir(&format!("{dir}/"), 0o755);
                    dirs.push(dir);
                }
            }
            tar = tar.file(path, 0o644, contents);
        }
        let raw = tar.finish();
        let bytes = if gzip { archive::gzip(&raw) } else { raw };
        Snapshot {
            sha256: archive::sha256_hex(&bytes),
            bytes,
            files: files
                .iter()
                .map(|(path, contents)| (path.to_string(), contents.to_vec()))
                .collect(),
        }
    }

    /// Two small text files, one in a directory.
    fn small() -> Snapshot {
        Snapshot::of(
            &[
                ("README.txt", b"snapshot from Azurite\n"),
                ("dags/etl.py", b"print('etl')\n"),
            ],
            true,
        )
    }

    /// About 1 MiB that gzip cannot shrink, so a fault placed at a byte offset lands in
    /// the body, and a second small file after it.
    fn large(seed: u64) -> Snapshot {
        let data = archive::noise(1 << 20, seed);
        Snapshot::of(
            &[("data.bin", &data), ("after/hello.txt", b"hello\n")],
            true,
        )
    }

    fn upload(&self, azurite: &Azurite, path: &str) {
        azurite.upload(CONTAINER, path, &self.bytes);
    }
}

/// Azurite over http with the snapshot container.
fn azurite() -> Azurite {
    let azurite = Azurite::start();
    azurite.create_container(CONTAINER);
    azurite
}

/// Every regular file below `root`, by `/`-separated relative path.
fn files_in(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.expect("read a directory entry");
            let kind = entry.file_type().expect("file type");
            let path = entry.path();
            if kind.is_dir() {
                walk(root, &path, into);
            } else if kind.is_file() {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy();
                into.insert(relative.into_owned(), fs::read(&path).expect("read a file"));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    files
}

/// Whether `dir` is missing or holds nothing at all.
fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// The workdir holds exactly the snapshot's files, byte for byte.
#[track_caller]
fn assert_unpacked(workdir: &Path, snapshot: &Snapshot) {
    let found = files_in(workdir);
    let names = |files: &BTreeMap<String, Vec<u8>>| files.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&found),
        names(&snapshot.files),
        "files in the workdir"
    );
    for (path, contents) in &snapshot.files {
        assert!(
            found[path] == *contents,
            "{path} differs from the snapshot's ({} bytes, expected {})",
            found[path].len(),
            contents.len()
        );
    }
}

/// A successful `fetch`: exit 0, one JSON line saying exactly this, and the files in place.
#[track_caller]
fn assert_fetched(output: &Output, workdir: &Path, source: &str, snapshot: &Snapshot, cache: &str) {
    assert_exit_code(output, 0);
    let stdout = common::stdout(output);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "fetch prints one line: {stdout:?}");
    let report: Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", lines[0]));
    assert_eq!(
        report,
        json!({
            "source": source,
            "sha256": snapshot.sha256,
            "bytes": snapshot.bytes.len(),
            "files": snapshot.files.len(),
            "cache": cache,
        }),
        "stderr:\n{}",
        common::stderr(output)
    );
    assert_unpacked(workdir, snapshot);
}

/// A failed agent: `code`, and an ERROR line with `kind=KIND`; gives that line.
#[track_caller]
fn assert_failed(output: &Output, code: i32, kind: &str) -> String {
    assert_exit_code(output, code);
    let stderr = common::stderr(output);
    stderr
        .lines()
        .find(|line| {
            line.starts_with("[task-agent] ERROR") && line.contains(&format!("kind={kind}"))
        })
        .unwrap_or_else(|| panic!("no ERROR line with kind={kind}:\n{stderr}"))
        .to_string()
}

/// The `sig` value of a SAS URL or query, as it appears there (percent-encoded).
fn sig_of(url: &str) -> String {
    let query = url.split_once('?').map_or(url, |(_, query)| query);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("sig="))
        .expect("a SAS has a sig")
        .to_string()
}

/// Percent-decodes a query value (a signature is base64, so `+`, `/` and `=` are escaped).
fn percent_decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

/// `url` with the first character of its signature changed: still well-formed, refused.
fn tampered(url: &str) -> String {
    let (base, signature) = url.split_once("&sig=").expect("a SAS URL ends with sig");
    let first = if signature.starts_with('A') { "B" } else { "A" };
    format!("{base}&sig={first}{}", &signature[1..])
}

/// An hour from now: longer than any test.
fn in_an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

/// A loopback port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    port
}

/// The federated token file a workload-identity pod has.
fn token_file(dir: &Path) -> PathBuf {
    archive::write(dir, "azure-identity-token", FEDERATED_TOKEN.as_bytes())
}

/// The environment of a workload-identity pod, pointed at the stand-in and trusting the
/// test CA.
fn workload_identity(command: &mut Command, entra: &Entra, tls: &Tls, token: &Path) {
    command
        .env("AZURE_FEDERATED_TOKEN_FILE", token)
        .env("AZURE_CLIENT_ID", CLIENT_ID)
        .env("AZURE_TENANT_ID", TENANT_ID)
        .env("AZURE_AUTHORITY_HOST", entra.authority())
        .env("SSL_CERT_FILE", tls.ca_file());
}

// ---------------------------------------------------------------------------------------
// 1. Credentials

#[test]
fn fetch_with_a_sas_url() {
    let azurite = azurite();
    let snapshot = Snapshot::small();
    snapshot.upload(&azurite, "etl/v1.tar.gz");
    let task = Task::new();

    let url = azurite.read_url(CONTAINER, "etl/v1.tar.gz");
    let (output, _) = timed(&mut fetch_command(&task.workdir(), &url));
    assert_fetched(
        &output,
        &task.workdir(),
        &azurite.blob_url(CONTAINER, "etl/v1.tar.gz"),
        &snapshot,
        "off",
    );
    // With no credential at all, the same blob is refused: the SAS is what let it in.
    let bare = Task::new();
    let (output, _) = timed(&mut fetch_command(
        &bare.workdir(),
        &azurite.blob_url(CONTAINER, "etl/v1.tar.gz"),
    ));
    assert_failed(&output, 77, "snapshot_denied");
    assert!(is_empty_dir(&bare.workdir()));
}

#[test]
fn fetch_with_account_name_and_key_from_the_environment() {
    let azurite = azurite();
    let snapshot = Snapshot::small();
    snapshot.upload(&azurite, "etl/v1.tar.gz");
    let url = azurite.blob_url(CONTAINER, "etl/v1.tar.gz");
    let task = Task::new();

    let (output, _) = timed(
        fetch_command(&task.workdir(), &url)
            .env("AZURE_STORAGE_ACCOUNT", ACCOUNT)
            .env("AZURE_STORAGE_KEY", ACCOUNT_KEY),
    );
    assert_fetched(&output, &task.workdir(), &url, &snapshot, "off");
}

#[test]
fn fetch_with_connection_strings() {
    let azurite = azurite();
    let snapshot = Snapshot::small();
    snapshot.upload(&azurite, "etl/v1.tar.gz");
    let url = azurite.blob_url(CONTAINER, "etl/v1.tar.gz");
    let account_sas = sas::account_sas(ACCOUNT, ACCOUNT_KEY, "r", in_an_hour());
    let connection_strings = [
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={};",
            azurite.account_url()
        ),
        "UseDevelopmentStorage=true".to_string(),
        format!(
            "BlobEndpoint={};SharedAccessSignature={account_sas}",
            azurite.account_url()
        ),
    ];
    for connection_string in connection_strings {
        let task = Task::new();
        let (output, _) = timed(
            fetch_command(&task.workdir(), &url)
                .env("AZURE_STORAGE_CONNECTION_STRING", &connection_string)
                // The connection string comes first: these would be refused.
                .env("AZURE_STORAGE_ACCOUNT", ACCOUNT)
                .env("AZURE_STORAGE_KEY", WRONG_KEY),
        );
        assert_fetched(&output, &task.workdir(), &url, &snapshot, "off");
    }
}

#[test]
fn fetch_with_workload_identity_over_https() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let azurite = Azurite::start_https_oauth(&tls);
    azurite.create_container(CONTAINER);
    let snapshot = Snapshot::small();
    snapshot.upload(&azurite, "etl/v1.tar.gz");
    let url = azurite.blob_url(CONTAINER, "etl/v1.tar.gz");
    assert!(url.starts_with("https://"), "{url}");
    let task = Task::new();
    let token = token_file(task.dir.path());

    let mut command = fetch_command(&task.workdir(), &url);
    workload_identity(&mut command, &entra, &tls, &token);
    let (output, _) = timed(&mut command);
    assert_fetched(&output, &task.workdir(), &url, &snapshot, "off");

    let requests = entra.requests();
    assert_eq!(
        requests.len(),
        1,
        "one token request for one fetch: {requests:?}"
    );
    let request = &requests[0];
    assert_eq!(request.status, 200);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/{TENANT_ID}/oauth2/v2.0/token"));
    assert_eq!(request.field("client_assertion"), Some(FEDERATED_TOKEN));
    assert_eq!(request.field("client_assertion_type"), Some(JWT_BEARER));
    assert_eq!(request.field("client_id"), Some(CLIENT_ID));
    assert_eq!(request.field("grant_type"), Some("client_credentials"));
    assert_eq!(request.field("scope"), Some(STORAGE_SCOPE));
    assert_eq!(entra.issued().len(), 1);

    // A token file the federated credential does not match gets no token, and no blob.
    entra.set_federated_token("rotated-elsewhere");
    let refused = Task::new();
    let mut command = fetch_command(&refused.workdir(), &url);
    workload_identity(&mut command, &entra, &tls, &token);
    let (output, _) = timed(&mut command);
    assert_failed(&output, 77, "snapshot_denied");
    assert!(is_empty_dir(&refused.workdir()));
    assert_eq!(entra.issued().len(), 1, "no token for a stale assertion");
}

// ---------------------------------------------------------------------------------------
// 2. Not found and denied

#[test]
fn a_missing_blob_is_not_found() {
    let azurite = azurite();
    let task = Task::new();
    let url = azurite.read_url(CONTAINER, "etl/missing.tar.gz");
    let (output, _) = timed(&mut fetch_command(&task.workdir(), &url));
    let line = assert_failed(&output, 66, "snapshot_not_found");
    assert!(
        line.contains(&azurite.blob_url(CONTAINER, "etl/missing.tar.gz")),
        "{line}"
    );
    assert!(!line.contains(&sig_of(&url)), "{line}");
    assert!(is_empty_dir(&task.workdir()));

    // The same with the account key.
    let task = Task::new();
    let (output, _) = timed(
        fetch_command(
            &task.workdir(),
            &azurite.blob_url(CONTAINER, "etl/missing.tar.gz"),
        )
        .env("AZURE_STORAGE_ACCOUNT", ACCOUNT)
        .env("AZURE_STORAGE_KEY", ACCOUNT_KEY),
    );
    assert_failed(&output, 66, "snapshot_not_found");
}

#[test]
fn a_wrong_key_or_a_tampered_sas_is_denied_with_a_fix_and_no_secret() {
    let azurite = azurite();
    Snapshot::small().upload(&azurite, "etl/v1.tar.gz");
    let url = azurite.blob_url(CONTAINER, "etl/v1.tar.gz");

    let task = Task::new();
    let (output, elapsed) = timed(
        fetch_command(&task.workdir(), &url)
            .env("AZURE_STORAGE_ACCOUNT", ACCOUNT)
            .env("AZURE_STORAGE_KEY", WRONG_KEY),
    );
    let line = assert_failed(&output, 77, "snapshot_denied");
    assert!(line.contains(&url), "names the blob: {line}");
    assert!(
        line.contains("AZURE_STORAGE_KEY") && line.contains("AZURE_STORAGE_ACCOUNT"),
        "says what to check: {line}"
    );
    let all = format!("{}{}", common::stdout(&output), common::stderr(&output));
    assert!(!all.contains(WRONG_KEY), "the key leaked:\n{all}");
    assert!(is_empty_dir(&task.workdir()));
    assert!(
        elapsed < Duration::from_secs(5),
        "a refusal is not retried: {elapsed:?}"
    );

    let forged = tampered(&azurite.read_url(CONTAINER, "etl/v1.tar.gz"));
    let task = Task::new();
    let (output, elapsed) = timed(&mut fetch_command(&task.workdir(), &forged));
    let line = assert_failed(&output, 77, "snapshot_denied");
    assert!(line.contains(&url), "names the blob: {line}");
    assert!(line.contains("SAS"), "says the SAS is at fault: {line}");
    assert!(
        line.contains("issue a new one"),
        "says what to do about it: {line}"
    );
    let all = format!("{}{}", common::stdout(&output), common::stderr(&output));
    let signature = sig_of(&forged);
    assert!(
        !all.contains(&signature) && !all.contains(&percent_decode(&signature)),
        "the signature leaked:\n{all}"
    );
    assert!(!all.contains("sig="), "a query was printed:\n{all}");
    assert!(is_empty_dir(&task.workdir()));
    assert!(
        elapsed < Duration::from_secs(5),
        "a refusal is not retried: {elapsed:?}"
    );
}

#[test]
fn an_account_that_does_not_match_the_url_is_denied_clearly() {
    let azurite = azurite();
    Snapshot::small().upload(&azurite, "etl/v1.tar.gz");
    let url = azurite.blob_url(CONTAINER, "etl/v1.tar.gz");
    let task = Task::new();
    let (output, _) = timed(
        fetch_command(&task.workdir(), &url)
            .env("AZURE_STORAGE_ACCOUNT", "otheraccount")
            .env("AZURE_STORAGE_KEY", ACCOUNT_KEY),
    );
    let line = assert_failed(&output, 77, "snapshot_denied");
    assert!(
        line.contains("otheraccount") && line.contains(ACCOUNT),
        "names both accounts: {line}"
    );
    assert!(line.contains("AZURE_STORAGE_ACCOUNT"), "{line}");
    assert!(!line.contains(ACCOUNT_KEY), "{line}");
    assert!(is_empty_dir(&task.workdir()));
    // Refused before any request: Azurite logged none for the blob.
    assert!(
        !azurite
            .log()
            .contains("GET /devstoreaccount1/snapshots/etl"),
        "{}",
        azurite.log()
    );
}

// ---------------------------------------------------------------------------------------
// 3. Retries, resumption and giving up

/// Azurite with `Snapshot::large` at `big.tar.gz`, and a proxy in front of it with `plan`.
fn behind_proxy(plan: Plan) -> (Azurite, Proxy, Snapshot) {
    let azurite = azurite();
    let snapshot = Snapshot::large(7);
    snapshot.upload(&azurite, "big.tar.gz");
    let proxy = Proxy::start(azurite.addr(), plan);
    (azurite, proxy, snapshot)
}

#[test]
fn throttling_with_retry_after_is_waited_out() {
    let (azurite, proxy, snapshot) = behind_proxy(Plan::first(2, Fault::busy()));
    let task = Task::new();
    let url = proxy.url(&azurite.read_url(CONTAINER, "big.tar.gz"));
    let (output, elapsed) = timed(&mut fetch_command(&task.workdir(), &url));
    let source = format!("http://{}/{ACCOUNT}/{CONTAINER}/big.tar.gz", proxy.addr());
    assert_fetched(&output, &task.workdir(), &source, &snapshot, "off");
    assert_eq!(proxy.answered(), 2, "both 503s were seen");
    assert!(proxy.upstream_connections() >= 1);
    // Retry-After: 1, twice.
    assert!(
        elapsed >= Duration::from_millis(1900),
        "Retry-After was not honoured: done in {elapsed:?}"
    );
}

#[test]
fn endless_throttling_gives_up_within_the_retry_budget() {
    let (azurite, proxy, _) = behind_proxy(Plan::always(Fault::busy()));
    let task = Task::new();
    let url = proxy.url(&azurite.read_url(CONTAINER, "big.tar.gz"));
    let (output, elapsed) = timed(
        run_command(&task, &url)
            .args(["--snapshot-retry-budget", "3s"])
            .args(["--", "sh", "-c", "touch child-ran"]),
    );
    let line = assert_failed(&output, 69, "snapshot_unavailable");
    assert!(
        elapsed < Duration::from_secs(7),
        "gave up only after {elapsed:?}"
    );
    assert!(
        proxy.answered() >= 2,
        "retried: {} requests",
        proxy.answered()
    );
    assert_eq!(proxy.upstream_connections(), 0);
    assert!(!line.contains(&sig_of(&url)), "{line}");

    let record = task.record();
    assert_eq!(record["status"], "agent_error", "{record:#}");
    assert_eq!(record["phase"], "snapshot");
    assert_eq!(record["exit_code"], 69);
    assert_eq!(record["retryable"], true);
    assert_eq!(record["error"]["kind"], "snapshot_unavailable");
    assert_eq!(record["snapshot"], Value::Null);
    assert_eq!(record["child_exit_code"], Value::Null);
    assert!(!record.to_string().contains(&sig_of(&url)), "{record:#}");
    assert!(
        !task.workdir().join("child-ran").exists(),
        "the child ran after a failed snapshot"
    );
    assert!(is_empty_dir(&task.workdir()));
}

/// A fault mid-body: the fetch still succeeds with the right digest, over a second
/// connection that resumes where the first stopped.
fn assert_resumes_after(fault: Fault, options: &[&str]) -> (Output, Duration) {
    let (azurite, proxy, snapshot) = behind_proxy(Plan::first(1, fault.clone()));
    let task = Task::new();
    let url = proxy.url(&azurite.read_url(CONTAINER, "big.tar.gz"));
    let (output, elapsed) = timed(fetch_command(&task.workdir(), &url).args(options));
    let source = format!("http://{}/{ACCOUNT}/{CONTAINER}/big.tar.gz", proxy.addr());
    assert_fetched(&output, &task.workdir(), &source, &snapshot, "off");
    assert!(
        proxy.connections() >= 2,
        "{fault:?}: only {} connection(s)",
        proxy.connections()
    );
    let stderr = common::stderr(&output);
    assert!(
        stderr.contains("resuming"),
        "{fault:?}: no word of resuming:\n{stderr}"
    );
    // The agent says where it resumed, and the second request asked for the rest from
    // there, not for the whole blob again: what crossed the proxy after the first
    // connection's FAULT_AFTER bytes is one response head and the blob's remainder.
    let resumed = stderr
        .lines()
        .find(|line| line.contains("resuming"))
        .unwrap();
    let at_byte: u64 = resumed
        .split_whitespace()
        .find_map(|word| word.strip_prefix("at_byte="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no at_byte=N in {resumed:?}"));
    assert!(at_byte > 0 && at_byte < FAULT_AFTER, "{resumed}");
    let total = snapshot.bytes.len() as u64;
    let after_first = proxy.bytes_to_client() - FAULT_AFTER;
    assert!(
        (total - at_byte..total - at_byte + 4096).contains(&after_first),
        "{fault:?}: resumed at byte {at_byte} of {total}, but {after_first} bytes came after \
         the first connection"
    );
    if !matches!(fault, Fault::Reset { .. }) {
        // A cut or a stall loses nothing that was sent: the agent had all of it but the
        // response head. (A reset may discard what the client had not yet read.)
        assert!(at_byte > FAULT_AFTER - 4096, "{resumed}");
    }
    assert!(!stderr.contains(&sig_of(&url)), "{stderr}");
    (output, elapsed)
}

#[test]
fn a_connection_cut_mid_body_is_resumed() {
    assert_resumes_after(Fault::Cut { after: FAULT_AFTER }, &[]);
}

#[test]
fn a_stalled_connection_is_resumed_after_the_stall_timeout() {
    let (_, elapsed) = assert_resumes_after(
        Fault::Stall { after: FAULT_AFTER },
        &["--snapshot-stall-timeout", "1s"],
    );
    assert!(
        elapsed >= Duration::from_secs(1),
        "resumed before the stall timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(8),
        "the stall was not detected promptly: {elapsed:?}"
    );
}

#[test]
fn a_connection_reset_mid_body_is_resumed() {
    assert_resumes_after(Fault::Reset { after: FAULT_AFTER }, &[]);
}

#[test]
fn an_unreachable_endpoint_gives_up_within_the_retry_budget() {
    let port = closed_port();
    let url = format!(
        "http://127.0.0.1:{port}/{ACCOUNT}/{CONTAINER}/big.tar.gz?{}",
        sas::blob_sas(
            ACCOUNT,
            ACCOUNT_KEY,
            CONTAINER,
            "big.tar.gz",
            "r",
            in_an_hour()
        )
    );
    let task = Task::new();
    let (output, elapsed) =
        timed(fetch_command(&task.workdir(), &url).args(["--snapshot-retry-budget", "2s"]));
    let line = assert_failed(&output, 69, "snapshot_unavailable");
    assert!(
        elapsed < Duration::from_secs(6),
        "gave up only after {elapsed:?}"
    );
    assert!(
        line.contains(&format!(
            "http://127.0.0.1:{port}/{ACCOUNT}/{CONTAINER}/big.tar.gz"
        )),
        "{line}"
    );
    assert!(!line.contains(&sig_of(&url)), "{line}");
    assert!(is_empty_dir(&task.workdir()));
}

// ---------------------------------------------------------------------------------------
// 4. ETag pinning

/// The blob is replaced while the agent is between its first response and the resume.
///
/// The proxy stalls the first connection after `FAULT_AFTER` bytes; the test waits until
/// exactly that many bytes have crossed (the agent now holds the start of version 1), then
/// replaces the blob with version 2 of the same size, before the agent's 2 s stall timeout
/// makes it resume. Plain tar, so that a stitched file (version 1's head, version 2's tail)
/// would still unpack: only the digest and the file contents could tell.
///
/// What the implementation does: the resume is a range request with `If-Match` set to the
/// first response's ETag, Azurite answers 412, and the agent fails with exit 69
/// (snapshot_unavailable, retryable: the next try fetches the new version), saying the blob
/// was replaced, with the workdir left empty. Fetching version 2 whole would also be
/// correct, so the test accepts that too, but never a mix.
#[test]
fn a_blob_replaced_mid_download_is_never_stitched() {
    let azurite = azurite();
    let data = |seed| archive::noise(1 << 20, seed);
    let (one, two) = (data(11), data(12));
    let version1 = Snapshot::of(&[("data.bin", &one), ("end.txt", b"v1\n")], false);
    let version2 = Snapshot::of(&[("data.bin", &two), ("end.txt", b"v2\n")], false);
    assert_eq!(version1.bytes.len(), version2.bytes.len());
    version1.upload(&azurite, "big.tar");
    let proxy = Proxy::start(
        azurite.addr(),
        Plan::first(1, Fault::Stall { after: FAULT_AFTER }),
    );
    let url = proxy.url(&azurite.read_url(CONTAINER, "big.tar"));
    let task = Task::new();
    let mut command = fetch_command(&task.workdir(), &url);
    command.args(["--snapshot-stall-timeout", "2s"]);
    let mut agent = Agent::spawn(&task, command);

    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.bytes_to_client() < FAULT_AFTER {
        agent.check_running("the first response stalled");
        assert!(
            Instant::now() < deadline,
            "the stall never came: {} bytes",
            proxy.bytes_to_client()
        );
        thread::sleep(Duration::from_millis(5));
    }
    version2.upload(&azurite, "big.tar");
    assert_eq!(
        proxy.connections(),
        1,
        "the agent resumed before the blob was replaced; the test proves nothing"
    );
    let (status, _) = agent.wait();
    let log = agent.log();
    let stdout = fs::read_to_string(task.path("agent.out")).unwrap_or_default();
    assert!(proxy.connections() >= 2, "no resume was tried:\n{log}");
    match status.code() {
        Some(69) => {
            let line = log
                .lines()
                .find(|line| line.contains("kind=snapshot_unavailable"))
                .unwrap_or_else(|| panic!("no snapshot_unavailable error:\n{log}"));
            assert!(line.contains("replaced"), "does not say why: {line}");
            assert!(
                is_empty_dir(&task.workdir()),
                "a failed fetch left {:?}",
                files_in(&task.workdir()).keys().collect::<Vec<_>>()
            );
            assert_eq!(stdout, "", "a failed fetch printed a report");
        }
        Some(0) => {
            let report: Value = serde_json::from_str(stdout.trim()).expect("report JSON");
            assert_eq!(report["sha256"], version2.sha256, "not version 2's digest");
            assert_unpacked(&task.workdir(), &version2);
        }
        other => panic!("exit {other:?}:\n{log}"),
    }
}

// ---------------------------------------------------------------------------------------
// 5. TLS

/// https Azurite with the small snapshot, and a SAS URL for it.
fn https_azurite(tls: &Tls) -> (Azurite, String) {
    let azurite = Azurite::start_https_oauth(tls);
    azurite.create_container(CONTAINER);
    Snapshot::small().upload(&azurite, "etl/v1.tar.gz");
    let url = azurite.read_url(CONTAINER, "etl/v1.tar.gz");
    assert!(url.starts_with("https://"), "{url}");
    (azurite, url)
}

/// A fetch over https with `SSL_CERT_FILE=bundle` and a 2 s retry budget fails with 69
/// within a few seconds, saying the problem is the certificate.
#[track_caller]
fn assert_untrusted(url: &str, bundle: &Path) {
    let task = Task::new();
    let (output, elapsed) = timed(
        fetch_command(&task.workdir(), url)
            .env("SSL_CERT_FILE", bundle)
            .args(["--snapshot-retry-budget", "2s"]),
    );
    let line = assert_failed(&output, 69, "snapshot_unavailable");
    assert!(
        elapsed < Duration::from_secs(6),
        "gave up only after {elapsed:?}"
    );
    let lower = line.to_ascii_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("unknownissuer"),
        "does not name the certificate problem: {line}"
    );
    assert!(!line.contains(&sig_of(url)), "{line}");
    assert!(is_empty_dir(&task.workdir()));
}

#[test]
fn a_certificate_from_an_untrusted_ca_fails_within_the_retry_budget() {
    let tls = Tls::new();
    let (azurite, url) = https_azurite(&tls);
    // A bundle with another CA: Azurite's certificate chains to nothing trusted.
    let other = Tls::new();
    assert_untrusted(&url, &other.ca_file());

    // The same with the test CA trusted goes through: the certificate was the only problem.
    let trusted = Task::new();
    let (output, _) =
        timed(fetch_command(&trusted.workdir(), &url).env("SSL_CERT_FILE", tls.ca_file()));
    assert_fetched(
        &output,
        &trusted.workdir(),
        &azurite.blob_url(CONTAINER, "etl/v1.tar.gz"),
        &Snapshot::small(),
        "off",
    );
}

/// No CA at all: SSL_CERT_FILE is an empty file (and SSL_CERT_DIR unset, as `isolate`
/// leaves it), so no root can be loaded. `run` and `fetch` must both fail as
/// snapshot_unavailable, not crash.
#[test]
fn an_empty_ca_bundle_fails_within_the_retry_budget() {
    let tls = Tls::new();
    let (_azurite, url) = https_azurite(&tls);
    let scratch = tempfile::tempdir().unwrap();
    let empty = archive::write(scratch.path(), "empty-bundle.pem", b"");

    let task = Task::new();
    let (output, elapsed) = timed(run_command(&task, &url).env("SSL_CERT_FILE", &empty).args([
        "--snapshot-retry-budget",
        "2s",
        "--",
        "true",
    ]));
    assert_failed(&output, 69, "snapshot_unavailable");
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    let record = task.record();
    assert_eq!(
        record["error"]["kind"], "snapshot_unavailable",
        "{record:#}"
    );
    assert_eq!(record["retryable"], true);
    let message = record["error"]["message"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(message.contains("certificate"), "{record:#}");

    assert_untrusted(&url, &empty);
}

// ---------------------------------------------------------------------------------------
// 6. Parallel ranged reads

#[test]
fn parallel_ranged_reads_give_the_same_snapshot() {
    let azurite = azurite();
    let snapshot = Snapshot::large(21);
    snapshot.upload(&azurite, "big.tar.gz");
    // A pass-through proxy counts connections: requests one after another share one
    // keep-alive connection, so more than one means requests were in flight together.
    let proxy = Proxy::start(azurite.addr(), Plan::pass());
    let task = Task::new();
    let url = proxy.url(&azurite.read_url(CONTAINER, "big.tar.gz"));
    let (output, _) = timed(fetch_command(&task.workdir(), &url).args([
        "--snapshot-parallelism",
        "4",
        "--snapshot-block-size",
        "64Ki",
    ]));
    let source = format!("http://{}/{ACCOUNT}/{CONTAINER}/big.tar.gz", proxy.addr());
    assert_fetched(&output, &task.workdir(), &source, &snapshot, "off");
    // It really was read in 64 KiB ranges: Azurite logged one GET of the blob a block.
    let blocks = snapshot.bytes.len().div_ceil(64 * 1024);
    // Azurite writes its log asynchronously: give the last lines a moment to land.
    let count_gets = || {
        azurite
            .log()
            .lines()
            .filter(|line| line.contains("GET /devstoreaccount1/snapshots/big.tar.gz"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut gets = count_gets();
    while gets < blocks && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        gets = count_gets();
    }
    assert!(
        gets >= blocks,
        "{gets} GETs for {blocks} blocks:\n{}",
        azurite.log()
    );
    assert!(
        proxy.connections() >= 2,
        "{} connection(s): the ranged reads were not concurrent",
        proxy.connections()
    );
}

// ---------------------------------------------------------------------------------------
// 7. Cache

#[test]
fn the_cache_serves_a_pinned_snapshot_without_downloading_and_survives_tampering() {
    let azurite = azurite();
    let snapshot = Snapshot::small();
    snapshot.upload(&azurite, "etl/v1.tar.gz");
    let url = azurite.read_url(CONTAINER, "etl/v1.tar.gz");
    let source = azurite.blob_url(CONTAINER, "etl/v1.tar.gz");
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    let entry = cache.join(format!("{}.snapshot", snapshot.sha256));
    let fetch = |name: &str, pinned: bool| {
        let workdir = scratch.path().join(name);
        let mut command = fetch_command(&workdir, &url);
        command.arg("--cache-dir").arg(&cache);
        if pinned {
            command.args(["--snapshot-sha256", &snapshot.sha256]);
        }
        (timed(&mut command).0, workdir)
    };

    let (output, workdir) = fetch("first", true);
    assert_fetched(&output, &workdir, &source, &snapshot, "miss");
    assert_eq!(fs::read(&entry).expect("cache entry"), snapshot.bytes);
    let names: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("{}.snapshot", snapshot.sha256)]);

    // A tampered entry: another valid archive of the same size, so only the digest can
    // tell. It is refused, nothing of it stays in the workdir, and the blob is fetched.
    let evil = Snapshot::of(
        &[
            ("README.txt", b"snapshot from Azurite\n"),
            ("dags/etl.py", b"print('pwn')\n"),
        ],
        true,
    );
    fs::write(&entry, &evil.bytes).unwrap();
    let (output, workdir) = fetch("tampered", true);
    assert_fetched(&output, &workdir, &source, &snapshot, "miss");
    let stderr = common::stderr(&output);
    assert!(
        stderr.contains("[task-agent] WARN") && stderr.contains("cache"),
        "the bad entry was not reported:\n{stderr}"
    );
    assert_eq!(
        fs::read(&entry).expect("cache entry"),
        snapshot.bytes,
        "the tampered entry was not replaced"
    );

    // A hit needs no blob at all: deleted, then Azurite gone.
    azurite.delete(CONTAINER, "etl/v1.tar.gz");
    let (output, workdir) = fetch("deleted", true);
    assert_fetched(&output, &workdir, &source, &snapshot, "hit");
    drop(azurite);
    let (output, workdir) = fetch("stopped", true);
    assert_fetched(&output, &workdir, &source, &snapshot, "hit");
}

#[test]
fn without_a_pinned_digest_the_cache_is_off() {
    let azurite = azurite();
    let snapshot = Snapshot::small();
    snapshot.upload(&azurite, "etl/v1.tar.gz");
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    let workdir = scratch.path().join("workspace");
    let (output, _) = timed(
        fetch_command(&workdir, &azurite.read_url(CONTAINER, "etl/v1.tar.gz"))
            .arg("--cache-dir")
            .arg(&cache),
    );
    assert_fetched(
        &output,
        &workdir,
        &azurite.blob_url(CONTAINER, "etl/v1.tar.gz"),
        &snapshot,
        "off",
    );
    assert!(is_empty_dir(&cache), "the cache was written to");
}

// ---------------------------------------------------------------------------------------
// 8. Publish

#[test]
fn publish_a_directory_then_fetch_it_pinned() {
    let azurite = azurite();
    let scratch = tempfile::tempdir().unwrap();
    let project = scratch.path().join("etl");
    fs::create_dir_all(project.join("dags")).unwrap();
    fs::write(project.join("dags/etl.py"), "print('published')\n").unwrap();
    fs::write(project.join("requirements.txt"), "pandas==2.2.3\n").unwrap();

    let to = azurite.sas_url(CONTAINER, "etl/1.4.tar.gz", "cw", in_an_hour());
    let mut command = agent_command();
    common::isolate(&mut command)
        .arg("publish")
        .arg(&project)
        .arg("--to")
        .arg(&to);
    let (output, _) = timed(&mut command);
    assert_exit_code(&output, 0);
    let stdout = common::stdout(&output);
    let blob_url = azurite.blob_url(CONTAINER, "etl/1.4.tar.gz");
    let (sha256, uri) = stdout
        .trim_end_matches('\n')
        .split_once("  ")
        .unwrap_or_else(|| panic!("not `SHA256  URI`: {stdout:?}"));
    assert_eq!(uri, blob_url, "{stdout:?}");
    assert!(
        sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
        "{stdout:?}"
    );
    let all = format!("{stdout}{}", common::stderr(&output));
    assert!(
        !all.contains("sig=") && !all.contains(&sig_of(&to)),
        "{all}"
    );
    let stored = azurite
        .download(CONTAINER, "etl/1.4.tar.gz")
        .expect("the blob was written");
    assert_eq!(archive::sha256_hex(&stored), sha256);

    // The same digest `pack` gives for the directory.
    let packed = scratch.path().join("etl.tar.gz");
    let output = agent_command()
        .arg("pack")
        .arg(&project)
        .arg("-o")
        .arg(&packed)
        .output()
        .unwrap();
    assert_exit_code(&output, 0);
    assert!(
        common::stdout(&output).starts_with(&format!("{sha256}  ")),
        "{}",
        common::stdout(&output)
    );

    let workdir = scratch.path().join("workspace");
    let (output, _) = timed(
        fetch_command(&workdir, &azurite.read_url(CONTAINER, "etl/1.4.tar.gz"))
            .args(["--snapshot-sha256", sha256]),
    );
    assert_exit_code(&output, 0);
    let report: Value = serde_json::from_str(common::stdout(&output).trim()).unwrap();
    assert_eq!(report["sha256"], sha256);
    assert_eq!(report["bytes"], stored.len());
    assert_eq!(report["files"], 2);
    assert_eq!(
        fs::read_to_string(workdir.join("dags/etl.py")).unwrap(),
        "print('published')\n"
    );
    assert_eq!(
        fs::read_to_string(workdir.join("requirements.txt")).unwrap(),
        "pandas==2.2.3\n"
    );

    // A file that is no archive is refused before anything is uploaded.
    let notes = archive::write(scratch.path(), "notes.txt", b"just some notes\n");
    let to = azurite.sas_url(CONTAINER, "etl/notes.tar.gz", "cw", in_an_hour());
    let mut command = agent_command();
    common::isolate(&mut command)
        .arg("publish")
        .arg(&notes)
        .arg("--to")
        .arg(&to);
    let (output, _) = timed(&mut command);
    assert_failed(&output, 64, "usage");
    assert_eq!(azurite.download(CONTAINER, "etl/notes.tar.gz"), None);
}

// ---------------------------------------------------------------------------------------
// 9 and 11. run --snapshot, --return-upload

/// A JSON document of exactly `len` bytes.
fn json_of_len(len: usize) -> Vec<u8> {
    let head = br#"{"rows":""#;
    let tail = br#""}"#;
    let mut text = head.to_vec();
    text.resize(len - tail.len(), b'x');
    text.extend_from_slice(tail);
    assert!(serde_json::from_slice::<Value>(&text).is_ok());
    text
}

#[test]
fn run_uploads_a_large_return_value_and_records_a_reference() {
    let azurite = azurite();
    azurite.create_container("returns");
    let value = json_of_len(10_000);
    let value_sha256 = archive::sha256_hex(&value);
    let snapshot = Snapshot::of(&[("result.json", &value), ("main.sh", b"echo ran\n")], true);
    snapshot.upload(&azurite, "etl/v1.tar.gz");
    let task = Task::new();
    let prefix_sas = sas::account_sas(ACCOUNT, ACCOUNT_KEY, "rcw", in_an_hour());
    let prefix = format!("{}/returns/task-1?{prefix_sas}", azurite.account_url());

    let (output, _) = timed(
        run_command(&task, &azurite.read_url(CONTAINER, "etl/v1.tar.gz"))
            .arg("--return-upload")
            .arg(&prefix)
            .args([
                "--",
                "sh",
                "-c",
                "cp result.json \"$TASK_AGENT_RETURN_FILE\"",
            ]),
    );
    assert_exit_code(&output, 0);
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(record["return_value"], Value::Null);
    let blob = format!("task-1/{value_sha256}.json");
    assert_eq!(
        record["return_value_ref"],
        json!({
            "uri": azurite.blob_url("returns", &blob),
            "sha256": value_sha256,
            "bytes": value.len(),
        }),
        "{record:#}"
    );
    let text = record.to_string();
    assert!(
        !text.contains("sig=") && !text.contains(&sig_of(&prefix_sas)),
        "{text}"
    );
    assert_eq!(azurite.download("returns", &blob), Some(value));
    // As docs/agent.md says (and the brief): the value is not in the record, so the record
    // says it was truncated, and where it went.
    assert_eq!(
        record["return_value_truncated"], true,
        "a return value moved to return_value_ref is not flagged truncated: {record:#}"
    );
}

#[test]
fn run_with_a_snapshot_from_azurite_records_it() {
    let azurite = azurite();
    let snapshot = Snapshot::small();
    snapshot.upload(&azurite, "etl/v1.tar.gz");
    let task = Task::new();
    let (output, _) = timed(
        run_command(&task, &azurite.read_url(CONTAINER, "etl/v1.tar.gz")).args([
            "--",
            "sh",
            "-c",
            "cat README.txt dags/etl.py > seen.txt",
        ]),
    );
    assert_exit_code(&output, 0);
    assert_eq!(
        fs::read_to_string(task.workdir().join("seen.txt")).unwrap(),
        "snapshot from Azurite\nprint('etl')\n",
        "the child did not see the snapshot's files"
    );
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert_eq!(
        record["snapshot"],
        json!({
            "source": azurite.blob_url(CONTAINER, "etl/v1.tar.gz"),
            "sha256": snapshot.sha256,
            "bytes": snapshot.bytes.len(),
            "files": 2,
            "cache": "off",
        })
    );
    assert!(
        record["durations_ms"]["snapshot"].is_u64(),
        "no snapshot duration: {record:#}"
    );
}

// ---------------------------------------------------------------------------------------
// 10. Secrets

/// Everything a run or fetch showed: stdout, stderr and the record if there is one.
fn everything(output: &Output, task: &Task) -> String {
    format!(
        "{}\n{}\n{}",
        common::stdout(output),
        common::stderr(output),
        fs::read_to_string(task.result_file()).unwrap_or_default()
    )
}

#[track_caller]
fn assert_none_of(text: &str, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what}: a secret ({}…) leaked:\n{text}",
            &secret[..8]
        );
    }
}

/// Runs `fetch` and `run -- true` for `source` with `env` at trace level; gives all they
/// showed, with the exit codes.
fn fetch_and_run(source: &str, env: &[(&str, &OsStr)]) -> Vec<(Option<i32>, String)> {
    let mut shown = Vec::new();
    let task = Task::new();
    let mut command = fetch_command(&task.workdir(), source);
    command
        .args(["--log-level", "trace"])
        .envs(env.iter().copied());
    let (output, _) = timed(&mut command);
    shown.push((output.status.code(), everything(&output, &task)));

    let task = Task::new();
    let mut command = run_command(&task, source);
    command
        .args(["--log-level", "trace", "--", "true"])
        .envs(env.iter().copied());
    let (output, _) = timed(&mut command);
    task.record();
    shown.push((output.status.code(), everything(&output, &task)));
    shown
}

#[test]
fn no_credential_appears_in_output_logs_or_records() {
    let azurite = azurite();
    Snapshot::small().upload(&azurite, "etl/v1.tar.gz");
    let sas_url = azurite.read_url(CONTAINER, "etl/v1.tar.gz");
    let forged = tampered(&sas_url);
    let plain_url = azurite.blob_url(CONTAINER, "etl/v1.tar.gz");

    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let https = Azurite::start_https_oauth(&tls);
    https.create_container(CONTAINER);
    Snapshot::small().upload(&https, "etl/v1.tar.gz");
    let scratch = tempfile::tempdir().unwrap();
    let token = token_file(scratch.path());

    let mut secrets = vec![ACCOUNT_KEY.to_string(), FEDERATED_TOKEN.to_string()];
    for url in [&sas_url, &forged] {
        secrets.push(sig_of(url));
        secrets.push(percent_decode(&sig_of(url)));
    }

    let mut shown = fetch_and_run(&sas_url, &[]);
    shown.extend(fetch_and_run(
        &plain_url,
        &[
            ("AZURE_STORAGE_ACCOUNT", OsStr::new(ACCOUNT)),
            ("AZURE_STORAGE_KEY", OsStr::new(ACCOUNT_KEY)),
        ],
    ));
    let (authority, ca_file) = (entra.authority(), tls.ca_file());
    let entra_env = [
        ("AZURE_FEDERATED_TOKEN_FILE", token.as_os_str()),
        ("AZURE_CLIENT_ID", OsStr::new(CLIENT_ID)),
        ("AZURE_TENANT_ID", OsStr::new(TENANT_ID)),
        ("AZURE_AUTHORITY_HOST", OsStr::new(&authority)),
        ("SSL_CERT_FILE", ca_file.as_os_str()),
    ];
    let https_url = https.blob_url(CONTAINER, "etl/v1.tar.gz");
    shown.extend(fetch_and_run(&https_url, &entra_env));
    let denied = fetch_and_run(&forged, &[]);

    let codes: Vec<_> = shown.iter().map(|(code, _)| *code).collect();
    assert_eq!(codes, vec![Some(0); 6], "{shown:#?}");
    let codes: Vec<_> = denied.iter().map(|(code, _)| *code).collect();
    assert_eq!(codes, vec![Some(77); 2], "{denied:#?}");
    // The checks below look at real output: trace level logs the agent's steps.
    assert!(
        shown[0].1.contains("[task-agent] DEBUG") || shown[0].1.contains("[task-agent] TRACE"),
        "{}",
        shown[0].1
    );

    let issued = entra.issued();
    assert_eq!(issued.len(), 2, "one token for each Entra fetch");
    secrets.extend(issued);
    for (_, text) in shown.iter().chain(&denied) {
        assert_none_of(text, &secrets, "trace-level fetch or run");
        assert!(!text.contains("sig="), "a SAS query was shown:\n{text}");
    }
}

#[test]
fn a_child_printing_its_environment_and_the_agent_command_line_shows_no_sas() {
    let azurite = azurite();
    Snapshot::small().upload(&azurite, "etl/v1.tar.gz");
    let sas_url = azurite.read_url(CONTAINER, "etl/v1.tar.gz");
    let signature = sig_of(&sas_url);
    let task = Task::new();
    // The SAS reaches the agent twice: on its command line and in the environment (as a
    // connection string, which the child inherits). The child prints both, to stdout and
    // to stderr.
    let script = "env; tr '\\0' ' ' < /proc/$PPID/cmdline; echo; \
                  { env; tr '\\0' ' ' < /proc/$PPID/cmdline; echo; } >&2";
    let connection_string = format!(
        "BlobEndpoint={};SharedAccessSignature={}",
        azurite.account_url(),
        sas_url.split_once('?').unwrap().1
    );
    let (output, _) = timed(
        run_command(&task, &sas_url)
            .env("AZURE_STORAGE_CONNECTION_STRING", &connection_string)
            .args(["--", "sh", "-c", script]),
    );
    assert_exit_code(&output, 0);
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let stdout = common::stdout(&output);
    let stderr = common::stderr(&output);
    // The child's output did come through (masked), so the check below means something.
    assert!(
        stdout.contains("AZURE_STORAGE_CONNECTION_STRING=")
            && stdout.contains("--snapshot")
            && stdout.contains("***"),
        "{stdout}"
    );
    let secrets = [signature.clone(), percent_decode(&signature)];
    assert_none_of(&stdout, &secrets, "stdout");
    assert_none_of(&stderr, &secrets, "stderr");
    assert_none_of(&record.to_string(), &secrets, "record");
}
