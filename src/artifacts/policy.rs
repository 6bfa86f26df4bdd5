//! The tenant's storage policy for data between tasks: every blob a task reads or writes
//! must lie under one of its tenant's storage locations (`tenants.NAME.storage` and
//! `tenants.NAME.artifacts` of the policy file the chart mounts), checked before any
//! request is sent. The Airflow side checks the same at parse and run time; this is the
//! agent's own line, for a pod started any other way. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct PolicyFile {
    #[serde(default)]
    tenants: Option<BTreeMap<String, TenantStorage>>,
}

#[derive(Debug, Deserialize)]
struct TenantStorage {
    #[serde(default)]
    storage: Vec<String>,
    #[serde(default)]
    artifacts: Option<String>,
}

/// The locations the tenant may use; `None` when the file has no per-tenant section (no
/// storage policy configured).
pub fn allowed(
    text: &str,
    origin: &str,
    tenant: Option<&str>,
) -> Result<Option<Vec<String>>, String> {
    let file: PolicyFile = serde_yaml_ng::from_str(text)
        .map_err(|e| format!("{origin} is not a policy file ({e})"))?;
    let Some(tenants) = file.tenants else {
        return Ok(None);
    };
    let Some(tenant) = tenant else {
        return Err(format!(
            "{origin} lists storage per tenant, but the task has no --tenant"
        ));
    };
    Ok(Some(
        tenants
            .get(tenant)
            .map(|t| {
                t.storage
                    .iter()
                    .cloned()
                    .chain(t.artifacts.clone())
                    .collect()
            })
            .unwrap_or_default(),
    ))
}

/// The first location (a URI without query) not under any allowed one, with the allowed
/// list for the message.
pub fn check(
    locations: impl IntoIterator<Item = String>,
    allowed: &[String],
) -> Result<(), (String, String)> {
    for uri in locations {
        let uri = uri.as_str();
        if !allowed.iter().any(|prefix| under(uri, prefix)) {
            let list = if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            };
            return Err((uri.to_string(), list));
        }
    }
    Ok(())
}

/// `uri` is `prefix` or below it, segment by segment: `…/runs` allows `…/runs/x`, never
/// `…/runs-other/x`; hosts compare whole.
fn under(uri: &str, prefix: &str) -> bool {
    let prefix = prefix.split(['?', '#']).next().unwrap_or_default();
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return false;
    }
    uri == prefix
        || uri
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::source::{Source, parse};

    fn blob(text: &str) -> String {
        match parse(text).unwrap() {
            Source::Blob(b) => b.url.to_string(),
            Source::Local(_) => panic!("not a blob"),
        }
    }

    const POLICY: &str = "tenants:\n  user1:\n    storage: [https://user1data.blob.core.windows.net/exports]\n    artifacts: https://user1data.blob.core.windows.net/runs\n  user2:\n    storage: [https://user2data.blob.core.windows.net/snapshots]\n";

    #[test]
    fn a_tenant_may_use_its_storage_and_artifacts_only() {
        let allowed = allowed(POLICY, "policy.yaml", Some("user1"))
            .unwrap()
            .unwrap();
        assert!(
            check(
                [blob(
                    "https://user1data.blob.core.windows.net/runs/d/r/t/-1/1/"
                )],
                &allowed
            )
            .is_ok()
        );
        assert!(
            check(
                [blob(
                    "https://user1data.blob.core.windows.net/exports/a.csv?sig=X"
                )],
                &allowed
            )
            .is_ok()
        );
        for refused in [
            "https://user2data.blob.core.windows.net/snapshots/a.tar.gz",
            "https://user1data.blob.core.windows.net/runs-other/x",
            "https://user1data.blob.core.windows.net.attacker.example/runs/x",
        ] {
            let (uri, list) = check([blob(refused)], &allowed).unwrap_err();
            assert_eq!(uri, refused);
            assert!(list.contains("/runs"), "{list}");
        }
    }

    #[test]
    fn no_tenant_section_means_no_storage_policy() {
        assert_eq!(
            allowed("allowed_vaults: [a-kv]", "p", Some("user1")).unwrap(),
            None
        );
        assert!(allowed(POLICY, "p", None).unwrap_err().contains("--tenant"));
        let unknown = allowed(POLICY, "p", Some("nobody")).unwrap().unwrap();
        assert!(unknown.is_empty());
        let (_, list) = check(
            [blob("https://user1data.blob.core.windows.net/runs/x")],
            &unknown,
        )
        .unwrap_err();
        assert_eq!(list, "none");
    }
}
