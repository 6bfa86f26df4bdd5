//! Telemetry end to end: the real agent exporting to an OTLP/HTTP receiver that decodes
//! with the official OTLP definitions (`opentelemetry-proto`). All three signals with the
//! resource and the task identity; spans parented under a given TRACEPARENT and the child
//! continuing its own; a secret never exported; a collector that is down, hangs or answers
//! 500 never delays the task's end past `--telemetry-timeout` nor changes its exit code;
//! nothing configured, nothing started.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Task;
use common::archive::{self, Tar};
use common::assertions::assert_exit_code;
use common::otlp::{self, Behaviour, Receiver};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const CANARY: &str = "otel-canary-Zq81Rk5Wm3";

/// A task's command with telemetry pointed at `endpoint` and the Airflow identity set.
fn command(task: &Task, endpoint: &str) -> Command {
    exporting(task.command(), endpoint)
}

/// `command` with telemetry pointed at `endpoint` and the Airflow identity set.
fn exporting(mut command: Command, endpoint: &str) -> Command {
    common::isolate(&mut command);
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        // A loaded machine must not lose data the tests look for; the deadline itself is
        // tested with collectors that fail.
        .env("TASK_AGENT_TELEMETRY_TIMEOUT", "10s")
        .args(["--tenant", "team-a", "--dag-id", "etl", "--task-id", "load"])
        .args([
            "--run-id",
            "manual__2026-11-26",
            "--try-number",
            "2",
            "--map-index",
            "3",
        ]);
    command
}

fn run(mut command: Command, script: &str) -> (Output, Duration) {
    let started = Instant::now();
    let output = command
        .args(["--", "sh", "-c", script])
        .output()
        .expect("task-agent runs");
    (output, started.elapsed())
}

/// The agent's stderr lines that warn about telemetry.
fn telemetry_warnings(output: &Output) -> Vec<String> {
    common::stderr(output)
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("telemetry"))
        .map(str::to_string)
        .collect()
}

fn span<'a>(spans: &'a [(Resource, Span)], name: &str) -> &'a Span {
    &spans
        .iter()
        .find(|(_, span)| span.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no span {name}; got {:?}",
                spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        })
        .1
}

