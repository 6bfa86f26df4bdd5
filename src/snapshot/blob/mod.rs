//! Blob Storage through the official SDK: choosing credentials, building the client,
//! downloading with resume, uploading, and turning service errors into snapshot errors
//! whose text never carries a SAS, key or token.

pub mod auth;
pub mod content_md5;
pub mod download;
pub mod shared_key;
pub mod upload;

use std::num::NonZero;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{StatusCode, Url};

use crate::azure::describe;
use azure_core::http::ClientOptions;
use azure_identity::{ManagedIdentityCredential, WorkloadIdentityCredential};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};

pub use download::{Download, take_failure};

use super::Transfer;
use super::error::SnapshotError;
use super::source::BlobLocation;
use auth::Auth;

/// A client for one blob, and how it authenticates (for messages).
pub struct Connection {
    pub client: BlobClient,
    pub auth: Auth,
    pub shown: String,
    /// Strings that must never be printed: the SAS, for `redact`.
    secrets: Vec<String>,
    /// What the client was built with, for a container client with the same credential.
    credential: Option<Arc<dyn TokenCredential>>,
    client_options: ClientOptions,
    location: BlobLocation,
}

impl Connection {
    /// The SDK panics while building an HTTP client when no CA certificate can be loaded;
    /// that becomes an error saying what is missing instead of a crash.
    pub fn open(location: &BlobLocation, transfer: &Transfer) -> Result<Connection, SnapshotError> {
        crate::azure::build(|| Connection::build(location, transfer)).map_err(|detail| {
            SnapshotError::Unavailable {
                location: location.url.to_string(),
                detail,
            }
        })?
    }

    fn build(location: &BlobLocation, transfer: &Transfer) -> Result<Connection, SnapshotError> {
        let shown = location.url.to_string();
        let unavailable = |detail: String| SnapshotError::Unavailable {
            location: shown.clone(),
            detail,
        };
        let auth = auth::choose(
            location.sas.is_some(),
            &location.account,
            location.url.scheme(),
            &|name| std::env::var(name).ok(),
        )
        .map_err(|detail| SnapshotError::Denied {
            location: shown.clone(),
            detail,
            fix: "see the credentials of Snapshots in docs/agent.md",
        })?;
        let mut url: Url = location.request_url();
        let mut secrets: Vec<String> = location.sas.iter().cloned().collect();
        let mut options = BlobClientOptions {
            client_options: crate::azure::client_options(transfer.retry_budget),
            ..Default::default()
        };
        // Every body sent carries its MD5, which the service checks (see `content_md5`).
        options
            .client_options
            .per_call_policies
            .push(Arc::new(content_md5::ContentMd5Policy));
        let credential: Option<Arc<dyn TokenCredential>> = match &auth {
            Auth::Sas | Auth::Anonymous => None,
            Auth::ConnectionSas(sas) => {
                url.set_query(Some(sas.secret()));
                secrets.push(sas.secret().to_string());
                None
            }
            Auth::SharedKey { account, key } => {
                secrets.push(key.secret().to_string());
                options
                    .client_options
                    .per_try_policies
                    .push(shared_key::SharedKeyPolicy::new(
                        account.clone(),
                        key.clone(),
                    ));
                None
            }
            Auth::WorkloadIdentity => Some(
                WorkloadIdentityCredential::new(None)
                    .map_err(|e| unavailable(format!("workload identity is misconfigured: {e}")))?,
            ),
            Auth::ManagedIdentity => Some(
                ManagedIdentityCredential::new(None)
                    .map_err(|e| unavailable(format!("managed identity is unavailable: {e}")))?,
            ),
        };
        if credential.is_some() && url.scheme() != "https" {
            return Err(SnapshotError::Denied {
                location: shown,
                detail: "Microsoft Entra ID tokens are only sent over https".into(),
                fix: "use an https URL, or a SAS or account key for an http emulator",
            });
        }
        let client_options = options.client_options.clone();
        let client = BlobClient::new(url, credential.clone(), Some(options))
            .map_err(|e| unavailable(e.to_string()))?;
        tracing::debug!(auth = auth.describe(), "blob client ready");
        Ok(Connection {
            client,
            auth,
            shown,
            secrets,
            credential,
            client_options,
            location: location.clone(),
        })
    }

    /// A connection to another blob of the same account with this one's credential and
    /// pipeline: many blobs, one token.
    pub fn for_blob(&self, location: &BlobLocation) -> Result<Connection, SnapshotError> {
        let mut url = location.request_url();
        if let Auth::ConnectionSas(sas) = &self.auth {
            url.set_query(Some(sas.secret()));
        }
        let options = BlobClientOptions {
            client_options: self.client_options.clone(),
            ..Default::default()
        };
        let client = BlobClient::new(url, self.credential.clone(), Some(options)).map_err(|e| {
            SnapshotError::Unavailable {
                location: location.url.to_string(),
                detail: e.to_string(),
            }
        })?;
        let mut secrets = self.secrets.clone();
        secrets.extend(location.sas.iter().cloned());
        Ok(Connection {
            client,
            auth: self.auth.clone(),
            shown: location.url.to_string(),
            secrets,
            credential: self.credential.clone(),
            client_options: self.client_options.clone(),
            location: location.clone(),
        })
    }

