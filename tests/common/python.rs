//! Microsoft's Python Azure clients (azure-identity, azure-storage-blob,
//! azure-keyvault-secrets), run from tests/.venv, which scripts/install-test-deps creates at
//! the versions tests/requirements.txt pins. The stand-in tests run them against the
//! stand-ins so those cannot drift from the protocols the real services speak.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::tls::Tls;

/// The venv's interpreter.
pub fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps",
        python.display()
    );
    python
}

/// Runs a Python snippet with the test CA as the only trusted root and nothing of the
/// environment's Azure or proxy settings. `vars` reach the script as environment variables.
pub fn run(tls: &Tls, script: &str, vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(python());
    command.arg("-c").arg(script).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy().to_ascii_uppercase();
        if key_text.starts_with("AZURE_") || key_text.ends_with("_PROXY") {
            command.env_remove(&key);
        }
    }
    command
        .env("REQUESTS_CA_BUNDLE", tls.ca_file())
        .env("SSL_CERT_FILE", tls.ca_file())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .envs(vars.iter().copied());
    command.output().expect("python runs")
}

/// Writes a workload-identity token file (what the kubelet projects) into `dir`.
pub fn token_file(dir: &Path, content: &str) -> PathBuf {
    let path = dir.join("azure-identity-token");
    std::fs::write(&path, content).expect("write the federated token file");
    path
}
