//! Data between tasks: `task-agent run --output/--input/--artifacts` against a real blob
//! endpoint (Azurite, one per test, in memory). A producer run uploads files, directories
//! and archives; a consumer run downloads them by the URIs and digests the producer's record
//! gave, as the Airflow side passes them on. Faults come from `common::proxy` between the
//! agent and Azurite.

mod common;

use std::fs;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::assertions::{assert_error_kind, assert_exit_code};
use common::azurite::{ACCOUNT, ACCOUNT_KEY, Azurite};
use common::proxy::{Fault, Plan, Proxy};
use common::{Task, sas};
use serde_json::Value;
use sha2::{Digest, Sha256};

const CONTAINER: &str = "runs";
const TRY_PREFIX: &str = "user1_pipeline/manual__1/transform/-1/1";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An account SAS allowing what the agent needs on artifacts (read, create, write, list).
fn account_sas() -> String {
    sas::account_sas(
        ACCOUNT,
        ACCOUNT_KEY,
        "rcwl",
        SystemTime::now() + Duration::from_secs(3600),
    )
}

/// The try's folder on `base` (Azurite or a proxy in front of it), with the SAS.
fn artifacts_url(base: &str) -> String {
    format!(
        "http://{base}/{ACCOUNT}/{CONTAINER}/{TRY_PREFIX}/?{}",
        account_sas()
    )
}

fn azurite() -> Azurite {
    let azurite = Azurite::start();
    azurite.create_container(CONTAINER);
    azurite
}

/// `task-agent run` with a clean environment (no ambient Azure settings).
fn run(task: &Task) -> Command {
    let mut command = task.command();
    common::isolate(&mut command);
    command
}

/// `run` writing outputs to the try's folder on `base` (Azurite or a proxy in front of it).
fn producing(task: &Task, base: &str) -> Command {
    let mut command = run(task);
    command.arg("--artifacts").arg(artifacts_url(base));
    command
}

fn everything(output: &Output, task: &Task) -> String {
    format!(
        "{}{}{}",
        common::stdout(output),
        common::stderr(output),
        fs::read_to_string(task.result_file()).unwrap_or_default()
    )
}

/// The producer's command: a file, a directory of several files, and a directory to archive.
const PRODUCE: &str = "mkdir -p data/parts/deeper bundle && \
     printf 'id,name\\n1,ada\\n' > data/out.csv && \
     printf 'one' > data/parts/a.txt && printf 'two' > data/parts/deeper/b.txt && \
     printf 'packed' > bundle/inside.txt";

fn produce(task: &Task, azurite_addr: &str) -> Output {
    producing(task, azurite_addr)
        .args([
            "--output",
            "data/out.csv",
            "--output",
            "data/parts",
            "--output",
            "bundle#archive",
        ])
        .args(["--", "sh", "-c", PRODUCE])
        .output()
        .expect("task-agent runs")
}

fn output_named<'a>(record: &'a Value, path: &str) -> &'a Value {
    record["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs: {record:#}"))
        .iter()
        .find(|o| o["path"] == path)
        .unwrap_or_else(|| panic!("no output {path}: {record:#}"))
}

/// The blob path of a record's URI within the container.
fn blob_path(uri: &str) -> String {
    let marker = format!("/{ACCOUNT}/{CONTAINER}/");
    let at = uri.find(&marker).expect("an Azurite URI") + marker.len();
    uri[at..].to_string()
}