    /// A client for the container of this connection's blob, with the same credential
    /// (listing a folder of blobs).
    pub fn container_client(&self) -> Result<BlobContainerClient, SnapshotError> {
        let mut url = self.location.container_url();
        match &self.auth {
            Auth::ConnectionSas(sas) => url.set_query(Some(sas.secret())),
            _ => url.set_query(self.location.sas.as_deref()),
        }
        let options = BlobContainerClientOptions {
            client_options: self.client_options.clone(),
            ..Default::default()
        };
        BlobContainerClient::new(url, self.credential.clone(), Some(options)).map_err(|e| {
            SnapshotError::Unavailable {
                location: self.shown.clone(),
                detail: e.to_string(),
            }
        })
    }

    /// Removes every secret this connection knows from `text`.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }

    /// The error for a failed request, transient ones included (once retries are spent).
    pub fn failure(&self, error: &azure_core::Error) -> SnapshotError {
        match self.classify(error) {
            Classified::Permanent(error) => error,
            Classified::Transient(detail) => SnapshotError::Unavailable {
                location: self.shown.clone(),
                detail,
            },
        }
    }

    /// The snapshot error for a failed request; `None` when it is worth retrying.
    pub fn classify(&self, error: &azure_core::Error) -> Classified {
        let detail = self.redact(&describe(error));
        let source = self.shown.clone();
        match error.http_status() {
            Some(StatusCode::NotFound) => Classified::Permanent(SnapshotError::NotFound { location: source, detail: "HTTP 404".into() }),
            Some(StatusCode::Unauthorized | StatusCode::Forbidden) => Classified::Permanent(SnapshotError::Denied {
                location: source,
                detail: format!("HTTP {} with {}", u16::from(error.http_status().unwrap_or(StatusCode::Forbidden)), self.auth.describe()),
                fix: self.auth.denied_fix(),
            }),
            Some(StatusCode::PreconditionFailed) => Classified::Permanent(SnapshotError::Unavailable {
                location: source,
                detail: "the blob was replaced while it was being fetched; the next try fetches the new version".into(),
            }),
            Some(StatusCode::RequestedRangeNotSatisfiable) => Classified::Permanent(SnapshotError::Unavailable {
                location: source,
                detail: "the blob became shorter while it was being fetched".into(),
            }),
            Some(status) if status.is_client_error() && !matches!(status, StatusCode::RequestTimeout | StatusCode::TooManyRequests) => {
                Classified::Permanent(SnapshotError::Unavailable {
                    location: source,
                    detail: format!("HTTP {}: {detail}", u16::from(status)),
                })
            }
            _ if matches!(error.kind(), azure_core::error::ErrorKind::Credential) => Classified::Permanent(SnapshotError::Denied {
                location: source,
                detail: format!("no token from {}: {detail}", self.auth.describe()),
                fix: self.auth.denied_fix(),
            }),
            _ => Classified::Transient(detail),
        }
    }
}

pub enum Classified {
    Permanent(SnapshotError),
    Transient(String),
}

/// Replaces each secret, and any `sig=` value, with `REDACTED`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret.as_str(), "REDACTED");
    }
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("sig=") {
        cleaned.push_str(&rest[..at + 4]);
        cleaned.push_str("REDACTED");
        let tail = &rest[at + 4..];
        let end = tail
            .find(|c: char| matches!(c, '&' | ')' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    cleaned.push_str(rest);
    cleaned
}

/// A runtime on the calling thread for the requests about `shown`.
pub fn runtime(shown: &str) -> Result<tokio::runtime::Runtime, SnapshotError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SnapshotError::Unavailable {
            location: shown.to_string(),
            detail: format!("cannot start the network runtime: {e}"),
        })
}

pub fn nonzero(n: usize) -> NonZero<usize> {
    NonZero::new(n).unwrap_or(NonZero::<usize>::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_known_secrets_and_any_signature() {
        let text = "error sending request for url (https://a.blob.core.windows.net/c/b?sv=1&sig=abc%2Fdef&se=2) key=S3CR3TKEY";
        let out = redact(text, &["S3CR3TKEY".to_string()]);
        assert!(
            !out.contains("abc%2Fdef") && !out.contains("S3CR3TKEY"),
            "{out}"
        );
        assert!(out.contains("sig=REDACTED&se=2)"), "{out}");
    }
}
