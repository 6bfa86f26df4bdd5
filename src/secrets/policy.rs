//! The tenant's vault policy: which vaults a task may read, set by the platform (flag or the
//! policy file the Helm chart mounts), checked before any network call. Pure.

use serde::Deserialize;

use super::reference::{Reference, VaultSecret};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultPolicy {
    /// `None`: no policy configured (a developer's machine); `Some`: only these vaults.
    allowed: Option<Vec<String>>,
}

impl VaultPolicy {
    pub fn allow(vaults: impl IntoIterator<Item = String>) -> VaultPolicy {
        VaultPolicy {
            allowed: Some(
                vaults
                    .into_iter()
                    .map(|v| v.trim().to_ascii_lowercase())
                    .filter(|v| !v.is_empty())
                    .collect(),
            ),
        }
    }

    pub fn unrestricted() -> VaultPolicy {
        VaultPolicy { allowed: None }
    }

    /// Both sources narrow: a vault must be allowed by each that is configured.
    pub fn and(self, other: VaultPolicy) -> VaultPolicy {
        match (self.allowed, other.allowed) {
            (None, other) => VaultPolicy { allowed: other },
            (mine, None) => VaultPolicy { allowed: mine },
            (Some(mine), Some(theirs)) => VaultPolicy {
                allowed: Some(mine.into_iter().filter(|v| theirs.contains(v)).collect()),
            },
        }
    }

    /// The first reference the policy forbids, with the allowed list for the message.
    pub fn check<'a>(
        &self,
        references: impl IntoIterator<Item = &'a Reference>,
    ) -> Result<(), (String, String)> {
        let Some(allowed) = &self.allowed else {
            return Ok(());
        };
        for reference in references {
            if let Reference::Vault(secret) = reference
                && !allowed.iter().any(|entry| matches(entry, secret))
            {
                let list = if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                };
                return Err((reference.to_string(), list));
            }
        }
        Ok(())
    }
}

/// Key Vault's DNS suffixes in Azure's public and sovereign clouds: a policy entry that is a
/// bare vault name allows that vault in any of them, and on no other host.
const KEY_VAULT_SUFFIXES: [&str; 4] = [
    "vault.azure.net",
    "vault.azure.cn",
    "vault.usgovcloudapi.net",
    "vault.microsoftazure.de",
];

/// An entry is a vault name (`team-kv`, in any Azure cloud) or a full host (`team-kv.vault.azure.net`).
/// A name never matches by its first DNS label alone: `team-kv.attacker.example` is not `team-kv`.
fn matches(entry: &str, secret: &VaultSecret) -> bool {
    let entry = entry.trim_start_matches("https://").trim_end_matches('/');
    if secret.host == entry {
        return true;
    }
    entry.len() >= 3
        && !entry.contains('.')
        && secret
            .host
            .strip_prefix(entry)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|suffix| KEY_VAULT_SUFFIXES.contains(&suffix))
}

#[derive(Debug, Deserialize)]
struct PolicyFile {
    #[serde(default)]
    allowed_vaults: Option<Vec<String>>,
    #[serde(default)]
    tenants: Option<std::collections::BTreeMap<String, TenantPolicy>>,
}

#[derive(Debug, Deserialize)]
struct TenantPolicy {
    #[serde(default)]
    allowed_vaults: Vec<String>,
}