#[test]
fn all_three_signals_arrive_with_the_resource_and_the_task_identity() {
    let receiver = Receiver::start(Behaviour::Accept);
    let task = Task::new();
    let snapshot = archive::write_tar_gz(
        task.dir.path(),
        "code.tar.gz",
        Tar::new().file("main.sh", 0o755, b"echo from the snapshot\n"),
    );
    let digest = archive::sha256_hex(&fs::read(&snapshot).unwrap());
    let cache = task.path("cache");
    let mut command = command(&task, &receiver.endpoint());
    command
        .env("K8S_POD_NAME", "etl-load-pod")
        .env("K8S_NAMESPACE_NAME", "tenant-a")
        .env("K8S_NODE_NAME", "node-7")
        .arg("--snapshot")
        .arg(&snapshot)
        .args(["--snapshot-sha256", &digest, "--cache-dir"])
        .arg(&cache);
    let (output, _) = run(
        command,
        "sh main.sh; echo to-stdout; echo to-stderr >&2; exit 3",
    );
    assert_exit_code(&output, 3);
    assert!(
        telemetry_warnings(&output).is_empty(),
        "{}",
        common::stderr(&output)
    );
    let record = task.record();

    // Traces: the task's span, one per phase, the outcome on each.
    let spans = receiver.spans();
    let names: BTreeSet<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["task-agent", "prepare", "snapshot", "process", "report"]),
        "only the agent's own spans are exported"
    );
    let root = span(&spans, "task-agent");
    assert!(
        root.parent_span_id.is_empty(),
        "no TRACEPARENT, so the task's span is a root"
    );
    assert_eq!(
        otlp::hex(&root.trace_id),
        record["trace_id"].as_str().unwrap()
    );
    assert_eq!(
        otlp::string_attribute(&root.attributes, "task_agent.status").as_deref(),
        Some("failed")
    );
    assert_eq!(
        otlp::int_attribute(&root.attributes, "task_agent.exit_code"),
        Some(3)
    );
    assert_eq!(
        otlp::string_attribute(&root.attributes, "error.type").as_deref(),
        Some("exit_code")
    );
    for (_, phase) in spans.iter().filter(|(_, s)| s.name != "task-agent") {
        assert_eq!(phase.trace_id, root.trace_id, "{}", phase.name);
        assert_eq!(
            phase.parent_span_id, root.span_id,
            "{} is a child of the task",
            phase.name
        );
    }
    let process = span(&spans, "process");
    assert_eq!(
        otlp::int_attribute(&process.attributes, "process.exit.code"),
        Some(3)
    );
    let fetched = span(&spans, "snapshot");
    assert_eq!(
        otlp::string_attribute(&fetched.attributes, "task_agent.snapshot.cache").as_deref(),
        Some("miss")
    );
    assert_eq!(
        otlp::int_attribute(&fetched.attributes, "task_agent.snapshot.bytes"),
        Some(fs::metadata(&snapshot).unwrap().len() as i64)
    );

    // The resource, on every signal.
    let metrics = receiver.metrics();
    let logs = receiver.logs();
    let resources = spans
        .iter()
        .map(|(r, _)| r)
        .chain(metrics.iter().map(|(r, _)| r))
        .chain(logs.iter().map(|(r, _, _)| r));
    for resource in resources {
        let text = |key| otlp::string_attribute(&resource.attributes, key);
        assert_eq!(text("service.name").as_deref(), Some("task-agent"));
        assert_eq!(
            text("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(text("k8s.pod.name").as_deref(), Some("etl-load-pod"));
        assert_eq!(text("k8s.namespace.name").as_deref(), Some("tenant-a"));
        assert_eq!(text("k8s.node.name").as_deref(), Some("node-7"));
        assert_eq!(text("airflow.dag_id").as_deref(), Some("etl"));
        assert_eq!(text("airflow.task_id").as_deref(), Some("load"));
        assert_eq!(
            text("airflow.dag_run.run_id").as_deref(),
            Some("manual__2026-11-26")
        );
        assert_eq!(text("tenant").as_deref(), Some("team-a"));
        let number = |key| otlp::int_attribute(&resource.attributes, key);
        assert_eq!(number("airflow.task_instance.try_number"), Some(2));
        assert_eq!(number("airflow.task_instance.map_index"), Some(3));
    }

    // Metrics: each data point carries the tenant.
    let metric_names: BTreeSet<&str> = metrics.iter().map(|(_, m)| m.name.as_str()).collect();
    for name in [
        "task_agent.tasks",
        "task_agent.task.duration",
        "task_agent.phase.duration",
        "process.cpu.time",
        "task_agent.memory.peak",
        "task_agent.memory.peak_byte_seconds",
        "task_agent.snapshot.size",
        "task_agent.snapshot.fetches",
    ] {
        assert!(
            metric_names.contains(name),
            "no metric {name}: {metric_names:?}"
        );
    }
    for (_, metric) in &metrics {
        let points = otlp::point_attributes(metric);
        assert!(!points.is_empty(), "{} has no data points", metric.name);
        for attributes in points {
            assert_eq!(
                otlp::string_attribute(&attributes, "tenant").as_deref(),
                Some("team-a"),
                "{}",
                metric.name
            );
        }
    }
    let (_, tasks) = metrics
        .iter()
        .find(|(_, m)| m.name == "task_agent.tasks")
        .unwrap();
    let outcome = &otlp::point_attributes(tasks)[0];
    assert_eq!(
        otlp::string_attribute(outcome, "task_agent.status").as_deref(),
        Some("failed")
    );

    // Logs: the child's lines with their stream and the process span; the agent's events.
    let line = |text: &str| {
        logs.iter()
            .find(|(_, _, r)| otlp::body(r) == text)
            .unwrap_or_else(|| panic!("no log record {text:?}"))
    };
    for (text, stream) in [
        ("from the snapshot", "stdout"),
        ("to-stdout", "stdout"),
        ("to-stderr", "stderr"),
    ] {
        let (_, _, record) = line(text);
        assert_eq!(
            otlp::string_attribute(&record.attributes, "log.iostream").as_deref(),
            Some(stream)
        );
        assert_eq!(record.trace_id, process.trace_id, "{text}");
        assert_eq!(record.span_id, process.span_id, "{text}");
    }
    let (_, scope, finished) = logs
        .iter()
        .find(|(_, _, r)| otlp::body(r) == "task finished")
        .expect("the agent's own events are exported");
    assert!(scope.starts_with("task_agent"), "{scope}");
    assert_eq!(finished.severity_text, "INFO");
    assert_eq!(finished.trace_id, root.trace_id);
    assert_eq!(
        otlp::string_attribute(&finished.attributes, "status").as_deref(),
        Some("failed")
    );

    // A second run of the same snapshot is a cache hit, in the span and the metrics.
    let second = Receiver::start(Behaviour::Accept);
    let mut command = command_again(&task, &second.endpoint(), &snapshot, &digest, &cache);
    command.arg("--log-level").arg("error");
    let (output, _) = run(command, "true");
    assert_exit_code(&output, 0);
    let spans = second.spans();
    assert_eq!(
        otlp::string_attribute(
            &span(&spans, "snapshot").attributes,
            "task_agent.snapshot.cache"
        )
        .as_deref(),
        Some("hit")
    );
    let metrics = second.metrics();
    let (_, fetches) = metrics
        .iter()
        .find(|(_, m)| m.name == "task_agent.snapshot.fetches")
        .unwrap();
    assert_eq!(
        otlp::string_attribute(
            &otlp::point_attributes(fetches)[0],
            "task_agent.snapshot.cache"
        )
        .as_deref(),
        Some("hit")
    );
}

fn command_again(
    task: &Task,
    endpoint: &str,
    snapshot: &std::path::Path,
    digest: &str,
    cache: &std::path::Path,
) -> Command {
    let mut command = command(task, endpoint);
    command
        .arg("--snapshot")
        .arg(snapshot)
        .args(["--snapshot-sha256", digest, "--cache-dir"])
        .arg(cache);
    command
}

#[test]
fn http_json_is_used_on_request() {
    let receiver = Receiver::start(Behaviour::Accept);
    let task = Task::new();
    let mut command = command(&task, &receiver.endpoint());
    command.env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    let (output, _) = run(command, "echo json-line");
    assert_exit_code(&output, 0);
    let requests = receiver.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert!(
            request.content_type.starts_with("application/json"),
            "{}: {}",
            request.path,
            request.content_type
        );
    }
    let paths: BTreeSet<String> = requests.iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        BTreeSet::from(["/v1/traces".into(), "/v1/metrics".into(), "/v1/logs".into()])
    );
    assert_eq!(span(&receiver.spans(), "task-agent").name, "task-agent");
    assert!(
        receiver
            .logs()
            .iter()
            .any(|(_, _, r)| otlp::body(r) == "json-line")
    );
    assert!(
        receiver
            .metrics()
            .iter()
            .any(|(_, m)| m.name == "task_agent.tasks")
    );
}