#[test]
fn outputs_are_uploaded_with_their_digests_and_the_manifest_last() {
    let azurite = azurite();
    let task = Task::new();
    let output = produce(&task, &azurite.addr().to_string());
    assert_exit_code(&output, 0);
    let record = task.record();
    assert_eq!(record["status"], "succeeded", "{record:#}");
    assert!(record["durations_ms"]["outputs"].is_u64(), "{record:#}");

    let file = output_named(&record, "data/out.csv");
    assert_eq!(file["kind"], "file");
    assert_eq!(file["bytes"], 14);
    assert_eq!(file["sha256"], sha256_hex(b"id,name\n1,ada\n"));
    let stored = azurite
        .download(CONTAINER, &blob_path(file["uri"].as_str().unwrap()))
        .expect("the file's blob");
    assert_eq!(stored, b"id,name\n1,ada\n");
    let workdir = task.workdir();
    assert!(
        file["uri"].as_str().unwrap().ends_with(&format!(
            "{TRY_PREFIX}/files{}/data/out.csv",
            workdir.display()
        )),
        "{file}"
    );

    let parts = output_named(&record, "data/parts");
    assert_eq!(parts["kind"], "directory");
    assert_eq!(parts["files"], 2);
    let manifest = format!(
        "{}  a.txt\n{}  deeper/b.txt\n",
        sha256_hex(b"one"),
        sha256_hex(b"two")
    );
    assert_eq!(
        parts["sha256"],
        sha256_hex(manifest.as_bytes()),
        "sha256sum's manifest"
    );
    let folder = blob_path(parts["uri"].as_str().unwrap());
    assert!(folder.ends_with('/'), "{folder}");
    assert_eq!(
        azurite
            .download(CONTAINER, &format!("{folder}deeper/b.txt"))
            .unwrap(),
        b"two"
    );

    let bundle = output_named(&record, "bundle");
    assert_eq!(bundle["kind"], "archive");
    let archive = azurite
        .download(CONTAINER, &blob_path(bundle["uri"].as_str().unwrap()))
        .unwrap();
    assert_eq!(bundle["sha256"], sha256_hex(&archive));
    assert_eq!(&archive[..2], &[0x1f, 0x8b], "a gzip stream");

    let manifest_ref = &record["outputs_manifest"];
    let manifest_blob = azurite
        .download(CONTAINER, &format!("{TRY_PREFIX}/_manifest.json"))
        .expect("the manifest");
    assert_eq!(manifest_ref["sha256"], sha256_hex(&manifest_blob));
    let listed: Value = serde_json::from_slice(&manifest_blob).unwrap();
    assert_eq!(listed["outputs"], record["outputs"]);

    let text = everything(&output, &task);
    assert!(!text.contains("sig="), "a SAS was shown: {text}");
}

/// Runs a consumer that reads what `record` (a producer's) recorded, and lists what it got.
fn consume(task: &Task, inputs: &[String]) -> Output {
    let mut command = run(task);
    for input in inputs {
        command.arg("--input").arg(input);
    }
    command
        .args([
            "--",
            "sh",
            "-c",
            "cat in/out.csv; find in -type f | sort; cat in/parts/deeper/b.txt in/bundle/inside.txt",
        ])
        .output()
        .expect("task-agent runs")
}

/// `--input PATH=URI#sha256=…[,archive]` for a producer's output, through `base`.
fn input_for(output: &Value, path: &str, base: &str, azurite: &Azurite) -> String {
    let uri = output["uri"]
        .as_str()
        .unwrap()
        .replace(&azurite.addr().to_string(), base);
    let archive = if output["kind"] == "archive" {
        ",archive"
    } else {
        ""
    };
    format!(
        "{path}={uri}?{}#sha256={}{archive}",
        account_sas(),
        output["sha256"].as_str().unwrap()
    )
}

#[test]
fn a_consumer_gets_what_the_producer_recorded_verified() {
    let azurite = azurite();
    let addr = azurite.addr().to_string();
    let producer = Task::new();
    assert_exit_code(&produce(&producer, &addr), 0);
    let record = producer.record();

    let consumer = Task::new();
    let inputs = vec![
        input_for(
            output_named(&record, "data/out.csv"),
            "in/out.csv",
            &addr,
            &azurite,
        ),
        input_for(
            output_named(&record, "data/parts"),
            "in/parts",
            &addr,
            &azurite,
        ),
        input_for(
            output_named(&record, "bundle"),
            "in/bundle",
            &addr,
            &azurite,
        ),
    ];
    let output = consume(&consumer, &inputs);
    assert_exit_code(&output, 0);
    assert_eq!(
        common::stdout(&output),
        "id,name\n1,ada\nin/bundle/inside.txt\nin/out.csv\nin/parts/a.txt\nin/parts/deeper/b.txt\ntwopacked"
    );
    let consumed = consumer.record();
    let inputs = consumed["inputs"].as_array().expect("inputs in the record");
    assert_eq!(inputs.len(), 3);
    for (input, path) in inputs.iter().zip(["data/out.csv", "data/parts", "bundle"]) {
        assert_eq!(
            input["sha256"],
            output_named(&record, path)["sha256"],
            "{input}"
        );
    }
    assert!(!everything(&output, &consumer).contains("sig="));
}

