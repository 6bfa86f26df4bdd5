//! What a task declares it reads and writes: `--output PATH[=BLOB_URI][#OPTIONS]`,
//! `--input PATH=BLOB_URI[#OPTIONS]`, and the same as JSON or YAML lists in
//! `--outputs-from` / `--inputs-from`. Parsing is pure; messages never repeat a SAS.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Location;
use crate::snapshot::source::{self, Source};

/// One declared output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// As declared: relative to the workdir, or absolute.
    pub path: PathBuf,
    /// Where it goes; `None`: `ARTIFACTS/files/ABSOLUTE_PATH`.
    pub destination: Option<Location>,
    /// A directory packed into one `.tar.gz` blob.
    pub archive: bool,
    /// Missing after success is not an error.
    pub optional: bool,
}

/// One declared input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub path: PathBuf,
    pub source: Location,
    /// The URI ends in `/`: every blob (or file) under it, into the directory `path`.
    pub folder: bool,
    /// A `.tar.gz` blob unpacked into the directory `path`.
    pub archive: bool,
    /// The digest its producer recorded, lowercase hex.
    pub sha256: Option<String>,
}

const OUTPUT_FORM: &str = "give PATH, PATH=BLOB_URI or PATH=BLOB_URI#archive,optional (BLOB_URI: https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH, maybe with a SAS query)";
const INPUT_FORM: &str = "give PATH=BLOB_URI, with #sha256=HEX and/or #archive after it (a BLOB_URI ending in / is a folder of blobs)";

/// Parses one `--output` value.
pub fn parse_output(text: &str) -> Result<OutputSpec, String> {
    let (path, rest) = match text.split_once('=') {
        Some((path, rest)) => (path, Some(rest)),
        None => (text, None),
    };
    let (destination, options) = match rest {
        // `PATH#OPTIONS`: the options follow the path itself.
        None => (None, split_options(path).1),
        Some(rest) => {
            let (uri, options) = split_options(rest);
            let destination = if uri.is_empty() {
                None
            } else {
                Some(blob(uri, "--output", OUTPUT_FORM)?)
            };
            (destination, options)
        }
    };
    let path = match rest {
        None => split_options(path).0,
        Some(_) => path,
    };
    let path = declared_path(path, "--output", OUTPUT_FORM)?;
    let mut spec = OutputSpec {
        path,
        destination,
        archive: false,
        optional: false,
    };
    for option in options {
        match option {
            "archive" => spec.archive = true,
            "optional" => spec.optional = true,
            other => {
                return Err(format!(
                    "--output {}: unknown option `{other}`; the options are `archive` and `optional`",
                    spec.path.display()
                ));
            }
        }
    }
    Ok(spec)
}

/// Parses one `--input` value.
pub fn parse_input(text: &str) -> Result<InputSpec, String> {
    let Some((path, rest)) = text.split_once('=') else {
        return Err(format!(
            "--input `{}` names no blob; {INPUT_FORM}",
            source::without_query(text)
        ));
    };
    let path = declared_path(path, "--input", INPUT_FORM)?;
    let (uri, options) = split_options(rest);
    let source = blob(uri, "--input", INPUT_FORM)?;
    let mut spec = InputSpec {
        folder: source::without_query(uri).ends_with('/'),
        path,
        source,
        archive: false,
        sha256: None,
    };
    for option in options {
        match option.split_once('=') {
            Some(("sha256", hex)) => spec.sha256 = Some(sha256(hex, &spec.path)?),
            None if option == "archive" => spec.archive = true,
            _ => {
                return Err(format!(
                    "--input {}: unknown option `{option}`; the options are `sha256=HEX` and `archive`",
                    spec.path.display()
                ));
            }
        }
    }
    if spec.folder && spec.archive {
        return Err(format!(
            "--input {}: `archive` names one .tar.gz blob, but the URI ends in `/` (a folder); drop one of them",
            spec.path.display()
        ));
    }
    Ok(spec)
}

/// `--outputs-from`: a JSON or YAML list of `{path, uri, archive, optional}`.
pub fn outputs_from(path: &Path) -> Result<Vec<OutputSpec>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        path: String,
        #[serde(default)]
        uri: Option<String>,
        #[serde(default)]
        archive: bool,
        #[serde(default)]
        optional: bool,
    }
    let entries: Vec<Entry> = read_list(path, "--outputs-from")?;
    entries
        .into_iter()
        .map(|e| {
            Ok(OutputSpec {
                path: declared_path(&e.path, "--outputs-from", OUTPUT_FORM)?,
                destination: e
                    .uri
                    .map(|u| blob(&u, "--outputs-from", OUTPUT_FORM))
                    .transpose()?,
                archive: e.archive,
                optional: e.optional,
            })
        })
        .collect()
}

/// `--inputs-from`: a JSON or YAML list of `{path, uri, sha256, archive}`.
pub fn inputs_from(path: &Path) -> Result<Vec<InputSpec>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        path: String,
        uri: String,
        #[serde(default)]
        sha256: Option<String>,
        #[serde(default)]
        archive: bool,
    }
    let entries: Vec<Entry> = read_list(path, "--inputs-from")?;
    entries
        .into_iter()
        .map(|e| {
            let mut text = format!("{}={}#", e.path, e.uri);
            if let Some(hex) = &e.sha256 {
                text.push_str(&format!("sha256={hex},"));
            }
            if e.archive {
                text.push_str("archive");
            }
            parse_input(text.trim_end_matches([',', '#']))
        })
        .collect()
}

