//! The secrets phase: resolve every secret the task names (Key Vault with the pod's
//! identity, or a local value on a laptop), check the tenant's vault policy first, and hand
//! the values to the child alone: as its environment variables or as 0400 files on the
//! secrets tmpfs. The agent's own environment never holds them, and every value joins the
//! masker before the child starts.

pub mod keyvault;
pub mod policy;
pub mod reference;
pub mod spec;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use zeroize::Zeroizing;

pub use policy::VaultPolicy;
use reference::Reference;
use spec::{Target, Wanted};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {reference} was not found ({detail}); check its name and version in the vault")]
    NotFound { reference: String, detail: String },

    #[error(
        "reading secret {reference} was denied ({detail}); grant the pod's identity the 'Key Vault Secrets User' role on the vault (or a get-secret access policy)"
    )]
    Denied { reference: String, detail: String },

    #[error(
        "could not read secret {reference}: Microsoft Entra ID refused {identity} ({detail}); check the identity's federated credential (issuer and subject system:serviceaccount:NAMESPACE:ACCOUNT) and its client and tenant ids"
    )]
    IdentityRefused {
        reference: String,
        identity: &'static str,
        detail: String,
    },

    #[error(
        "secret {reference} is in a vault this tenant may not read (allowed: {allowed}); ask the platform team to allow the vault, or use one that is allowed"
    )]
    PolicyDenied { reference: String, allowed: String },

    #[error("secret {reference} could not be fetched: {detail}")]
    Unavailable { reference: String, detail: String },

    #[error("local secret {reference} is not available: {detail}")]
    Local { reference: String, detail: String },

    #[error(
        "cannot write the secret file {path}: {error}; the secrets directory (--secrets-dir) must be writable, ideally a memory-backed emptyDir"
    )]
    File { path: String, error: io::Error },
}

impl SecretError {
    pub fn kind(&self) -> &'static str {
        match self {
            SecretError::NotFound { .. } => "secret_not_found",
            SecretError::Denied { .. } | SecretError::IdentityRefused { .. } => "secret_denied",
            SecretError::PolicyDenied { .. } => "policy_denied",
            SecretError::Unavailable { .. } => "secret_unavailable",
            SecretError::Local { .. } => "secret_not_found",
            SecretError::File { .. } => "secret_file",
        }
    }
}

/// The record's account of the phase: how many, how long; never names or values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Report {
    pub count: usize,
    pub duration_ms: u64,
}

/// The values, ready for the child. Dropping it zeroes the agent's copies.
pub struct Delivery {
    pub env: Vec<(String, Zeroizing<String>)>,
    pub files: Vec<PathBuf>,
    values: Vec<Zeroizing<String>>,
    pub report: Report,
}

impl Delivery {
    /// Every value, for the masker.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|v| v.as_str())
    }
}

pub struct Request {
    pub wanted: Vec<Wanted>,
    pub policy: VaultPolicy,
    pub secrets_dir: PathBuf,
    pub retry_budget: Duration,
}

/// Resolves everything or nothing: the policy first (no network call for a forbidden
/// vault), then all values, then the files.
pub fn deliver(request: &Request) -> Result<Delivery, SecretError> {
    let started = Instant::now();
    request
        .policy
        .check(request.wanted.iter().map(|w| &w.reference))
        .map_err(|(reference, allowed)| SecretError::PolicyDenied { reference, allowed })?;
    let vault_secrets: Vec<_> = request
        .wanted
        .iter()
        .filter_map(|w| match &w.reference {
            Reference::Vault(secret) => Some(secret.clone()),
            _ => None,
        })
        .collect();
    let mut from_vaults = keyvault::fetch_all(&vault_secrets, request.retry_budget)?;
    let mut resolved: Vec<(&Target, Zeroizing<String>)> = Vec::new();
    for wanted in &request.wanted {
        let value = match &wanted.reference {
            Reference::Vault(secret) => {
                from_vaults
                    .get(secret)
                    .cloned()
                    .ok_or_else(|| SecretError::Unavailable {
                        reference: secret.to_string(),
                        detail: "no value came back".into(),
                    })?
            }
            local => local_value(local)?,
        };
        resolved.push((&wanted.target, value));
    }
    from_vaults.clear();
    let mut delivery = Delivery {
        env: Vec::new(),
        files: Vec::new(),
        values: Vec::new(),
        report: Report {
            count: 0,
            duration_ms: 0,
        },
    };
    let mut written = Vec::new();
    for (target, value) in resolved {
        match target {
            Target::Env(name) => delivery.env.push((name.clone(), value.clone())),
            Target::File(relative) => {
                let path = request.secrets_dir.join(relative);
                if let Err(error) = write_secret_file(&path, value.as_bytes()) {
                    for path in &written {
                        let _ = fs::remove_file(path);
                    }
                    return Err(SecretError::File {
                        path: path.display().to_string(),
                        error,
                    });
                }
                written.push(path.clone());
                delivery.files.push(path);
            }
        }
        delivery.values.push(value);
    }
    delivery.report = Report {
        count: request.wanted.len(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    Ok(delivery)
}

fn local_value(reference: &Reference) -> Result<Zeroizing<String>, SecretError> {
    let unavailable = |detail: String| SecretError::Local {
        reference: reference.to_string(),
        detail,
    };
    match reference {
        Reference::Env(name) => std::env::var(name)
            .map(Zeroizing::new)
            .map_err(|_| unavailable(format!("the variable {name} is not set"))),
        Reference::File(path) => fs::read_to_string(path)
            .map(|text| Zeroizing::new(text.strip_suffix('\n').unwrap_or(&text).to_string()))
            .map_err(|e| unavailable(e.to_string())),
        Reference::Vault(_) => Err(unavailable("not a local reference".into())),
    }
}

/// Mode 0400, created fresh (an existing file or symlink there is replaced, never
/// written through), owned by the agent's user, which is the child's.
fn write_secret_file(path: &Path, value: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(value)?;
    file.sync_all()
}