#[test]
fn an_input_changed_after_its_producer_wrote_it_is_refused_and_not_written() {
    let azurite = azurite();
    let addr = azurite.addr().to_string();
    let producer = Task::new();
    assert_exit_code(&produce(&producer, &addr), 0);
    let record = producer.record();
    let file = output_named(&record, "data/out.csv");
    // Someone rewrites the blob after the producer recorded its digest.
    azurite.upload(
        CONTAINER,
        &blob_path(file["uri"].as_str().unwrap()),
        b"id,name\n1,eve\n",
    );

    let consumer = Task::new();
    let output = consume(&consumer, &[input_for(file, "in/out.csv", &addr, &azurite)]);
    assert_exit_code(&output, 65);
    let consumed = consumer.record();
    assert_error_kind(&consumed, "input_integrity");
    assert_eq!(consumed["child_exit_code"], Value::Null, "the command ran");
    assert!(!consumer.workdir().join("in/out.csv").exists());
    assert_eq!(
        fs::read_dir(consumer.workdir().join("in")).unwrap().count(),
        0,
        "a partial download was left behind"
    );
}

#[test]
fn a_missing_input_is_not_found() {
    let azurite = azurite();
    let addr = azurite.addr().to_string();
    let task = Task::new();
    let output = consume(
        &task,
        &[format!(
            "in/x.csv=http://{addr}/{ACCOUNT}/{CONTAINER}/nothing/here.csv?{}",
            account_sas()
        )],
    );
    assert_exit_code(&output, 66);
    assert_error_kind(&task.record(), "input_not_found");
}