#[test]
fn gzip_compression_is_used_on_request() {
    let receiver = Receiver::start(Behaviour::Accept);
    let task = Task::new();
    let mut command = command(&task, &receiver.endpoint());
    command.env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip");
    let (output, _) = run(command, "echo compressed-line");
    assert_exit_code(&output, 0);
    let requests = receiver.requests();
    let paths: BTreeSet<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths.len(), 3, "every signal: {paths:?}");
    for request in &requests {
        assert_eq!(request.content_encoding, "gzip", "{}", request.path);
    }
    assert!(
        receiver
            .logs()
            .iter()
            .any(|(_, _, r)| otlp::body(r) == "compressed-line")
    );
}

#[test]
fn spans_are_children_of_traceparent_and_the_child_continues_from_the_process_span() {
    let receiver = Receiver::start(Behaviour::Accept);
    let task = Task::new();
    let mut command = command(&task, &receiver.endpoint());
    command
        .env("TRACEPARENT", format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"))
        .env("TRACESTATE", "airflow=ti");
    let (output, _) = run(
        command,
        r#"printf '%s\n%s\n' "$TRACEPARENT" "$TRACESTATE" > carriers"#,
    );
    assert_exit_code(&output, 0);

    let spans = receiver.spans();
    let root = span(&spans, "task-agent");
    assert_eq!(otlp::hex(&root.trace_id), PARENT_TRACE);
    assert_eq!(otlp::hex(&root.parent_span_id), PARENT_SPAN);
    assert_eq!(root.trace_state, "airflow=ti");
    let process = span(&spans, "process");
    assert_eq!(process.parent_span_id, root.span_id);
    assert_eq!(task.record()["trace_id"], PARENT_TRACE);

    let carriers = fs::read_to_string(task.workdir().join("carriers")).unwrap();
    assert_eq!(
        carriers,
        format!(
            "00-{PARENT_TRACE}-{}-01\nairflow=ti\n",
            otlp::hex(&process.span_id)
        ),
        "the command sees the process span as its parent"
    );
}

#[test]
fn without_traces_the_child_keeps_the_inherited_traceparent_and_logs_carry_it() {
    let receiver = Receiver::start(Behaviour::Accept);
    let task = Task::new();
    let traceparent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let mut command = command(&task, &receiver.endpoint());
    command
        .env("OTEL_TRACES_EXPORTER", "none")
        .env("TRACEPARENT", &traceparent);
    let (output, _) = run(
        command,
        r#"printf '%s' "$TRACEPARENT" > carrier; echo logged"#,
    );
    assert_exit_code(&output, 0);
    assert_eq!(
        fs::read_to_string(task.workdir().join("carrier")).unwrap(),
        traceparent
    );
    assert!(receiver.requests_to("/v1/traces").is_empty());
    assert_eq!(task.record()["trace_id"], serde_json::Value::Null);
    let logs = receiver.logs();
    let (_, _, line) = logs
        .iter()
        .find(|(_, _, r)| otlp::body(r) == "logged")
        .expect("the line is exported");
    assert_eq!(otlp::hex(&line.trace_id), PARENT_TRACE);
    assert_eq!(otlp::hex(&line.span_id), PARENT_SPAN);
    assert!(!receiver.requests_to("/v1/metrics").is_empty());
}

#[test]
fn a_signal_endpoint_exports_that_signal_only() {
    let receiver = Receiver::start(Behaviour::Accept);
    let task = Task::new();
    let mut command = task.command();
    common::isolate(&mut command);
    command.env(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        format!("{}/v1/metrics", receiver.endpoint()),
    );
    let (output, _) = run(command, "true");
    assert_exit_code(&output, 0);
    let paths: BTreeSet<String> = receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, BTreeSet::from(["/v1/metrics".to_string()]));
}

