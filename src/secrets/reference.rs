//! What a secret reference names: a Key Vault secret (`https://VAULT.vault.azure.net/secrets/
//! NAME[/VERSION]` or the short `VAULT/NAME[/VERSION]`), or, for a laptop with no cloud, a
//! local value (`env:NAME`, `file:PATH`). Pure parsing; references hold no secret.

use std::fmt;
use std::path::PathBuf;

/// Key Vault's public-cloud DNS suffix; sovereign clouds pass their own.
pub const PUBLIC_VAULT_SUFFIX: &str = "vault.azure.net";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    Vault(VaultSecret),
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultSecret {
    /// `myvault.vault.azure.net`, or `host:port` for a vault given by URL.
    pub host: String,
    pub name: String,
    pub version: Option<String>,
}

impl VaultSecret {
    pub fn vault_url(&self) -> String {
        format!("https://{}/", self.host)
    }
}

impl fmt::Display for VaultSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Reference::Vault(self.clone()).fmt(f)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Vault(secret) => {
                write!(f, "https://{}/secrets/{}", secret.host, secret.name)?;
                if let Some(version) = &secret.version {
                    write!(f, "/{version}")?;
                }
                Ok(())
            }
            Reference::Env(name) => write!(f, "env:{name}"),
            Reference::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

const FORMS: &str = "give https://VAULT.vault.azure.net/secrets/NAME[/VERSION], VAULT/NAME[/VERSION], env:NAME or file:PATH";

pub fn parse(text: &str, vault_suffix: &str) -> Result<Reference, String> {
    if let Some(name) = text.strip_prefix("env:") {
        if !is_env_name(name) {
            return Err(format!(
                "`{text}` does not name an environment variable; {FORMS}"
            ));
        }
        return Ok(Reference::Env(name.to_string()));
    }
    if let Some(path) = text.strip_prefix("file:") {
        if path.is_empty() {
            return Err(format!("`{text}` names no file; {FORMS}"));
        }
        return Ok(Reference::File(PathBuf::from(path)));
    }
    if let Some(rest) = text.strip_prefix("https://") {
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("`{text}` has no /secrets/NAME path; {FORMS}"))?;
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let (name, version) = match parts.as_slice() {
            ["secrets", name] => (*name, None),
            ["secrets", name, version] => (*name, Some(*version)),
            _ => return Err(format!("`{text}` is not a secret identifier; {FORMS}")),
        };
        if host.is_empty() || host.contains('@') {
            return Err(format!("`{text}` has no valid vault host; {FORMS}"));
        }
        return vault_secret(host.to_ascii_lowercase(), name, version, text);
    }
    if text.contains("://") {
        return Err(format!("`{text}` is not an https URL; {FORMS}"));
    }
    let parts: Vec<&str> = text.split('/').collect();
    let (vault, name, version) = match parts.as_slice() {
        [vault, name] => (*vault, *name, None),
        [vault, name, version] => (*vault, *name, Some(*version)),
        _ => return Err(format!("`{text}` is not a secret reference; {FORMS}")),
    };
    if !(3..=24).contains(&vault.len())
        || !vault
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "`{vault}` in `{text}` is not a Key Vault name (3-24 letters, digits and dashes); {FORMS}"
        ));
    }
    vault_secret(
        format!("{}.{vault_suffix}", vault.to_ascii_lowercase()),
        name,
        version,
        text,
    )
}

fn vault_secret(
    host: String,
    name: &str,
    version: Option<&str>,
    text: &str,
) -> Result<Reference, String> {
    if name.is_empty()
        || name.len() > 127
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "`{name}` in `{text}` is not a Key Vault secret name (1-127 letters, digits and dashes)"
        ));
    }
    if let Some(version) = version
        && (version.is_empty() || !version.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(format!(
            "`{version}` in `{text}` is not a secret version (letters and digits)"
        ));
    }
    Ok(Reference::Vault(VaultSecret {
        host,
        name: name.to_string(),
        version: version.map(str::to_string),
    }))
}

pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(host: &str, name: &str, version: Option<&str>) -> Reference {
        Reference::Vault(VaultSecret {
            host: host.into(),
            name: name.into(),
            version: version.map(Into::into),
        })
    }

    #[test]
    fn long_and_short_forms_name_the_same_secret() {
        let long = parse(
            "https://Team-KV.vault.azure.net/secrets/db-password/0123abcd",
            PUBLIC_VAULT_SUFFIX,
        )
        .unwrap();
        let short = parse("team-kv/db-password/0123abcd", PUBLIC_VAULT_SUFFIX).unwrap();
        assert_eq!(long, short);
        assert_eq!(
            long,
            vault("team-kv.vault.azure.net", "db-password", Some("0123abcd"))
        );
        assert_eq!(
            long.to_string(),
            "https://team-kv.vault.azure.net/secrets/db-password/0123abcd"
        );
        assert_eq!(
            parse("team-kv/api-key", "vault.usgovcloudapi.net").unwrap(),
            vault("team-kv.vault.usgovcloudapi.net", "api-key", None)
        );
        assert_eq!(
            parse("https://127.0.0.1:8443/secrets/x", PUBLIC_VAULT_SUFFIX).unwrap(),
            vault("127.0.0.1:8443", "x", None)
        );
    }

    #[test]
    fn local_references_for_laptops() {
        assert_eq!(
            parse("env:DB_PASSWORD", PUBLIC_VAULT_SUFFIX).unwrap(),
            Reference::Env("DB_PASSWORD".into())
        );
        assert_eq!(
            parse("file:/home/me/.pw", PUBLIC_VAULT_SUFFIX).unwrap(),
            Reference::File("/home/me/.pw".into())
        );
        assert!(parse("env:1BAD", PUBLIC_VAULT_SUFFIX).is_err());
    }

    #[test]
    fn malformed_references_say_what_is_expected() {
        for bad in [
            "kv",
            "a/b",
            "team-kv/",
            "team-kv/bad_name",
            "http://kv.vault.azure.net/secrets/x",
            "https://kv.vault.azure.net/keys/x",
            "team-kv/x/ver-1",
        ] {
            let err = parse(bad, PUBLIC_VAULT_SUFFIX).unwrap_err();
            assert!(
                err.contains(&format!("`{}", bad.split('/').next().unwrap_or(bad)))
                    || err.contains('`'),
                "{bad}: {err}"
            );
        }
        assert!(
            parse("kv/x", PUBLIC_VAULT_SUFFIX)
                .unwrap_err()
                .contains("3-24")
        );
    }
}
