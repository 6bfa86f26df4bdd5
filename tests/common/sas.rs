//! Shared access signatures signed with a storage account key, built from Azure's published
//! string-to-sign rules (service SAS and account SAS, signed version 2020-12-06 and later).
//! Azurite checks them exactly as Azure does, so a test can hand the agent a SAS URL that
//! is accepted, or one with a bad signature that is refused with 403.
//!
//! HMAC is written out here over `sha2` rather than taken from azure_core, which the agent
//! itself signs with: the tests' signer should not share the code it may be testing.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The signed version (`sv`) of the SASes made here. Any version from 2020-12-06 signs the
/// same fields; this one is long established, so every service and emulator release takes it.
pub const VERSION: &str = "2022-11-02";

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block_key.iter().map(|byte| byte ^ 0x36).collect();
    let outer_pad: Vec<u8> = block_key.iter().map(|byte| byte ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Signs `string_to_sign` with a base64 account key, giving the base64 `sig` value.
pub fn sign(account_key: &str, string_to_sign: &str) -> String {
    let key = STANDARD.decode(account_key).expect("account key is base64");
    STANDARD.encode(hmac_sha256(&key, string_to_sign.as_bytes()))
}

/// The query string (no leading `?`) of a service SAS for one blob (`sr=b`).
/// `blob` is the blob's name as stored, not URL-encoded.
pub fn blob_sas(
    account: &str,
    account_key: &str,
    container: &str,
    blob: &str,
    permissions: &str,
    expiry: SystemTime,
) -> String {
    let expiry = timestamp(expiry);
    let resource = format!("/blob/{account}/{container}/{blob}");
    // Field order per "Create a service SAS", version 2020-12-06 and later: permissions,
    // start, expiry, canonicalized resource, identifier, IP, protocol, version, resource,
    // snapshot time, encryption scope, then the five response-header overrides.
    let fields = [
        permissions,
        "",
        &expiry,
        &resource,
        "",
        "",
        "",
        VERSION,
        "b",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ];
    let signature = sign(account_key, &fields.join("\n"));
    format!(
        "sv={VERSION}&sr=b&sp={}&se={}&sig={}",
        encode(permissions),
        encode(&expiry),
        encode(&signature)
    )
}

/// The query string (no leading `?`) of an account SAS for the blob service over service,
/// container and object resources, as test set-up uses to create containers and blobs.
pub fn account_sas(
    account: &str,
    account_key: &str,
    permissions: &str,
    expiry: SystemTime,
) -> String {
    let expiry = timestamp(expiry);
    // Per "Create an account SAS", version 2020-12-06 and later: account, permissions,
    // services, resource types, start, expiry, IP, protocol, version, encryption scope, and
    // a final newline.
    let fields = [
        account,
        permissions,
        "b",
        "sco",
        "",
        &expiry,
        "",
        "",
        VERSION,
        "",
        "",
    ];
    let signature = sign(account_key, &fields.join("\n"));
    format!(
        "sv={VERSION}&ss=b&srt=sco&sp={}&se={}&sig={}",
        encode(permissions),
        encode(&expiry),
        encode(&signature)
    )
}

/// ISO 8601 UTC to the second, the form SAS times take.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    encode_keeping(text, "")
}

/// Percent-encodes a blob path for a URL, keeping its `/` separators.
pub fn encode_path(path: &str) -> String {
    encode_keeping(path, "/")
}

fn encode_keeping(text: &str, keep: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || b"-._~".contains(&byte)
            || keep.as_bytes().contains(&byte)
        {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