#[test]
fn a_canary_secret_never_appears_in_any_exported_payload() {
    let receiver = Receiver::start(Behaviour::Accept);
    let task = Task::new();
    // The canary is also in the return file's path, so it reaches the agent's own error
    // event and the spans' error status, not only the child's output.
    let return_file = task.path(&format!("{CANARY}/return.json"));
    let command = task.command_returning_to(&return_file);
    let mut command = exporting(command, &receiver.endpoint());
    command.env("SOURCE_OF_CANARY", CANARY).args([
        "--secret",
        "TOKEN=env:SOURCE_OF_CANARY",
        "--log-level",
        "trace",
    ]);
    let (output, _) = run(
        command,
        r#"echo "token=$TOKEN"; echo "err $TOKEN" >&2; echo "not json $TOKEN" > "$TASK_AGENT_RETURN_FILE""#,
    );
    assert_exit_code(&output, 65);
    assert!(!common::stderr(&output).contains(CANARY));

    let requests = receiver.requests();
    let paths: BTreeSet<String> = requests.iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 3, "all three signals were exported: {paths:?}");
    for request in &requests {
        assert!(
            request.content_encoding.is_empty(),
            "uncompressed, so raw bytes are searched"
        );
        assert!(
            !request
                .body
                .windows(CANARY.len())
                .any(|w| w == CANARY.as_bytes()),
            "the canary is in a payload to {}",
            request.path
        );
    }
    let logs = receiver.logs();
    let bodies: Vec<String> = logs.iter().map(|(_, _, r)| otlp::body(r)).collect();
    assert!(bodies.contains(&"token=***".to_string()), "{bodies:?}");
    assert!(bodies.contains(&"err ***".to_string()), "{bodies:?}");
    assert!(
        logs.iter()
            .any(|(_, scope, r)| scope.starts_with("task_agent")
                && r.severity_text == "ERROR"
                && otlp::body(r).contains("***")),
        "the agent's error event names the masked path: {bodies:?}"
    );
    let spans = receiver.spans();
    let report = span(&spans, "report");
    let status = report.status.clone().unwrap_or_default();
    assert!(status.message.contains("***"), "{status:?}");

    // Even at the finest log level, only the agent's own events and the command's lines are
    // exported: nothing from the HTTP client or the SDK.
    for (_, scope, record) in &logs {
        assert!(
            scope == "task-agent" || scope.starts_with("task_agent::"),
            "a record from {scope}: {}",
            otlp::body(record)
        );
    }
}

/// Exit code 7 and one warning, whatever the collector does, within the deadline.
fn assert_unaffected_by(receiver_endpoint: &str, expected_problem: &str) -> Duration {
    let task = Task::new();
    let mut command = command(&task, receiver_endpoint);
    // The exporter's own request timeout is far longer: only the agent's deadline can end
    // the wait in time.
    command
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "60000")
        .args(["--telemetry-timeout", "1s"]);
    let (output, elapsed) = run(command, "echo some output; exit 7");
    assert_exit_code(&output, 7);
    assert_eq!(task.record()["exit_code"], 7);
    let warnings = telemetry_warnings(&output);
    assert_eq!(
        warnings.len(),
        1,
        "one warning: {}",
        common::stderr(&output)
    );
    assert!(warnings[0].contains(expected_problem), "{}", warnings[0]);
    assert!(
        elapsed < Duration::from_secs(6),
        "the task took {elapsed:?} with a 1s telemetry timeout"
    );
    elapsed
}

