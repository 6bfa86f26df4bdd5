//! Where a snapshot comes from: a blob URL (maybe with a SAS query), a `file://` URI or a
//! plain local path. Parsing is pure; the query (a SAS token) is kept apart so that nothing
//! that prints a source can print a credential.

use std::fmt;
use std::path::PathBuf;

use azure_core::http::Url;

#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    Blob(BlobLocation),
    Local(PathBuf),
}

/// A blob, split into what may be shown (`url` without query) and what may not (`sas`).
#[derive(Clone, PartialEq, Eq)]
pub struct BlobLocation {
    /// The blob's URL with no query and no fragment.
    pub url: Url,
    /// The SAS query string, if the URI carried one (`sv=…&sig=…`).
    pub sas: Option<String>,
    /// The storage account, as the URL names it (host label or Azurite's first path segment).
    pub account: String,
}

impl BlobLocation {
    /// The URL to send requests to: the shown URL plus the SAS, if any.
    pub fn request_url(&self) -> Url {
        let mut url = self.url.clone();
        url.set_query(self.sas.as_deref());
        url
    }

    /// Emulators name the account in the path, as the first segment.
    fn path_style(&self) -> bool {
        is_path_style(self.url.host_str().unwrap_or_default())
    }

    /// The path segments after the account (if the path names it): the container, then the
    /// blob name's segments.
    fn segments(&self) -> Vec<String> {
        let skip = usize::from(self.path_style());
        self.url
            .path_segments()
            .map(|s| s.skip(skip).map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The container's URL, without query.
    pub fn container_url(&self) -> Url {
        let mut url = self.url.clone();
        let container = self.segments().into_iter().next().unwrap_or_default();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear();
            if self.path_style() {
                path.push(&self.account);
            }
            path.push(&container);
        }
        url
    }

    /// The blob's name in its container (percent-decoded), or the folder's prefix.
    pub fn blob_name(&self) -> String {
        let segments = self.segments();
        let name = segments.get(1..).unwrap_or_default().join("/");
        percent_encoding::percent_decode_str(&name)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// The blob `relative` below this location taken as a folder (`a/b` under
    /// `…/c/dir/` or `…/c/dir` is `…/c/dir/a/b`), with the same SAS.
    pub fn child(&self, relative: &str) -> BlobLocation {
        let mut url = self.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(relative.split('/').filter(|s| !s.is_empty()));
        }
        BlobLocation {
            url,
            sas: self.sas.clone(),
            account: self.account.clone(),
        }
    }
}

fn is_path_style(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok()
        || host == "localhost"
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Blob(blob) => write!(f, "{}", blob.url),
            Source::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

// Debug must not leak the SAS either: errors and panics format with it.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({self})")
    }
}

impl fmt::Debug for BlobLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sas = if self.sas.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        write!(f, "BlobLocation({}, sas: {sas})", self.url)
    }
}

const FORMS: &str = "give https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH (optionally with a SAS query), \
                     file:///path/to/snapshot.tar.gz, or a local path";

