//! Throughput of the hot paths: forwarding the child's output (framing, masking, text or
//! JSON rendering) and fitting the result record into its 4096-byte budget.
//!
//! `cargo bench --bench output` measures; `cargo bench --bench output -- --test` runs each
//! benchmark once, as CI does.

use std::hint::black_box;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use serde_json::json;
use task_agent::identity::TaskIdentity;
use task_agent::mask::Masker;
use task_agent::report::{RECORD_BUDGET, Record, Status};
use task_agent::supervise::output::{LineWriter, LogFormat, Stream, forward};
use task_agent::supervise::tail::TailBuffer;

/// About this much output is forwarded per iteration.
const INPUT_BYTES: usize = 16 << 20;
/// Every log line is this long, newline included.
const LINE_BYTES: usize = 100;
/// One line in this many carries a secret (about 170 occurrences in 16 MiB).
const SECRET_EVERY: usize = 1000;

/// Ten secret values, 16 to 32 characters long.
fn secrets() -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    (0..10)
        .map(|i| {
            let len = 16 + i * 16 / 9;
            let mut value = format!("s3cr3t-{i}-");
            let mut state = 0x9e37_79b9_u32.wrapping_mul(i as u32 + 1);
            while value.len() < len {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                value.push(char::from(ALPHABET[state as usize % ALPHABET.len()]));
            }
            value
        })
        .collect()
}

/// Log lines of a typical task: timestamp, level, logger and a message, each exactly
/// `LINE_BYTES` long (padded with dots); every `SECRET_EVERY`th line leaks one of `secrets`
/// instead, which always fits in the line.
fn log_input(secrets: &[String]) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["INFO", "DEBUG", "WARNING", "INFO"];
    const LOGGERS: [&str; 3] = ["airflow.task", "etl.extract", "sqlalchemy.engine"];
    let mut input = Vec::with_capacity(INPUT_BYTES + LINE_BYTES);
    let mut n = 0;
    while input.len() < INPUT_BYTES {
        let mut line = format!(
            "[2026-11-26T13:{:02}:{:02}.{:03}Z] {} {} - ",
            n / 60_000 % 60,
            n / 1000 % 60,
            n % 1000,
            LEVELS[n % LEVELS.len()],
            LOGGERS[n % LOGGERS.len()],
        );
        if n % SECRET_EVERY == SECRET_EVERY / 2 {
            line.push_str("token=");
            line.push_str(&secrets[n / SECRET_EVERY % secrets.len()]);
            line.push(' ');
        } else {
            line.push_str(&format!("processed batch {n} rows={} ", n * 37 % 10_000));
        }
        line.truncate(LINE_BYTES - 1);
        while line.len() < LINE_BYTES - 1 {
            line.push('.');
        }
        line.push('\n');
        input.extend_from_slice(line.as_bytes());
        n += 1;
    }
    input
}

fn identity() -> TaskIdentity {
    TaskIdentity {
        tenant: Some("user1".into()),
        dag_id: Some("daily_sales_rollup".into()),
        task_id: Some("load_warehouse".into()),
        run_id: Some("scheduled__2026-11-26T00:00:00+00:00".into()),
        try_number: Some(1),
        map_index: None,
    }
}