/// Reads the policy file the chart mounts: either `allowed_vaults: [...]` at the top, or
/// `tenants: {NAME: {allowed_vaults: [...]}}` where the task's tenant picks its entry.
pub fn from_file(text: &str, origin: &str, tenant: Option<&str>) -> Result<VaultPolicy, String> {
    let file: PolicyFile = serde_yaml_ng::from_str(text)
        .map_err(|e| format!("{origin} is not a vault policy ({e}); expected `allowed_vaults: [VAULT, ...]` or `tenants: {{NAME: {{allowed_vaults: [...]}}}}`"))?;
    if let Some(list) = file.allowed_vaults {
        return Ok(VaultPolicy::allow(list));
    }
    match (file.tenants, tenant) {
        (Some(tenants), Some(tenant)) => Ok(VaultPolicy::allow(
            tenants
                .get(tenant)
                .map(|t| t.allowed_vaults.clone())
                .unwrap_or_default(),
        )),
        (Some(_), None) => Err(format!(
            "{origin} lists vaults per tenant, but the task has no --tenant"
        )),
        (None, _) => Ok(VaultPolicy::allow(Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::reference::{PUBLIC_VAULT_SUFFIX, parse};

    fn r(text: &str) -> Reference {
        parse(text, PUBLIC_VAULT_SUFFIX).unwrap()
    }

    #[test]
    fn a_vault_name_allows_key_vault_hosts_only() {
        let policy = VaultPolicy::allow(["team-kv".to_string()]);
        for allowed in [
            "team-kv/a",
            "https://team-kv.vault.azure.net/secrets/a",
            "https://team-kv.vault.azure.cn/secrets/a",
            "https://team-kv.vault.usgovcloudapi.net/secrets/a",
        ] {
            assert!(policy.check([&r(allowed)]).is_ok(), "{allowed}");
        }
        for refused in [
            "https://team-kv.attacker.example/secrets/a",
            "https://team-kv.vault.azure.net.attacker.example/secrets/a",
            "https://team-kv:8443/secrets/a",
            "https://team-kv-other.vault.azure.net/secrets/a",
        ] {
            assert!(policy.check([&r(refused)]).is_err(), "{refused}");
        }
    }

    #[test]
    fn only_listed_vaults_pass_and_local_references_are_not_vaults() {
        let policy =
            VaultPolicy::allow(["team-kv".to_string(), "shared.vault.azure.net".to_string()]);
        assert!(
            policy
                .check([
                    &r("team-kv/a"),
                    &r("https://shared.vault.azure.net/secrets/b"),
                    &r("env:X")
                ])
                .is_ok()
        );
        let (denied, allowed) = policy
            .check([&r("team-kv/a"), &r("other-kv/b")])
            .unwrap_err();
        assert_eq!(denied, "https://other-kv.vault.azure.net/secrets/b");
        assert_eq!(allowed, "team-kv, shared.vault.azure.net");
        assert!(VaultPolicy::unrestricted().check([&r("any-kv/x")]).is_ok());
        assert!(
            VaultPolicy::allow(Vec::new())
                .check([&r("any-kv/x")])
                .is_err()
        );
    }

    #[test]
    fn flag_and_file_both_narrow() {
        let both = VaultPolicy::allow(["a-kv".into(), "b-kv".into()])
            .and(VaultPolicy::allow(["b-kv".into()]));
        assert!(both.check([&r("a-kv/x")]).is_err());
        assert!(both.check([&r("b-kv/x")]).is_ok());
    }

    #[test]
    fn the_policy_file_is_per_platform_or_per_tenant() {
        let flat = from_file("allowed_vaults: [team-kv]", "policy.yaml", None).unwrap();
        assert!(flat.check([&r("team-kv/x")]).is_ok());
        let per_tenant = "tenants:\n  acme: {allowed_vaults: [acme-kv]}\n  other: {allowed_vaults: [other-kv]}\n";
        let acme = from_file(per_tenant, "policy.yaml", Some("acme")).unwrap();
        assert!(acme.check([&r("acme-kv/x")]).is_ok());
        assert!(acme.check([&r("other-kv/x")]).is_err());
        assert!(
            from_file(per_tenant, "policy.yaml", Some("nobody"))
                .unwrap()
                .check([&r("acme-kv/x")])
                .is_err()
        );
        assert!(
            from_file(per_tenant, "policy.yaml", None)
                .unwrap_err()
                .contains("--tenant")
        );
    }
}
