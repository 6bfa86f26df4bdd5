//! The Entra ID and Key Vault stand-ins as a long-running helper process, for benchmark
//! drivers outside Rust: benches/compare.py starts it once and runs
//! `task-agent run --secret NAME=URL … -- cmd` against it from the shell for its secrets
//! rows (fetching 1 vs many secrets, every vault answer delayed like a real round trip) and
//! its output-forwarding rows (the fetched values must come out masked).
//!
//! ```text
//! cargo run --release --example bench-standins -- --dir DIR [--secrets N] [--latency-ms MS]
//! ```
//!
//! It starts the stand-ins from tests/common over https with a throwaway CA, stores
//! `secret-0` … `secret-{N-1}` (32-byte values, none a prefix of another), delays every vault
//! answer by MS milliseconds, writes the federated token to `DIR/token` and prints one JSON
//! line on stdout:
//!
//! ```text
//! {"env": {"AZURE_FEDERATED_TOKEN_FILE": …, "AZURE_CLIENT_ID": …, "AZURE_TENANT_ID": …,
//!          "AZURE_AUTHORITY_HOST": …, "SSL_CERT_FILE": …},
//!  "secrets": [{"name": "secret-0", "url": "https://127.0.0.1:PORT/secrets/secret-0",
//!               "value": "bench-secret-value-0000-qzjxkvwm"}, …]}
//! ```
//!
//! `env` is the whole Azure environment the agent needs (a workload-identity pod's); the
//! caller should drop any other AZURE_*, *_PROXY and SSL_CERT_* variables from the agent's
//! environment, as benches/secrets.rs does. The helper then serves until its stdin reaches
//! end of file (the parent closes the pipe, or dies) or it gets SIGTERM, SIGINT or SIGHUP,
//! and exits 0, removing the CA's temp directory. Started with stdin at /dev/null it stops
//! at once; from a terminal, Ctrl-D or Ctrl-C stops it.
//!
//! The stand-ins are trustworthy measuring posts: tests/azure_standins.rs proves the Entra ID
//! stand-in against azure-identity's WorkloadIdentityCredential, and tests/keyvault_standin.rs
//! proves the Key Vault stand-in against azure-keyvault-secrets' SecretClient (challenge,
//! tokens, versions, errors, throttling), Microsoft's own Python clients in both cases. The
//! agent talks to them exactly as to Azure: real TLS verified against a CA bundle, tokens
//! checked by the vault.

#[allow(dead_code)]
#[path = "../tests/common/entra.rs"]
mod entra;
#[allow(dead_code)]
#[path = "../tests/common/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "../tests/common/keyvault.rs"]
mod keyvault;
#[allow(dead_code)]
#[path = "../tests/common/sas.rs"]
mod sas;
#[allow(dead_code)]
#[path = "../tests/common/tls.rs"]
mod tls;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clap::Parser;
use entra::{CLIENT_ID, Entra, FEDERATED_TOKEN, TENANT_ID};
use keyvault::KeyVault;
use nix::sys::signal::{SigSet, Signal};
use serde_json::{Value, json};
use tls::Tls;

/// The signals that stop the helper cleanly.
const STOP_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// Fills each value out to 32 bytes after `bench-secret-value-NNNN-`.
const VALUE_TAIL: &str = "qzjxkvwm";

/// Serves the Entra ID and Key Vault stand-ins over https for benches/compare.py: prints one
/// JSON line (agent environment, secret URLs and values), then serves until stdin closes or
/// SIGTERM/SIGINT/SIGHUP.
#[derive(Parser)]
#[command(name = "bench-standins")]
struct Args {
    /// Directory for the federated token file (`DIR/token`); created if missing.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,

    /// How many secrets to store: secret-0 … secret-{N-1}.
    #[arg(long, value_name = "N", default_value_t = 20, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    secrets: u32,

    /// Delay of every vault answer in milliseconds, as a real vault round trip.
    #[arg(long = "latency-ms", value_name = "MS", default_value_t = 50, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    latency_ms: u64,
}

/// Why the helper stopped serving.
enum Stop {
    Eof,
    Signal(Signal),
    StdinError(io::Error),
}

/// The value stored under `secret-{i}`: 32 bytes (`--secrets` stops at 10 000, so the number
/// has four digits), all distinct and of one length, so none is a prefix of another.
fn secret_value(i: u32) -> String {
    format!("bench-secret-value-{i:04}-{VALUE_TAIL}")
}