#[test]
fn a_collector_that_is_down_changes_nothing() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    assert_unaffected_by(
        &format!("http://127.0.0.1:{port}"),
        "telemetry was not fully delivered",
    );
}

#[test]
fn a_collector_that_hangs_costs_the_deadline_and_no_more() {
    let receiver = Receiver::start(Behaviour::Hang);
    assert_unaffected_by(&receiver.endpoint(), "not delivered within 1s");
    assert!(
        receiver.connections() > 0,
        "the exporter reached the collector"
    );
}

#[test]
fn a_collector_answering_500_changes_nothing() {
    let receiver = Receiver::start(Behaviour::Fail);
    assert_unaffected_by(&receiver.endpoint(), "500");
    assert!(!receiver.requests().is_empty());
}

/// The names of the agent's threads other than its own and its output forwarders (which
/// may or may not have started yet), as its child saw them while it ran.
fn extra_threads(task: &Task, command: Command) -> Vec<String> {
    let (output, _) = run(command, "cat /proc/$PPID/task/*/comm > threads");
    assert_exit_code(&output, 0);
    fs::read_to_string(task.workdir().join("threads"))
        .unwrap()
        .lines()
        .filter(|name| *name != "task-agent" && !name.starts_with("forward-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn nothing_configured_starts_nothing_and_connects_nowhere() {
    let receiver = Receiver::start(Behaviour::Accept);
    let task = Task::new();

    // The probe works: with telemetry on, its threads (batch processors, the periodic
    // reader, the HTTP client's) are there before the command starts.
    let on = extra_threads(&task, command(&task, &receiver.endpoint()));
    assert!(on.len() >= 3, "{on:?}");

    // Nothing configured: no thread beyond the agent's own.
    let mut off = task.command();
    common::isolate(&mut off);
    off.env("OTEL_SERVICE_NAME", "x")
        .env("TRACEPARENT", format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"));
    let threads = extra_threads(&task, off);
    assert!(threads.is_empty(), "{threads:?}");

    // Turned off with an endpoint set: no thread, and no connection at all.
    let before = receiver.connections();
    let disabled: [&[(&str, &str)]; 2] = [
        &[("OTEL_SDK_DISABLED", "true")],
        &[
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", "none"),
        ],
    ];
    for settings in disabled {
        let mut command = command(&task, &receiver.endpoint());
        command.envs(settings.iter().copied());
        let threads = extra_threads(&task, command);
        assert!(threads.is_empty(), "{settings:?}: {threads:?}");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        receiver.connections(),
        before,
        "a disabled agent connected to the collector"
    );
}

/// The latest value of an f64 sum metric named `name` across every export received.
fn latest_sum(receiver: &Receiver, name: &str) -> Option<f64> {
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
    receiver
        .metrics()
        .into_iter()
        .filter(|(_, metric)| metric.name == name)
        .filter_map(|(_, metric)| match metric.data {
            Some(metric::Data::Sum(sum)) => sum.data_points.last().cloned(),
            _ => None,
        })
        .filter_map(|point| match point.value {
            Some(number_data_point::Value::AsDouble(value)) => Some(value),
            _ => None,
        })
        .next_back()
}

#[test]
fn usage_is_exported_while_the_task_runs_so_a_killed_agent_has_reported_it() {
    let receiver = Receiver::start(Behaviour::Accept);
    let task = Task::new();
    let mut command = command(&task, &receiver.endpoint());
    command.env("OTEL_METRIC_EXPORT_INTERVAL", "300").args([
        "--",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let mut agent = common::agent::Agent::spawn(&task, command);
    let deadline = Instant::now() + Duration::from_secs(30);
    let cpu = loop {
        if let Some(cpu) = latest_sum(&receiver, "task_agent.usage.cpu_time").filter(|c| *c >= 0.5)
        {
            break cpu;
        }
        assert!(
            Instant::now() < deadline,
            "no usage exported while the task ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    agent.wait();
    assert!(cpu >= 0.5, "{cpu}");
    let memory = latest_sum(&receiver, "task_agent.usage.memory_time");
    assert!(memory.is_some_and(|m| m > 0.0), "{memory:?}");
    // Each point carries the tenant, as every metric of the agent does.
    let points: Vec<_> = receiver
        .metrics()
        .into_iter()
        .filter(|(_, m)| m.name == "task_agent.usage.cpu_time")
        .flat_map(|(_, m)| otlp::point_attributes(&m))
        .collect();
    assert!(
        points.iter().all(
            |attributes| otlp::string_attribute(attributes, "tenant").as_deref() == Some("team-a")
        ),
        "{points:?}"
    );
}
