//! Fetching Key Vault secrets with the pod's identity, through the official SDK: one
//! credential for the whole task (its token cache gives one token per vault resource), one
//! client per vault, every secret in flight at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::StatusCode;
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::future::join_all;
use zeroize::Zeroizing;

use super::SecretError;
use super::reference::VaultSecret;
use crate::azure::{client_options, describe};

/// How the agent proves who it is to Key Vault, chosen from the standard Azure variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Workload,
    Managed,
    /// Managed identity first; the client secret when no managed identity answers.
    ManagedThenClientSecret,
}

impl Identity {
    pub fn choose(env: &dyn Fn(&str) -> Option<String>) -> Identity {
        let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        if set("AZURE_FEDERATED_TOKEN_FILE") {
            Identity::Workload
        } else if set("AZURE_CLIENT_SECRET") {
            Identity::ManagedThenClientSecret
        } else {
            Identity::Managed
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Identity::Workload => "workload identity",
            Identity::Managed => "managed identity",
            Identity::ManagedThenClientSecret => "managed identity or the client secret",
        }
    }
}

/// Fetches every secret; all or nothing.
pub fn fetch_all(
    secrets: &[VaultSecret],
    retry_budget: Duration,
) -> Result<BTreeMap<VaultSecret, Zeroizing<String>>, SecretError> {
    if secrets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let identity = Identity::choose(&|name| std::env::var(name).ok());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SecretError::Unavailable {
            reference: secrets[0].to_string(),
            detail: format!("cannot start the network runtime: {e}"),
        })?;
    let credential = crate::azure::build(|| credential(identity, retry_budget))
        .and_then(|built| built)
        .map_err(|detail| SecretError::Unavailable {
            reference: secrets[0].to_string(),
            detail,
        })?;
    let mut by_vault: BTreeMap<&str, Vec<&VaultSecret>> = BTreeMap::new();
    for secret in secrets {
        by_vault
            .entry(secret.host.as_str())
            .or_default()
            .push(secret);
    }
    runtime.block_on(async {
        let vaults = by_vault.into_iter().map(|(host, wanted)| {
            fetch_vault(host, wanted, credential.clone(), identity, retry_budget)
        });
        let mut values = BTreeMap::new();
        for result in join_all(vaults).await {
            values.extend(result?);
        }
        Ok(values)
    })
}

async fn fetch_vault(
    host: &str,
    wanted: Vec<&VaultSecret>,
    credential: Arc<dyn TokenCredential>,
    identity: Identity,
    retry_budget: Duration,
) -> Result<Vec<(VaultSecret, Zeroizing<String>)>, SecretError> {
    let options = SecretClientOptions {
        client_options: client_options(retry_budget),
        // The challenge's resource must be the vault's own domain, except for a vault given
        // by address (an emulator or a test), which has no domain to compare.
        verify_challenge_resource: Some(!is_address(host)),
        ..Default::default()
    };
    let url = format!("https://{host}/");
    let client = crate::azure::build(|| SecretClient::new(&url, credential, Some(options)))
        .and_then(|built| built.map_err(|e| describe(&e)))
        .map_err(|detail| SecretError::Unavailable {
            reference: url.clone(),
            detail,
        })?;
    let Some((first, rest)) = wanted.split_first() else {
        return Ok(Vec::new());
    };
    // One request first: it meets the vault's authentication challenge and fetches the
    // token once; the rest then go out together with it.
    let mut values = vec![fetch_one(&client, first, identity).await?];
    for result in join_all(
        rest.iter()
            .map(|secret| fetch_one(&client, secret, identity)),
    )
    .await
    {
        values.push(result?);
    }
    Ok(values)
}

async fn fetch_one(
    client: &SecretClient,
    secret: &VaultSecret,
    identity: Identity,
) -> Result<(VaultSecret, Zeroizing<String>), SecretError> {
    let options = SecretClientGetSecretOptions {
        secret_version: secret.version.clone(),
        ..Default::default()
    };
    let reference = secret.to_string();
    let response = client
        .get_secret(&secret.name, Some(options))
        .await
        .map_err(|e| classify(&e, &reference, identity))?;
    let model = response
        .into_model()
        .map_err(|e| SecretError::Unavailable {
            reference: reference.clone(),
            detail: format!("the vault's answer was not a secret: {}", describe(&e)),
        })?;
    let value = model.value.ok_or_else(|| SecretError::NotFound {
        reference: reference.clone(),
        detail: "the secret has no value".into(),
    })?;
    Ok((secret.clone(), Zeroizing::new(value)))
}

