//! A pod deleted while its snapshot downloads: the agent must stop promptly, never start the
//! command, and leave a `terminated` record, even when the connection has gone silent.

mod common;

use std::time::{Duration, Instant};

use common::Task;
use common::agent::Agent;
use common::azurite::Azurite;
use common::proxy::{Fault, Plan, Proxy};
use nix::sys::signal::Signal;

#[test]
fn sigterm_during_a_stalled_download_ends_the_task_at_once() {
    let azurite = Azurite::start();
    azurite.create_container("snapshots");
    // Incompressible, so the stall lands inside the body rather than after it.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let body: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut archive = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o644);
    archive
        .append_data(&mut header, "data.bin", &body[..])
        .unwrap();
    azurite.upload("snapshots", "big.tar", &archive.into_inner().unwrap());
    let proxy = Proxy::start(
        azurite.addr(),
        Plan::always(Fault::Stall { after: 64 << 10 }),
    );
    let source = proxy.url(&azurite.read_url("snapshots", "big.tar"));

    let task = Task::new();
    let marker = task.path("command-ran");
    let mut command = task.command();
    command
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("AZURE_STORAGE_KEY")
        .args([
            "--snapshot",
            &source,
            "--snapshot-stall-timeout",
            "60s",
            "--grace",
            "1s",
        ])
        .args(["--", "touch"])
        .arg(&marker);
    let mut agent = Agent::spawn(&task, command);
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.bytes_to_client() < 64 << 10 {
        agent.check_running("the download started");
        assert!(
            Instant::now() < deadline,
            "the download never started; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    agent.signal(Signal::SIGTERM);
    let (status, exited) = agent.wait();

    assert_eq!(status.code(), Some(143), "log:\n{}", agent.log());
    assert!(
        exited - signalled < Duration::from_secs(3),
        "took {:?} to stop a stalled download",
        exited - signalled
    );
    let record = task.record();
    assert_eq!(record["status"], "terminated", "{record:#}");
    assert_eq!(record["retryable"], true);
    assert_eq!(record["phase"], "snapshot");
    assert!(!marker.exists(), "the command ran after SIGTERM");
}