/// Parses `--snapshot`. Errors never repeat the query of the input.
pub fn parse(text: &str) -> Result<Source, String> {
    let shown = without_query(text);
    if text.is_empty() {
        return Err(format!("the snapshot source is empty; {FORMS}"));
    }
    if let Some(rest) = text.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(format!(
                "`{shown}` is not an absolute file URI; use three slashes, as in file:///data/snapshot.tar.gz"
            ));
        }
        return Ok(Source::Local(PathBuf::from(percent_decode(rest)?)));
    }
    if !text.contains("://") {
        return Ok(Source::Local(PathBuf::from(text)));
    }
    let url =
        Url::parse(text).map_err(|e| format!("`{shown}` is not a valid URL ({e}); {FORMS}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!(
            "`{shown}` uses the scheme `{}`, which is not supported; {FORMS}",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{shown}` carries credentials in the URL; use a SAS query or the AZURE_STORAGE_* variables instead"
        ));
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|seg| !seg.is_empty()).collect())
        .unwrap_or_default();
    // Azurite and other emulators put the account in the path: http://127.0.0.1:10000/devstoreaccount1/container/blob.
    let path_style = is_path_style(&host);
    let (account, rest) = if path_style {
        match segments.split_first() {
            Some((account, rest)) => (account.to_string(), rest),
            None => (String::new(), &segments[..]),
        }
    } else {
        (
            host.split('.').next().unwrap_or_default().to_string(),
            &segments[..],
        )
    };
    if account.is_empty() || rest.len() < 2 {
        return Err(format!(
            "`{shown}` does not name a container and a blob; {FORMS}"
        ));
    }
    let sas = url.query().filter(|q| !q.is_empty()).map(str::to_string);
    let mut bare = url.clone();
    bare.set_query(None);
    bare.set_fragment(None);
    Ok(Source::Blob(BlobLocation {
        url: bare,
        sas,
        account,
    }))
}

/// The text before any `?`, for messages about input that did not parse.
pub fn without_query(text: &str) -> &str {
    text.split(['?', '#']).next().unwrap_or_default()
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{text}` has a malformed %-escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(text: &str) -> BlobLocation {
        match parse(text).unwrap() {
            Source::Blob(blob) => blob,
            other => panic!("not a blob: {other}"),
        }
    }

    #[test]
    fn azure_urls_keep_the_sas_apart_from_what_is_shown() {
        let b = blob("https://acct.blob.core.windows.net/code/v1/snap.tar.gz?sv=2024&sig=SECRET");
        assert_eq!(b.account, "acct");
        assert_eq!(
            b.url.as_str(),
            "https://acct.blob.core.windows.net/code/v1/snap.tar.gz"
        );
        assert_eq!(b.sas.as_deref(), Some("sv=2024&sig=SECRET"));
        assert!(b.request_url().as_str().ends_with("?sv=2024&sig=SECRET"));
        let shown = format!("{} {:?}", Source::Blob(b.clone()), b);
        assert!(!shown.contains("SECRET"), "{shown}");
    }

    #[test]
    fn containers_names_and_children_of_both_url_styles() {
        let b = blob("https://acct.blob.core.windows.net/runs/d/r/?sig=S");
        assert_eq!(
            b.container_url().as_str(),
            "https://acct.blob.core.windows.net/runs"
        );
        assert_eq!(b.blob_name(), "d/r/");
        let c = b.child("files/data/out csv");
        assert_eq!(
            c.url.as_str(),
            "https://acct.blob.core.windows.net/runs/d/r/files/data/out%20csv"
        );
        assert_eq!(c.sas.as_deref(), Some("sig=S"));
        assert_eq!(c.blob_name(), "d/r/files/data/out csv");
        let e = blob("http://127.0.0.1:10000/devstoreaccount1/runs/x/y.csv");
        assert_eq!(
            e.container_url().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/runs"
        );
        assert_eq!(e.blob_name(), "x/y.csv");
    }

    #[test]
    fn emulator_urls_name_the_account_in_the_path() {
        let b = blob("http://127.0.0.1:10000/devstoreaccount1/code/snap.tgz");
        assert_eq!(b.account, "devstoreaccount1");
        assert_eq!(b.sas, None);
    }

    #[test]
    fn local_paths_and_file_uris() {
        assert_eq!(
            parse("snap.tar.gz").unwrap(),
            Source::Local("snap.tar.gz".into())
        );
        assert_eq!(
            parse("file:///data/my%20snap.tar").unwrap(),
            Source::Local("/data/my snap.tar".into())
        );
        assert!(
            parse("file://relative/x")
                .unwrap_err()
                .contains("three slashes")
        );
    }

    #[test]
    fn bad_urls_are_explained_without_their_query() {
        let err = parse("ftp://host/c/b?sig=SECRET").unwrap_err();
        assert!(
            err.contains("`ftp://host/c/b`") && !err.contains("SECRET"),
            "{err}"
        );
        let err =
            parse("https://acct.blob.core.windows.net/only-container?sig=SECRET").unwrap_err();
        assert!(
            err.contains("container and a blob") && !err.contains("SECRET"),
            "{err}"
        );
        let err = parse("https://user:pw@acct.blob.core.windows.net/c/b").unwrap_err();
        assert!(err.contains("credentials"), "{err}");
        assert!(parse("").is_err());
    }
}