fn bench_forward(c: &mut Criterion) {
    let secrets = secrets();
    let input = log_input(&secrets);
    let no_masks = Arc::new(Masker::default());
    let masks = Arc::new(Masker::new(&secrets).expect("secrets build a masker"));
    let members: Arc<str> = Arc::from(identity().json_members());

    // The masked run must actually mask something, or it measures nothing extra.
    let mut masked = Vec::with_capacity(input.len());
    let mut check = LineWriter::new(
        &mut masked,
        Stream::Stdout,
        LogFormat::Text,
        Arc::clone(&members),
        Arc::clone(&masks),
        None,
    );
    forward(&input[..], &mut check).expect("forwarding into memory");
    drop(check);
    let occurrences = masked.windows(3).filter(|w| *w == b"***").count();
    assert!(occurrences > 100, "only {occurrences} secrets were masked");
    assert!(
        secrets
            .iter()
            .all(|s| !masked.windows(s.len()).any(|w| w == s.as_bytes())),
        "a secret survived masking"
    );

    let cases: [(&str, LogFormat, Stream, &Arc<Masker>, bool); 4] = [
        ("text", LogFormat::Text, Stream::Stdout, &no_masks, false),
        (
            "text_10_secrets",
            LogFormat::Text,
            Stream::Stdout,
            &masks,
            false,
        ),
        (
            "text_stderr_tail20",
            LogFormat::Text,
            Stream::Stderr,
            &no_masks,
            true,
        ),
        ("json", LogFormat::Json, Stream::Stdout, &no_masks, false),
    ];

    let mut group = c.benchmark_group("forward_16MiB");
    group
        .throughput(Throughput::Bytes(input.len() as u64))
        // JSON takes ~40 ms an iteration: flat sampling keeps the group within its time.
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, format, stream, masker, tail) in cases {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    LineWriter::new(
                        io::sink(),
                        stream,
                        format,
                        Arc::clone(&members),
                        Arc::clone(masker),
                        tail.then(|| Arc::new(Mutex::new(TailBuffer::new(20)))),
                    )
                },
                |writer| forward(black_box(&input[..]), writer).expect("forwarding into a sink"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn finished_record() -> Record {
    let mut record = Record::provisional("2026-11-26T13:00:00.000Z".into(), identity());
    record.status = Status::Succeeded;
    record.phase = "finished";
    record.exit_code = Some(0);
    record.child_exit_code = Some(0);
    record.finished_at = Some("2026-11-26T13:04:12.345Z".into());
    for (phase, millis) in [("prepare", 12), ("process", 252_301), ("total", 252_345)] {
        record.durations_ms.insert(phase.into(), millis);
    }
    record.resources.peak_memory_bytes = 734_003_200;
    record.resources.memory_limit_bytes = Some(1 << 30);
    record.resources.cpu_user_ms = 198_230;
    record.resources.cpu_system_ms = 4_120;
    record
}

fn bench_record(c: &mut Criterion) {
    // What most tasks report: a small return value and a few short stderr lines.
    let mut typical = finished_record();
    typical.return_value =
        Some(json!({"rows_loaded": 182_044, "table": "sales_daily", "partitions": ["2026-11-25"]}));
    typical.log_tail = (0..10)
        .map(|i| format!("[2026-11-26T13:04:1{i}.000Z] INFO airflow.task - step {i} done"))
        .collect();

    // One that must give way: 100 tail lines of 200 bytes and a 10 KB return value.
    let mut oversized = finished_record();
    oversized.return_value = Some(json!({"blob": "y".repeat(10_000)}));
    oversized.log_tail = (0..100)
        .map(|i| {
            let mut line =
                format!("[2026-11-26T13:04:12.{i:03}Z] WARNING etl.load - retrying batch {i} ");
            line.extend(std::iter::repeat_n('x', 200 - line.len()));
            line
        })
        .collect();

    for (name, record) in [("typical", &typical), ("oversized", &oversized)] {
        let bytes = record.encode(RECORD_BUDGET);
        assert!(
            bytes.len() <= RECORD_BUDGET,
            "{name}: {} bytes",
            bytes.len()
        );
    }
    assert!(
        typical.encode(RECORD_BUDGET).len() < RECORD_BUDGET / 2,
        "the typical record should not need trimming"
    );

    let mut group = c.benchmark_group("record_encode_4096");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("typical", |b| {
        b.iter(|| black_box(&typical).encode(black_box(RECORD_BUDGET)))
    });
    group.bench_function("oversized", |b| {
        b.iter(|| black_box(&oversized).encode(black_box(RECORD_BUDGET)))
    });
    group.finish();
}

criterion_group!(benches, bench_forward, bench_record);
criterion_main!(benches);
