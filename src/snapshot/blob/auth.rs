//! Which credential reaches a blob, chosen the way Azure tools choose: a SAS in the URL;
//! else a connection string or account + key from the environment; else Microsoft Entra ID
//! (workload identity on AKS, then managed identity). Pure: the environment is passed in.

use std::fmt;

use azure_core::credentials::Secret;

/// The well-known key of the storage emulator's account (published by Microsoft; not a secret).
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Clone)]
pub enum Auth {
    /// The URL carries a SAS; nothing more is sent.
    Sas,
    /// A SAS from a connection string, to append to the URL.
    ConnectionSas(Secret),
    SharedKey {
        account: String,
        key: Secret,
    },
    WorkloadIdentity,
    ManagedIdentity,
    /// Plain http to an emulator or a public container: no bearer token may go over it.
    Anonymous,
}

impl Auth {
    /// For messages: how the agent tried to get in, never with what.
    pub fn describe(&self) -> &'static str {
        match self {
            Auth::Sas => "the SAS in the URL",
            Auth::ConnectionSas(_) => "the SAS in AZURE_STORAGE_CONNECTION_STRING",
            Auth::SharedKey { .. } => "the account key",
            Auth::WorkloadIdentity => "workload identity",
            Auth::ManagedIdentity => "managed identity",
            Auth::Anonymous => "anonymous access",
        }
    }

    /// What to do when the service says 401/403.
    pub fn denied_fix(&self) -> &'static str {
        match self {
            Auth::Sas | Auth::ConnectionSas(_) => {
                "the SAS may have expired, lack read (r) permission, or belong to another account; issue a new one"
            }
            Auth::SharedKey { .. } => {
                "check AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (or AZURE_STORAGE_CONNECTION_STRING) for this account"
            }
            Auth::WorkloadIdentity | Auth::ManagedIdentity => {
                "grant the pod's identity the 'Storage Blob Data Reader' role on the container (or 'Contributor' to publish)"
            }
            Auth::Anonymous => {
                "the container is not public; add a SAS to the URL or set credentials (see docs/agent.md, Snapshots)"
            }
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Chooses how to authenticate to `account` over `scheme`, given the URL has a SAS or not.
pub fn choose(
    has_sas: bool,
    account: &str,
    scheme: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Auth, String> {
    if has_sas {
        return Ok(Auth::Sas);
    }
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if let Some(text) = set("AZURE_STORAGE_CONNECTION_STRING") {
        return from_connection_string(&text, account);
    }
    match (set("AZURE_STORAGE_ACCOUNT"), set("AZURE_STORAGE_KEY")) {
        (Some(name), Some(key)) => {
            if name != account {
                return Err(format!(
                    "AZURE_STORAGE_ACCOUNT is `{name}` but the snapshot is in account `{account}`; set the key of `{account}`"
                ));
            }
            return Ok(Auth::SharedKey {
                account: name,
                key: Secret::new(key),
            });
        }
        (None, Some(_)) => {
            return Err("AZURE_STORAGE_KEY is set without AZURE_STORAGE_ACCOUNT; set both".into());
        }
        _ => {}
    }
    if scheme == "http" {
        return Ok(Auth::Anonymous);
    }
    if set("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        for name in ["AZURE_CLIENT_ID", "AZURE_TENANT_ID"] {
            if set(name).is_none() {
                return Err(format!(
                    "AZURE_FEDERATED_TOKEN_FILE is set but {name} is not; on AKS, label the pod azure.workload.identity/use=true and annotate its service account with the client id"
                ));
            }
        }
        return Ok(Auth::WorkloadIdentity);
    }
    Ok(Auth::ManagedIdentity)
}

/// `DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…`, `…;SharedAccessSignature=…`
/// or `UseDevelopmentStorage=true`.
fn from_connection_string(text: &str, account: &str) -> Result<Auth, String> {
    let mut name = None;
    let mut key = None;
    let mut sas = None;
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err("AZURE_STORAGE_CONNECTION_STRING is malformed: expected `Name=value` pairs separated by `;`".into());
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "accountname" => name = Some(v.trim().to_string()),
            "accountkey" => key = Some(v.trim().to_string()),
            "sharedaccesssignature" => sas = Some(v.trim().trim_start_matches('?').to_string()),
            "usedevelopmentstorage" if v.trim().eq_ignore_ascii_case("true") => {
                name = Some(EMULATOR_ACCOUNT.into());
                key = Some(EMULATOR_KEY.into());
            }
            _ => {}
        }
    }
    if let Some(sas) = sas {
        return Ok(Auth::ConnectionSas(Secret::new(sas)));
    }
    match (name, key) {
        (Some(name), Some(key)) if name == account => Ok(Auth::SharedKey {
            account: name,
            key: Secret::new(key),
        }),
        (Some(name), Some(_)) => Err(format!(
            "AZURE_STORAGE_CONNECTION_STRING is for account `{name}` but the snapshot is in account `{account}`"
        )),
        _ => Err("AZURE_STORAGE_CONNECTION_STRING has neither AccountName and AccountKey nor SharedAccessSignature".into()),
    }
}

