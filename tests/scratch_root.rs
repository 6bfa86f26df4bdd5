//! The static binary as the `FROM scratch` image runs it: the only file of an empty root
//! filesystem (besides the image's CA bundle), fetching a snapshot over https from Azurite.
//! Docker cannot run here, so the image's root is a directory and `chroot` enters it.
//!
//! The binary is the one `scripts/build-static` makes (STATIC_AGENT_BIN, which
//! `scripts/test` sets); without it, or without root for chroot, the tests print `skipped`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::archive::{self, Tar};
use common::azurite::Azurite;
use common::tls::Tls;

/// The ceiling for the static binary.
const MAX_BINARY_BYTES: u64 = 10_000_000;
/// ELF program header type of the dynamic loader's path: a static binary has none.
const PT_INTERP: u32 = 3;
const CONTAINER: &str = "code";

fn static_agent() -> Option<PathBuf> {
    let Some(path) = std::env::var_os("STATIC_AGENT_BIN") else {
        eprintln!("skipped: STATIC_AGENT_BIN is not set (scripts/build-static makes the binary)");
        return None;
    };
    Some(PathBuf::from(path))
}

/// The program header types of an x86_64 ELF executable.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let word = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let half = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let (offset, size, count) = (word(0x20), half(0x36), half(0x38));
    (0..count)
        .map(|i| {
            let at = offset + i * size;
            u32::from_le_bytes(elf[at..at + 4].try_into().unwrap())
        })
        .collect()
}

#[test]
fn the_static_binary_needs_no_loader_and_fits_the_budget() {
    let Some(agent) = static_agent() else { return };
    let elf = fs::read(&agent).unwrap();
    assert!(
        !program_header_types(&elf).contains(&PT_INTERP),
        "{} asks for a dynamic loader: it would not start in an empty root",
        agent.display()
    );
    assert!(
        (elf.len() as u64) <= MAX_BINARY_BYTES,
        "{} is {} bytes, over {MAX_BINARY_BYTES}",
        agent.display(),
        elf.len()
    );
}

/// An empty root filesystem holding the agent at the image's path, the directories a pod
/// mounts, and (when given) the image's CA bundle.
fn scratch_root(agent: &Path, ca_bundle: Option<&Path>) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("usr/local/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy(agent, bin.join("task-agent")).unwrap();
    for dir in ["workspace", "tmp"] {
        fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    if let Some(bundle) = ca_bundle {
        let certs = root.path().join("etc/ssl/certs");
        fs::create_dir_all(&certs).unwrap();
        fs::copy(bundle, certs.join("ca-certificates.crt")).unwrap();
    }
    root
}

/// `task-agent fetch` inside `root`, with nothing of this machine's environment.
fn fetch_in(root: &Path, url: &str) -> Output {
    Command::new("/usr/sbin/chroot")
        .arg(root)
        .args(["/usr/local/bin/task-agent", "fetch", "--snapshot", url])
        .args(["--workdir", "/workspace", "--snapshot-retry-budget", "2s"])
        .env_clear()
        .output()
        .unwrap()
}

fn https_snapshot(tls: &Tls) -> (Azurite, String, Vec<u8>) {
    let azurite = Azurite::start_https_oauth(tls);
    azurite.create_container(CONTAINER);
    let snapshot = archive::gzip(
        &Tar::new()
            .dir("dags/", 0o755)
            .file("dags/etl.py", 0o644, b"print('etl')\n")
            .finish(),
    );
    azurite.upload(CONTAINER, "etl.tar.gz", &snapshot);
    let url = azurite.read_url(CONTAINER, "etl.tar.gz");
    assert!(url.starts_with("https://"), "{url}");
    (azurite, url, snapshot)
}

#[test]
fn in_an_empty_root_the_agent_fetches_a_snapshot_over_https() {
    let Some(agent) = static_agent() else { return };
    if !common::is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    let tls = Tls::new();
    let (_azurite, url, snapshot) = https_snapshot(&tls);
    // The image ships a CA bundle; here it holds the CA that signed Azurite's certificate.
    let root = scratch_root(&agent, Some(&tls.ca_file()));
    let output = fetch_in(root.path(), &url);
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["sha256"], archive::sha256_hex(&snapshot));
    assert_eq!(
        fs::read(root.path().join("workspace/dags/etl.py")).unwrap(),
        b"print('etl')\n"
    );
}

#[test]
fn without_any_ca_bundle_the_compiled_in_roots_are_used_instead_of_crashing() {
    let Some(agent) = static_agent() else { return };
    if !common::is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    let tls = Tls::new();
    let (_azurite, url, _) = https_snapshot(&tls);
    let root = scratch_root(&agent, None);
    let output = fetch_in(root.path(), &url);
    // Mozilla's roots do not include the test CA: the handshake runs and refuses the
    // certificate, where without compiled-in roots no https client could be built at all.
    assert_eq!(output.status.code(), Some(69), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).to_ascii_lowercase();
    assert!(
        stderr.contains("certificate") || stderr.contains("unknownissuer"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot set up https"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("sig="), "{stderr}");
}
