//! Transport integrity for every upload: a pipeline policy that gives each request body
//! its `Content-MD5`, which Blob Storage checks on Put Blob, Put Block and Put Block List
//! and refuses (400 `Md5Mismatch`) when the bytes that arrived differ. The SDK's own
//! upload helpers never set it.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::request::{Body, Request};
use azure_core::http::{Context, Method};
use base64::Engine;
use md5::{Digest, Md5};

#[derive(Debug)]
pub struct ContentMd5Policy;

#[async_trait]
impl Policy for ContentMd5Policy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        if request.method() == Method::Put
            && let Body::Bytes(bytes) = request.body()
            && !bytes.is_empty()
        {
            let digest = content_md5(bytes);
            request.insert_header("content-md5", digest);
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The header's value: the base64 of the body's MD5.
pub fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_rfc_1864s() {
        // RFC 1864's form: base64 of the 16-byte digest; MD5("") is d41d8cd9….
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(content_md5(b"hello"), "XUFAKrxLKna5cZ2REBfFkg==");
    }
}