/// Credential values the agent may hold for Blob Storage, for the masker: whatever path
/// an error or a log line takes, these never come out.
pub fn secrets_to_mask(sas: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut secrets: Vec<String> = sas.into_iter().map(str::to_string).collect();
    if let Some(sas) = sas {
        secrets.extend(
            sas.split('&')
                .filter_map(|pair| pair.strip_prefix("sig="))
                .map(str::to_string),
        );
    }
    secrets.extend(env("AZURE_STORAGE_KEY"));
    if let Some(text) = env("AZURE_STORAGE_CONNECTION_STRING") {
        for part in text.split(';') {
            if let Some((name, value)) = part.split_once('=')
                && matches!(
                    name.trim().to_ascii_lowercase().as_str(),
                    "accountkey" | "sharedaccesssignature"
                )
            {
                secrets.push(value.trim().to_string());
            }
        }
        secrets.push(text);
    }
    secrets.retain(|s| s.len() >= 4);
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn choose_with(has_sas: bool, scheme: &str, vars: &[(&str, &str)]) -> Result<Auth, String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        choose(has_sas, "acct", scheme, &|name| map.get(name).cloned())
    }

    #[test]
    fn the_order_is_sas_then_keys_then_entra() {
        let all = [
            ("AZURE_STORAGE_ACCOUNT", "acct"),
            ("AZURE_STORAGE_KEY", "a2V5"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "t"),
        ];
        assert!(matches!(choose_with(true, "https", &all), Ok(Auth::Sas)));
        assert!(matches!(
            choose_with(false, "https", &all),
            Ok(Auth::SharedKey { .. })
        ));
        assert!(matches!(
            choose_with(false, "https", &all[2..]),
            Ok(Auth::WorkloadIdentity)
        ));
        assert!(matches!(
            choose_with(false, "https", &[]),
            Ok(Auth::ManagedIdentity)
        ));
        assert!(matches!(
            choose_with(false, "http", &all[2..]),
            Ok(Auth::Anonymous)
        ));
    }

    #[test]
    fn connection_strings_give_a_key_or_a_sas() {
        let key = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net";
        assert!(matches!(
            choose_with(false, "https", &[("AZURE_STORAGE_CONNECTION_STRING", key)]),
            Ok(Auth::SharedKey { .. })
        ));
        let sas =
            "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=1&sig=x";
        assert!(matches!(
            choose_with(false, "https", &[("AZURE_STORAGE_CONNECTION_STRING", sas)]),
            Ok(Auth::ConnectionSas(_))
        ));
        let other = "AccountName=other;AccountKey=a2V5";
        let err = choose_with(
            false,
            "https",
            &[("AZURE_STORAGE_CONNECTION_STRING", other)],
        )
        .unwrap_err();
        assert!(err.contains("`other`") && !err.contains("a2V5"), "{err}");
    }

    #[test]
    fn half_configured_identities_are_explained() {
        let err = choose_with(false, "https", &[("AZURE_FEDERATED_TOKEN_FILE", "/t")]).unwrap_err();
        assert!(err.contains("AZURE_CLIENT_ID"), "{err}");
        let err = choose_with(false, "https", &[("AZURE_STORAGE_KEY", "a2V5")]).unwrap_err();
        assert!(
            err.contains("AZURE_STORAGE_ACCOUNT") && !err.contains("a2V5"),
            "{err}"
        );
    }
}
