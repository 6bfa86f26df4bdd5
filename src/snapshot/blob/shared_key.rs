//! Shared Key authorization for Blob Storage, which the 1.x SDK does not provide: a
//! pipeline policy that dates and signs each try of a request with the account key.
//! The string to sign is built by pure code, tested against the documented layout.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::Secret;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::request::{Body, Request};
use azure_core::http::{Context, Url};
use azure_core::time::{OffsetDateTime, to_rfc7231};

#[derive(Debug)]
pub struct SharedKeyPolicy {
    account: String,
    key: Secret,
}

impl SharedKeyPolicy {
    pub fn new(account: String, key: Secret) -> Arc<SharedKeyPolicy> {
        Arc::new(SharedKeyPolicy { account, key })
    }
}

#[async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        // Each try is dated afresh: the service refuses signatures older than 15 minutes.
        request.insert_header("x-ms-date", to_rfc7231(&OffsetDateTime::now_utc()));
        let content_length = match request.body() {
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::SeekableStream(stream) => stream.len().unwrap_or(0),
        };
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    value.as_str().to_string(),
                )
            })
            .collect();
        let to_sign = string_to_sign(
            request.method().as_ref(),
            &headers,
            content_length,
            &self.account,
            request.url(),
        );
        let signature = azure_core::hmac::hmac_sha256(&to_sign, &self.key)?;
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The Blob service's string to sign (version 2009-09-19 and later): the verb, eleven
/// standard headers, the canonicalized `x-ms-` headers and the canonicalized resource.
pub fn string_to_sign(
    verb: &str,
    headers: &[(String, String)],
    content_length: u64,
    account: &str,
    url: &Url,
) -> String {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let length = if content_length == 0 {
        String::new()
    } else {
        content_length.to_string()
    };
    let mut out = String::new();
    for part in [
        verb,
        header("content-encoding"),
        header("content-language"),
        &length,
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ] {
        out.push_str(part);
        out.push('\n');
    }
    let mut ms: Vec<(&str, String)> = headers
        .iter()
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .map(|(n, v)| {
            (
                n.as_str(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    ms.sort();
    for (name, value) in ms {
        out.push_str(name);
        out.push(':');
        out.push_str(&value);
        out.push('\n');
    }
    out.push('/');
    out.push_str(account);
    out.push_str(url.path());
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in url.query_pairs() {
        let name = name.to_ascii_lowercase();
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.into_owned()),
            None => params.push((name, vec![value.into_owned()])),
        }
    }
    params.sort();
    for (name, mut values) in params {
        values.sort();
        out.push('\n');
        out.push_str(&name);
        out.push(':');
        out.push_str(&values.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_ranged_conditional_get_is_laid_out_as_documented() {
        let url = Url::parse("https://acct.blob.core.windows.net/code/v1/snap.tar.gz?timeout=30")
            .unwrap();
        let headers = h(&[
            ("x-ms-version", "2025-11-05"),
            ("x-ms-date", "Thu, 26 Nov 2026 12:00:00 GMT"),
            ("if-match", "\"0x8DC\""),
            ("x-ms-range", "bytes=0-1023"),
            ("user-agent", "ignored"),
        ]);
        let expected = "GET\n\n\n\n\n\n\n\n\"0x8DC\"\n\n\n\n\
                        x-ms-date:Thu, 26 Nov 2026 12:00:00 GMT\n\
                        x-ms-range:bytes=0-1023\n\
                        x-ms-version:2025-11-05\n\
                        /acct/code/v1/snap.tar.gz\ntimeout:30";
        assert_eq!(string_to_sign("GET", &headers, 0, "acct", &url), expected);
    }

    #[test]
    fn emulator_paths_repeat_the_account_and_uploads_sign_their_length() {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/code/snap.tar.gz?comp=block&blockid=QQ%3D%3D",
        )
        .unwrap();
        let headers = h(&[
            ("content-type", "application/octet-stream"),
            ("x-ms-blob-type", "BlockBlob"),
        ]);
        let signed = string_to_sign("PUT", &headers, 512, "devstoreaccount1", &url);
        assert!(
            signed.starts_with("PUT\n\n\n512\n\napplication/octet-stream\n"),
            "{signed}"
        );
        assert!(
            signed.ends_with(
                "/devstoreaccount1/devstoreaccount1/code/snap.tar.gz\nblockid:QQ==\ncomp:block"
            ),
            "{signed}"
        );
    }
}
