//! What the task asks for: each secret delivered as an environment variable of the child
//! (`--secret ENV=REF`) or as a file under the secrets directory (`--secret-file PATH=REF`),
//! from flags or from a JSON/YAML list (`--secrets-from FILE`). Pure parsing.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::reference::{self, Reference};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Env(String),
    /// Relative to the secrets directory.
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub target: Target,
    pub reference: Reference,
}

/// `ENV_NAME=REF`.
pub fn parse_env(text: &str, vault_suffix: &str) -> Result<Wanted, String> {
    let (name, reference) = split(text, "ENV_NAME=REF", "DB_PASSWORD=team-kv/db-password")?;
    Ok(Wanted {
        target: Target::Env(env_name(name)?),
        reference: reference::parse(reference, vault_suffix)?,
    })
}

/// `PATH=REF`, PATH relative to the secrets directory.
pub fn parse_file(text: &str, vault_suffix: &str) -> Result<Wanted, String> {
    let (path, reference) = split(text, "PATH=REF", "db/password=team-kv/db-password")?;
    Ok(Wanted {
        target: Target::File(file_path(path)?),
        reference: reference::parse(reference, vault_suffix)?,
    })
}

fn split<'a>(text: &'a str, form: &str, example: &str) -> Result<(&'a str, &'a str), String> {
    text.split_once('=')
        .filter(|(name, reference)| !name.is_empty() && !reference.is_empty())
        .ok_or_else(|| format!("`{text}` is not {form}; for example {example}"))
}

fn env_name(name: &str) -> Result<String, String> {
    if !reference::is_env_name(name) {
        return Err(format!(
            "`{name}` is not an environment variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    if name.starts_with("TASK_AGENT_") {
        return Err(format!(
            "`{name}` is reserved for task-agent's own settings; choose another name"
        ));
    }
    Ok(name.to_string())
}

/// A secret file stays inside the secrets directory: relative, no `..`.
fn file_path(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    let inside = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside || path.components().next().is_none() {
        return Err(format!(
            "`{text}` must be a relative path inside the secrets directory (no leading / and no ..)"
        ));
    }
    Ok(path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect())
}

/// One entry of a `--secrets-from` file: `{env: NAME, ref: REF}` or `{file: PATH, ref: REF}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    env: Option<String>,
    file: Option<String>,
    #[serde(rename = "ref")]
    reference: String,
}

/// Parses a `--secrets-from` document (JSON or YAML; JSON is YAML too). `origin` names it in
/// errors.
pub fn parse_list(text: &str, origin: &str, vault_suffix: &str) -> Result<Vec<Wanted>, String> {
    let entries: Vec<Entry> = serde_yaml_ng::from_str(text).map_err(|e| {
        format!(
            "{origin} is not a list of secrets ({e}); write entries like `- {{env: DB_PASSWORD, ref: team-kv/db-password}}` or `- {{file: tls/key.pem, ref: team-kv/tls-key}}`"
        )
    })?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = |e: String| format!("{origin}, entry {}: {e}", i + 1);
            let reference = reference::parse(&entry.reference, vault_suffix).map_err(at)?;
            let target = match (entry.env, entry.file) {
                (Some(name), None) => Target::Env(env_name(&name).map_err(at)?),
                (None, Some(path)) => Target::File(file_path(&path).map_err(at)?),
                _ => return Err(at("give exactly one of `env` and `file`".into())),
            };
            Ok(Wanted { target, reference })
        })
        .collect()
}

/// Two secrets may not claim the same variable or file.
pub fn check_unique(wanted: &[Wanted]) -> Result<(), String> {
    for (i, a) in wanted.iter().enumerate() {
        if let Some(b) = wanted[i + 1..].iter().find(|b| b.target == a.target) {
            let what = match &a.target {
                Target::Env(name) => format!("the variable {name}"),
                Target::File(path) => format!("the file {}", path.display()),
            };
            return Err(format!(
                "{what} is given twice ({} and {}); keep one",
                a.reference, b.reference
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::reference::PUBLIC_VAULT_SUFFIX as S;

    #[test]
    fn flags_name_a_target_and_a_reference() {
        let wanted = parse_env("DB_PASSWORD=team-kv/db-password", S).unwrap();
        assert_eq!(wanted.target, Target::Env("DB_PASSWORD".into()));
        let wanted = parse_file("./tls/key.pem=team-kv/tls-key", S).unwrap();
        assert_eq!(wanted.target, Target::File("tls/key.pem".into()));
        assert!(
            parse_env("=team-kv/x", S)
                .unwrap_err()
                .contains("ENV_NAME=REF")
        );
        assert!(
            parse_env("TASK_AGENT_TIMEOUT=team-kv/x", S)
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            parse_file("../etc/passwd=team-kv/x", S)
                .unwrap_err()
                .contains("inside the secrets directory")
        );
        assert!(parse_file("/etc/passwd=team-kv/x", S).is_err());
    }

    #[test]
    fn lists_come_as_yaml_or_json_and_errors_name_the_entry() {
        let yaml = "- env: DB_PASSWORD\n  ref: team-kv/db-password\n- {file: tls/key.pem, ref: 'https://team-kv.vault.azure.net/secrets/tls-key'}\n";
        let wanted = parse_list(yaml, "secrets.yaml", S).unwrap();
        assert_eq!(wanted.len(), 2);
        let json = r#"[{"env": "A_KEY", "ref": "env:LOCAL_KEY"}]"#;
        assert_eq!(
            parse_list(json, "s.json", S).unwrap()[0].reference,
            Reference::Env("LOCAL_KEY".into())
        );
        let err = parse_list("- {env: X, file: y, ref: kv1/a}", "s.yaml", S).unwrap_err();
        assert!(
            err.contains("s.yaml, entry 1") && err.contains("exactly one"),
            "{err}"
        );
        let err = parse_list("- {env: X, reff: kv1/a}", "s.yaml", S).unwrap_err();
        assert!(err.contains("s.yaml is not a list"), "{err}");
    }

    #[test]
    fn a_target_given_twice_is_refused() {
        let a = parse_env("X=kv1/a", S).unwrap();
        let b = parse_env("X=kv1/b", S).unwrap();
        assert!(
            check_unique(&[a.clone(), b])
                .unwrap_err()
                .contains("the variable X is given twice")
        );
        assert!(check_unique(&[a]).is_ok());
    }
}