#[test]
fn a_missing_output_fails_the_task_and_publishes_nothing() {
    let azurite = azurite();
    let task = Task::new();
    let output = producing(&task, &azurite.addr().to_string())
        .args(["--output", "written.txt", "--output", "never.txt"])
        .args(["--", "sh", "-c", "echo hi > written.txt"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 66);
    let record = task.record();
    assert_eq!(record["status"], "failed", "{record:#}");
    assert_eq!(record["retryable"], false);
    assert_error_kind(&record, "output_missing");
    assert!(
        record["error"]["message"]
            .as_str()
            .unwrap()
            .contains("never.txt")
    );
    assert_eq!(
        azurite.download(CONTAINER, &format!("{TRY_PREFIX}/_manifest.json")),
        None,
        "the manifest marks a complete set; this one is not"
    );
}

#[test]
fn an_optional_output_not_written_is_skipped() {
    let azurite = azurite();
    let task = Task::new();
    let output = producing(&task, &azurite.addr().to_string())
        .args(["--output", "written.txt", "--output", "maybe.txt#optional"])
        .args(["--", "sh", "-c", "echo hi > written.txt"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    let record = task.record();
    assert_eq!(record["outputs"].as_array().unwrap().len(), 1, "{record:#}");
}

#[test]
fn outputs_without_artifacts_are_a_usage_error() {
    let task = Task::new();
    let output = run(&task)
        .args(["--output", "x.txt", "--", "true"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 64);
    assert!(common::stderr(&output).contains("--artifacts"));
}

/// A file of `size` bytes of varied content, so blocks differ.
fn varied(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn a_large_output_goes_up_in_parallel_blocks_through_throttling() {
    let azurite = azurite();
    // The first requests are throttled (503 with Retry-After, then 429): retried.
    let proxy = Proxy::start(
        azurite.addr(),
        Plan::sequence(vec![Fault::busy(), Fault::too_many()]),
    );
    let task = Task::new();
    fs::create_dir_all(task.workdir()).unwrap();
    let data = varied(3 << 20);
    fs::write(task.workdir().join("big.bin"), &data).unwrap();
    let output = producing(&task, &proxy.addr().to_string())
        .args(["--upload-block-size", "256Ki", "--upload-parallelism", "4"])
        .args(["--output", "big.bin", "--", "true"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    let record = task.record();
    let big = output_named(&record, "big.bin");
    assert_eq!(big["bytes"], data.len() as u64);
    assert_eq!(big["sha256"], sha256_hex(&data));
    let uri = big["uri"]
        .as_str()
        .unwrap()
        .replace(&proxy.addr().to_string(), &azurite.addr().to_string());
    assert_eq!(azurite.download(CONTAINER, &blob_path(&uri)).unwrap(), data);
}

#[test]
fn uploads_denied_are_77_and_not_retried() {
    let azurite = azurite();
    let task = Task::new();
    let wrong =
        "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleQ==";
    let output = run(&task)
        .env(
            "AZURE_STORAGE_CONNECTION_STRING",
            format!(
                "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={wrong};BlobEndpoint={}",
                azurite.account_url()
            ),
        )
        .arg("--artifacts")
        .arg(format!("{}/{CONTAINER}/{TRY_PREFIX}/", azurite.account_url()))
        .args(["--output", "x.txt", "--", "sh", "-c", "echo x > x.txt"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 77);
    assert_error_kind(&task.record(), "output_denied");
    assert!(!everything(&output, &task).contains(wrong));
}

/// An agent uploading `big.bin` through a proxy whose connections all stall, stopped once
/// its outputs phase is under way.
fn agent_stuck_in_outputs(azurite: &Azurite, task: &Task) -> (common::agent::Agent, Proxy) {
    // Every connection stalls after a little: the upload hangs until the agent stops.
    let proxy = Proxy::start(azurite.addr(), Plan::always(Fault::Stall { after: 0 }));
    fs::create_dir_all(task.workdir()).unwrap();
    fs::write(task.workdir().join("big.bin"), varied(1 << 20)).unwrap();
    let mut command = run(task);
    command
        .arg("--artifacts")
        .arg(artifacts_url(&proxy.addr().to_string()))
        .args(["--output", "big.bin", "--", "true"]);
    let agent = common::agent::Agent::spawn(task, command);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let provisional = fs::read_to_string(task.result_file()).unwrap_or_default();
        if provisional.contains("\"phase\":\"outputs\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached the outputs phase"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (agent, proxy)
}

#[test]
fn an_agent_told_to_stop_mid_upload_is_terminated_retryable_and_publishes_nothing() {
    let azurite = azurite();
    let task = Task::new();
    let (mut agent, _proxy) = agent_stuck_in_outputs(&azurite, &task);
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _) = agent.wait();
    assert_eq!(status.code(), Some(143));
    let record = task.record();
    assert_eq!(record["status"], "terminated", "{record:#}");
    assert_eq!(record["retryable"], true);
    assert!(
        record["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uploading the outputs")
    );
    assert_eq!(
        azurite.download(CONTAINER, &format!("{TRY_PREFIX}/_manifest.json")),
        None
    );
}

#[test]
fn an_agent_killed_mid_upload_leaves_no_manifest() {
    let azurite = azurite();
    let task = Task::new();
    let (mut agent, _proxy) = agent_stuck_in_outputs(&azurite, &task);
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    agent.wait();
    assert_eq!(
        azurite.download(CONTAINER, &format!("{TRY_PREFIX}/_manifest.json")),
        None
    );
    let record: Value = serde_json::from_slice(&fs::read(task.result_file()).unwrap()).unwrap();
    assert_eq!(
        record["status"], "running",
        "only the provisional record: {record}"
    );
    assert_eq!(record["phase"], "outputs");
}

#[test]
fn declarations_from_a_yaml_file_work_like_options() {
    let azurite = azurite();
    let task = Task::new();
    let list = task.path("outputs.yaml");
    fs::write(&list, "- path: a.txt\n- path: b.txt\n  optional: true\n").unwrap();
    let output = producing(&task, &azurite.addr().to_string())
        .arg("--outputs-from")
        .arg(&list)
        .args(["--", "sh", "-c", "echo a > a.txt"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    assert_eq!(task.record()["outputs"][0]["path"], "a.txt");
}

#[test]
fn a_location_outside_the_tenants_storage_is_refused_before_any_request() {
    let task = Task::new();
    let policy = task.path("policy.yaml");
    fs::write(
        &policy,
        "tenants:\n  user1:\n    storage: [http://127.0.0.1:9/devstoreaccount1/exports]\n    artifacts: http://127.0.0.1:9/devstoreaccount1/runs\n",
    )
    .unwrap();
    // Port 9 is closed: had a request been sent, the error would be input_unavailable.
    let output = run(&task)
        .args(["--tenant", "user1", "--policy-file"])
        .arg(&policy)
        .arg("--input")
        .arg("in.csv=http://127.0.0.1:9/devstoreaccount1/other-tenant/secret.csv")
        .args(["--", "true"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 77);
    let record = task.record();
    assert_error_kind(&record, "policy_denied");
    let message = record["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("other-tenant/secret.csv") && message.contains("/runs"),
        "{message}"
    );

    let allowed = run(&task)
        .args(["--tenant", "user1", "--policy-file"])
        .arg(&policy)
        .arg("--input")
        .arg("in.csv=http://127.0.0.1:9/devstoreaccount1/exports/a.csv")
        .args(["--transfer-retry-budget", "1s", "--", "true"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&allowed, 69);
    assert_error_kind(&task.record(), "input_unavailable");
}

#[test]
fn cut_and_reset_connections_are_retried_on_upload_and_resumed_on_download() {
    let azurite = azurite();
    // Upload: the first two connections die before the answer comes back.
    let proxy = Proxy::start(
        azurite.addr(),
        Plan::sequence(vec![Fault::Cut { after: 0 }, Fault::Reset { after: 0 }]),
    );
    let producer = Task::new();
    fs::create_dir_all(producer.workdir()).unwrap();
    let data = varied(2 << 20);
    fs::write(producer.workdir().join("big.bin"), &data).unwrap();
    let output = producing(&producer, &proxy.addr().to_string())
        .args(["--upload-block-size", "256Ki"])
        .args(["--output", "big.bin", "--", "true"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    let record = producer.record();
    let big = output_named(&record, "big.bin");
    assert_eq!(big["sha256"], sha256_hex(&data));

    // Download: the stream is cut after 300 kB, then reset: it resumes where it stopped.
    let proxy = Proxy::start(
        azurite.addr(),
        Plan::sequence(vec![
            Fault::Cut { after: 300_000 },
            Fault::Reset { after: 300_000 },
        ]),
    );
    let consumer = Task::new();
    let base = proxy.addr().to_string();
    let input =
        input_for(big, "in/big.bin", &base, &azurite).replace(&producer_addr(&record), &base);
    let output = run(&consumer)
        .arg("--input")
        .arg(input)
        .args(["--", "true"])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    assert_eq!(
        fs::read(consumer.workdir().join("in/big.bin")).unwrap(),
        data
    );
}

/// The host:port the producer's record names (the upload proxy's, now gone).
fn producer_addr(record: &Value) -> String {
    let uri = record["outputs"][0]["uri"].as_str().unwrap();
    uri.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_local_store_on_disk_works_like_blob_storage() {
    // No cloud at all: the artifacts are a directory named by a file:// URI.
    let store = tempfile::tempdir().unwrap();
    let artifacts = format!("file://{}/runs/{TRY_PREFIX}/", store.path().display());
    let producer = Task::new();
    let output = run(&producer)
        .arg("--artifacts")
        .arg(&artifacts)
        .args([
            "--output",
            "data/out.csv",
            "--output",
            "data/parts",
            "--output",
            "bundle#archive",
        ])
        .args(["--", "sh", "-c", PRODUCE])
        .output()
        .expect("task-agent runs");
    assert_exit_code(&output, 0);
    let record = producer.record();
    let file = output_named(&record, "data/out.csv");
    assert!(
        file["uri"].as_str().unwrap().starts_with("file:///"),
        "{file}"
    );
    assert_eq!(file["sha256"], sha256_hex(b"id,name\n1,ada\n"));
    let manifest = store
        .path()
        .join(format!("runs/{TRY_PREFIX}/_manifest.json"));
    let listed: Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(listed["outputs"], record["outputs"]);
    assert_eq!(
        record["outputs_manifest"]["sha256"],
        sha256_hex(&fs::read(&manifest).unwrap())
    );

    let consumer = Task::new();
    let input = |path: &str, declared: &str| {
        let output = output_named(&record, path);
        let archive = if output["kind"] == "archive" {
            ",archive"
        } else {
            ""
        };
        format!(
            "{declared}={}#sha256={}{archive}",
            output["uri"].as_str().unwrap(),
            output["sha256"].as_str().unwrap()
        )
    };
    let output = consume(
        &consumer,
        &[
            input("data/out.csv", "in/out.csv"),
            input("data/parts", "in/parts"),
            input("bundle", "in/bundle"),
        ],
    );
    assert_exit_code(&output, 0);
    assert_eq!(
        common::stdout(&output),
        "id,name\n1,ada\nin/bundle/inside.txt\nin/out.csv\nin/parts/a.txt\nin/parts/deeper/b.txt\ntwopacked"
    );

    // A file changed after it was recorded is caught as it would be in Blob Storage.
    let stored = file["uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("file://")
        .to_string();
    fs::write(&stored, "id,name\n1,eve\n").unwrap();
    let tampered = Task::new();
    let output = consume(&tampered, &[input("data/out.csv", "in/out.csv")]);
    assert_exit_code(&output, 65);
    assert_error_kind(&tampered.record(), "input_integrity");
}