fn classify(error: &azure_core::Error, reference: &str, identity: Identity) -> SecretError {
    let reference = reference.to_string();
    let detail = describe(error);
    match error.http_status() {
        Some(StatusCode::NotFound) => SecretError::NotFound {
            reference,
            detail: "HTTP 404 SecretNotFound".into(),
        },
        Some(status @ (StatusCode::Unauthorized | StatusCode::Forbidden)) => SecretError::Denied {
            reference,
            detail: format!("HTTP {} with {}", u16::from(status), identity.describe()),
        },
        _ if matches!(error.kind(), azure_core::error::ErrorKind::Credential) => {
            match token_status(error) {
                // Entra refused the identity itself: configuration, not a passing problem.
                Some(status)
                    if status.is_client_error() && status != StatusCode::TooManyRequests =>
                {
                    SecretError::IdentityRefused {
                        reference,
                        identity: identity.describe(),
                        detail,
                    }
                }
                _ => SecretError::Unavailable {
                    reference,
                    detail: format!("no token from {}: {detail}", identity.describe()),
                },
            }
        }
        _ => SecretError::Unavailable { reference, detail },
    }
}

/// The token endpoint's HTTP status, which the credential error carries as its cause.
fn token_status(error: &azure_core::Error) -> Option<StatusCode> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(level) = cause {
        if let Some(status) = level
            .downcast_ref::<azure_core::Error>()
            .and_then(|e| e.http_status())
        {
            return Some(status);
        }
        cause = level.source();
    }
    None
}

fn is_address(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || name.starts_with('[')
}

fn credential(
    identity: Identity,
    retry_budget: Duration,
) -> Result<Arc<dyn TokenCredential>, String> {
    // Every credential gets the vault clients' bounded retry policy, so an unreachable
    // token endpoint also gives up within the budget.
    let managed = || {
        ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            client_options: client_options(retry_budget),
            ..Default::default()
        }))
        .map_err(|e| format!("managed identity is unavailable: {}", describe(&e)))
    };
    Ok(match identity {
        Identity::Workload => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(retry_budget),
                },
                ..Default::default()
            }))
            .map_err(|e| format!("workload identity is misconfigured: {}", describe(&e)))?
        }
        Identity::Managed => managed()?,
        Identity::ManagedThenClientSecret => {
            let var = |name: &str| {
                std::env::var(name)
                    .map_err(|_| format!("AZURE_CLIENT_SECRET is set but {name} is not; set both"))
            };
            let client_secret = ClientSecretCredential::new(
                &var("AZURE_TENANT_ID")?,
                var("AZURE_CLIENT_ID")?,
                Secret::new(var("AZURE_CLIENT_SECRET")?),
                Some(ClientSecretCredentialOptions {
                    client_options: client_options(retry_budget),
                }),
            )
            .map_err(|e| {
                format!(
                    "the client secret credential is misconfigured: {}",
                    describe(&e)
                )
            })?;
            Arc::new(FirstThatAnswers {
                managed: managed()?,
                client_secret,
                managed_wait: Duration::from_secs(2).min(retry_budget),
            })
        }
    })
}

/// Managed identity when the platform provides one, else the explicit client secret.
#[derive(Debug)]
struct FirstThatAnswers {
    managed: Arc<ManagedIdentityCredential>,
    client_secret: Arc<ClientSecretCredential>,
    managed_wait: Duration,
}

#[async_trait]
impl TokenCredential for FirstThatAnswers {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let managed = tokio::time::timeout(
            self.managed_wait,
            self.managed.get_token(scopes, options.clone()),
        )
        .await;
        match managed {
            Ok(Ok(token)) => Ok(token),
            _ => self.client_secret.get_token(scopes, options).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_follows_the_standard_variables() {
        let with = |vars: &'static [(&'static str, &'static str)]| {
            Identity::choose(&move |name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
        };
        assert_eq!(
            with(&[
                ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
                ("AZURE_CLIENT_SECRET", "s")
            ]),
            Identity::Workload
        );
        assert_eq!(
            with(&[("AZURE_CLIENT_SECRET", "s")]),
            Identity::ManagedThenClientSecret
        );
        assert_eq!(with(&[]), Identity::Managed);
    }

    #[test]
    fn only_addresses_skip_the_challenge_domain_check() {
        assert!(is_address("127.0.0.1:8443"));
        assert!(is_address("localhost:1"));
        assert!(!is_address("team-kv.vault.azure.net"));
    }
}