/// Exit status 2 with a message naming the argument and what to do about it.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("bench-standins: {message}");
    eprintln!("usage: bench-standins --dir DIR [--secrets N] [--latency-ms MS]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // clap exits 2 with a message naming the argument (and 0 for --help).
    let args = Args::parse();

    if args.dir.exists() && !args.dir.is_dir() {
        return usage_error(&format!(
            "--dir {} is not a directory; give a directory (it is created if missing)",
            args.dir.display()
        ));
    }
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        return usage_error(&format!(
            "--dir {}: cannot create it ({e}); give a writable directory",
            args.dir.display()
        ));
    }
    // Absolute, so the environment works from whatever directory the agent runs in.
    let dir = match std::fs::canonicalize(&args.dir) {
        Ok(dir) => dir,
        Err(e) => {
            return usage_error(&format!(
                "--dir {}: cannot resolve it ({e}); give an accessible directory",
                args.dir.display()
            ));
        }
    };

    // Block the stop signals before the stand-ins start their threads, so every thread
    // inherits the mask and only the waiter below takes them (no default action kills the
    // process with the CA's temp directory left behind).
    let mut stop_signals = SigSet::empty();
    for signal in STOP_SIGNALS {
        stop_signals.add(signal);
    }
    stop_signals
        .thread_block()
        .expect("block SIGTERM, SIGINT and SIGHUP in the main thread");

    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let kv = KeyVault::start(&tls, &entra);
    let mut secrets = Vec::new();
    for i in 0..args.secrets {
        let name = format!("secret-{i}");
        let value = secret_value(i);
        kv.set_secret(&name, &value);
        secrets.push(json!({
            "name": name,
            "url": kv.secret_url(&name, None),
            "value": value,
        }));
    }
    kv.set_latency(Duration::from_millis(args.latency_ms));

    let token_file = dir.join("token");
    if let Err(e) = std::fs::write(&token_file, FEDERATED_TOKEN) {
        return usage_error(&format!(
            "--dir {}: cannot write {} ({e}); give a writable directory",
            args.dir.display(),
            token_file.display()
        ));
    }

    let line = json!({
        "env": {
            "AZURE_FEDERATED_TOKEN_FILE": token_file.display().to_string(),
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_TENANT_ID": TENANT_ID,
            "AZURE_AUTHORITY_HOST": entra.authority(),
            "SSL_CERT_FILE": tls.ca_file().display().to_string(),
        },
        "secrets": Value::Array(secrets),
    });
    let mut stdout = io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        eprintln!("bench-standins: cannot write the JSON line to stdout ({e})");
        return ExitCode::FAILURE;
    }
    drop(stdout);
    eprintln!(
        "bench-standins: serving {} secrets at {} (vault latency {} ms, tokens from {}); close stdin or send SIGTERM to stop",
        args.secrets,
        kv.url(),
        args.latency_ms,
        entra.authority()
    );

    let (stop_tx, stop_rx) = mpsc::channel();
    {
        let stop_tx = stop_tx.clone();
        thread::spawn(move || {
            // Whatever the parent writes is ignored; only the end of the pipe matters.
            let stop = match io::copy(&mut io::stdin().lock(), &mut io::sink()) {
                Ok(_) => Stop::Eof,
                Err(e) => Stop::StdinError(e),
            };
            let _ = stop_tx.send(stop);
        });
    }
    thread::spawn(move || {
        if let Ok(signal) = stop_signals.wait() {
            let _ = stop_tx.send(Stop::Signal(signal));
        }
    });

    // Both senders live in threads that only end by sending, so this returns once.
    let reason = match stop_rx.recv() {
        Ok(Stop::Eof) => "stdin closed".to_string(),
        Ok(Stop::Signal(signal)) => format!("got {signal}"),
        Ok(Stop::StdinError(e)) => format!("stdin failed ({e})"),
        Err(mpsc::RecvError) => "both watchers ended".to_string(),
    };
    // Stop the servers, then remove the CA's temp directory (Tls owns it).
    drop(kv);
    drop(entra);
    drop(tls);
    eprintln!("bench-standins: {reason}, stopped");
    ExitCode::SUCCESS
}