fn read_list<T: serde::de::DeserializeOwned>(path: &Path, option: &str) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{option} {}: cannot read it: {e}", path.display()))?;
    // YAML is a superset of JSON: one parser reads both.
    serde_yaml_ng::from_str(&text).map_err(|e| {
        format!(
            "{option} {}: not a list of declarations ({e}); see docs/data-between-tasks.md",
            path.display()
        )
    })
}

/// The URI and the comma-separated options after its `#`.
fn split_options(text: &str) -> (&str, Vec<&str>) {
    match text.rsplit_once('#') {
        Some((uri, options)) => (
            uri,
            options
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .collect(),
        ),
        None => (text, Vec::new()),
    }
}

fn declared_path(text: &str, option: &str, form: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err(format!("{option} has an empty PATH; {form}"));
    }
    Ok(PathBuf::from(text))
}

/// A blob URI, or a `file://` URI for a local store (a bare path would be ambiguous with
/// the declared PATH, so it is refused).
fn blob(uri: &str, option: &str, form: &str) -> Result<Location, String> {
    match source::parse(uri) {
        Ok(Source::Blob(location)) => Ok(Location::Blob(location)),
        Ok(Source::Local(path)) if uri.starts_with("file://") => Ok(Location::Local(path)),
        Ok(Source::Local(_)) => Err(format!(
            "{option}: `{}` is not a blob URI; {form}",
            source::without_query(uri)
        )),
        Err(problem) => Err(format!("{option}: {problem}")),
    }
}

fn sha256(hex: &str, path: &Path) -> Result<String, String> {
    let hex = hex
        .strip_prefix("sha256:")
        .unwrap_or(hex)
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!(
            "--input {}: sha256 must be 64 hex digits, as the producer's record gives it",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "https://acct.blob.core.windows.net/runs/d/r/t/-1/1/files/out.csv";

    #[test]
    fn outputs_with_and_without_a_destination_and_options() {
        let bare = parse_output("/data/out.csv").unwrap();
        assert_eq!(bare.path, PathBuf::from("/data/out.csv"));
        assert_eq!(bare.destination, None);
        let archived = parse_output("/data/bundle#archive,optional").unwrap();
        assert_eq!(archived.path, PathBuf::from("/data/bundle"));
        assert!(archived.archive && archived.optional);
        let full = parse_output(&format!("out={URI}?sv=1&sig=SECRET#archive, optional")).unwrap();
        assert!(full.archive && full.optional);
        let Some(Location::Blob(destination)) = full.destination else {
            panic!("not a blob destination");
        };
        assert_eq!(destination.url.as_str(), URI);
        assert_eq!(destination.sas.as_deref(), Some("sv=1&sig=SECRET"));
        let error = parse_output(&format!("out={URI}?sig=SECRET#zip")).unwrap_err();
        assert!(
            error.contains("unknown option `zip`") && !error.contains("SECRET"),
            "{error}"
        );
        assert!(parse_output("=x").is_err());
    }

    #[test]
    fn inputs_with_digest_folder_and_archive() {
        let hex = "ab".repeat(32);
        let input = parse_input(&format!("in.csv={URI}#sha256={}", hex.to_uppercase())).unwrap();
        assert_eq!(input.sha256.as_deref(), Some(hex.as_str()));
        assert!(!input.folder && !input.archive);
        let folder = parse_input("data=https://acct.blob.core.windows.net/runs/x/").unwrap();
        assert!(folder.folder);
        let error =
            parse_input("data=https://acct.blob.core.windows.net/runs/x/#archive").unwrap_err();
        assert!(error.contains("folder"), "{error}");
        let error = parse_input(&format!("in={URI}#sha256=abc")).unwrap_err();
        assert!(error.contains("64 hex digits"), "{error}");
        let error = parse_input("in.csv").unwrap_err();
        assert!(error.contains("names no blob"), "{error}");
        let error = parse_input("in.csv=/local/file").unwrap_err();
        assert!(error.contains("not a blob URI"), "{error}");
        let local = parse_input("in=file:///srv/runs/d/out/").unwrap();
        assert!(local.folder);
        assert_eq!(local.source, Location::Local("/srv/runs/d/out/".into()));
        assert_eq!(local.source.shown(), "file:///srv/runs/d/out/");
    }

    #[test]
    fn lists_from_yaml_and_json_files() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("outputs.yaml");
        std::fs::write(&yaml, format!("- path: /data/out\n  uri: {URI}\n  archive: true\n- path: log.txt\n  optional: true\n")).unwrap();
        let outputs = outputs_from(&yaml).unwrap();
        assert_eq!(outputs.len(), 2);
        assert!(outputs[0].archive && outputs[1].optional && outputs[1].destination.is_none());
        let json = dir.path().join("inputs.json");
        std::fs::write(
            &json,
            format!(
                r#"[{{"path": "in.csv", "uri": "{URI}", "sha256": "{}"}}]"#,
                "0".repeat(64)
            ),
        )
        .unwrap();
        let inputs = inputs_from(&json).unwrap();
        assert_eq!(inputs[0].sha256.as_deref(), Some("0".repeat(64).as_str()));
        std::fs::write(&json, r#"[{"path": "in.csv", "url": "x"}]"#).unwrap();
        let error = inputs_from(&json).unwrap_err();
        assert!(
            error.contains("--inputs-from") && error.contains("url"),
            "{error}"
        );
    }
}
