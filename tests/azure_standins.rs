//! The Azure stand-ins the snapshot tests stand on, checked against Microsoft's own clients
//! and Azurite: the Entra ID token endpoint serves azure-identity's WorkloadIdentityCredential,
//! Azurite (https, `--oauth basic`) accepts its tokens from azure-storage-blob, the SAS signer
//! makes signatures Azurite accepts and refuses when altered, and the fault proxy delivers
//! exactly the faults it is asked for. The Python clients run from tests/.venv (see
//! `common::python`). The Key Vault stand-in has its own file, tests/keyvault_standin.rs.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, SystemTime};

use common::azurite::{ACCOUNT, Azurite};
use common::entra::{
    self, CLIENT_ID, Entra, FEDERATED_TOKEN, JWT_BEARER, STORAGE_SCOPE, TENANT_ID,
};
use common::http::{self, Response};
use common::proxy::{Fault, Plan, Proxy};
use common::python;
use common::sas;
use common::tls::Tls;
use serde_json::Value;

const BLOB: &[u8] = b"snapshot bytes \x00\x01\x02 from Azurite\n";

const GET_TOKEN: &str = r#"
import os
from azure.identity import WorkloadIdentityCredential
credential = WorkloadIdentityCredential(
    tenant_id=os.environ["T_TENANT"],
    client_id=os.environ["T_CLIENT"],
    token_file_path=os.environ["T_TOKEN_FILE"],
    authority=os.environ["T_AUTHORITY"],
)
print(credential.get_token("https://storage.azure.com/.default").token)
"#;

#[test]
fn workload_identity_credential_gets_a_token_from_the_entra_stand_in() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let file = python::token_file(dir.path(), FEDERATED_TOKEN);
    let authority = entra.authority();
    let vars = [
        ("T_TENANT", TENANT_ID),
        ("T_CLIENT", CLIENT_ID),
        ("T_TOKEN_FILE", file.to_str().unwrap()),
        ("T_AUTHORITY", authority.as_str()),
    ];

    let output = python::run(&tls, GET_TOKEN, &vars);
    assert!(
        output.status.success(),
        "python failed: {}",
        common::stderr(&output)
    );
    let issued = entra.issued();
    assert_eq!(issued.len(), 1, "one token issued");
    assert_eq!(common::stdout(&output).trim(), issued[0]);

    let requests = entra.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/{TENANT_ID}/oauth2/v2.0/token"));
    assert_eq!(request.field("client_assertion"), Some(FEDERATED_TOKEN));
    assert_eq!(request.field("client_assertion_type"), Some(JWT_BEARER));
    assert_eq!(request.field("client_id"), Some(CLIENT_ID));
    assert_eq!(request.field("grant_type"), Some("client_credentials"));
    assert_eq!(request.field("scope"), Some(STORAGE_SCOPE));

    let claims = jwt_claims(&issued[0]);
    assert_eq!(claims["aud"], "https://storage.azure.com");
    assert_eq!(claims["appid"], CLIENT_ID);

    // A token file the federated credential does not match is refused, and the client
    // reports Entra's own error code.
    let stale = python::token_file(dir.path(), "not-the-projected-token");
    let vars = [
        ("T_TENANT", TENANT_ID),
        ("T_CLIENT", CLIENT_ID),
        ("T_TOKEN_FILE", stale.to_str().unwrap()),
        ("T_AUTHORITY", authority.as_str()),
    ];
    let output = python::run(&tls, GET_TOKEN, &vars);
    assert!(!output.status.success(), "a wrong assertion got a token");
    assert!(
        common::stderr(&output).contains("AADSTS700213"),
        "stderr: {}",
        common::stderr(&output)
    );
    assert_eq!(entra.requests().last().unwrap().status, 401);
    assert_eq!(entra.issued().len(), 1, "no token for a wrong assertion");
}

#[test]
fn blob_client_with_workload_identity_downloads_from_https_azurite() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let azurite = Azurite::start_https_oauth(&tls);
    azurite.create_container("snapshots");
    azurite.upload("snapshots", "dags/etl.tar.gz", BLOB);
    let dir = tempfile::tempdir().unwrap();
    let file = python::token_file(dir.path(), FEDERATED_TOKEN);
    let authority = entra.authority();
    let account_url = azurite.account_url();
    let script = r#"
import os, sys
from azure.identity import WorkloadIdentityCredential
from azure.storage.blob import BlobClient
credential = WorkloadIdentityCredential(
    tenant_id=os.environ["T_TENANT"],
    client_id=os.environ["T_CLIENT"],
    token_file_path=os.environ["T_TOKEN_FILE"],
    authority=os.environ["T_AUTHORITY"],
)
blob = BlobClient(
    account_url=os.environ["T_ACCOUNT_URL"],
    container_name="snapshots",
    blob_name="dags/etl.tar.gz",
    credential=credential,
)
sys.stdout.buffer.write(blob.download_blob().readall())
"#;
    let output = python::run(
        &tls,
        script,
        &[
            ("T_TENANT", TENANT_ID),
            ("T_CLIENT", CLIENT_ID),
            ("T_TOKEN_FILE", file.to_str().unwrap()),
            ("T_AUTHORITY", authority.as_str()),
            ("T_ACCOUNT_URL", account_url.as_str()),
        ],
    );
    assert!(
        output.status.success(),
        "python failed: {}\nAzurite:\n{}",
        common::stderr(&output),
        azurite.log()
    );
    assert_eq!(output.stdout, BLOB);
    assert_eq!(
        entra.issued().len(),
        1,
        "the download used the stand-in's token"
    );
}

#[test]
fn azurite_accepts_the_stand_ins_storage_token_and_nothing_else() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let azurite = Azurite::start_https_oauth(&tls);
    azurite.create_container("snapshots");
    let url = azurite.upload("snapshots", "a.tar", BLOB);
    let client = tls.client_config();

    let storage = token_response(&entra, &client, &token_form(FEDERATED_TOKEN, STORAGE_SCOPE));
    assert_eq!(storage.status, 200, "{}", storage.text());
    let body: Value = serde_json::from_slice(&storage.body).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], entra::EXPIRES_IN);
    assert_eq!(body["ext_expires_in"], entra::EXPIRES_IN);
    let storage_token = body["access_token"].as_str().unwrap().to_string();

    let vault = token_response(
        &entra,
        &client,
        &token_form(FEDERATED_TOKEN, "https://vault.azure.net/.default"),
    );
    assert_eq!(vault.status, 200, "{}", vault.text());
    let vault_body: Value = serde_json::from_slice(&vault.body).unwrap();
    let vault_token = vault_body["access_token"].as_str().unwrap();
    assert_eq!(jwt_claims(vault_token)["aud"], "https://vault.azure.net");

    let read = |token: &str| {
        azurite.request(
            "GET",
            &url,
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("x-ms-version", sas::VERSION),
            ],
            &[],
        )
    };
    let accepted = read(&storage_token);
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(accepted.body, BLOB);

    // Azurite refuses a bad token with 403 AuthenticationFailed, where Azure says 401
    // InvalidAuthenticationInfo: the agent must take both as "denied".
    let wrong_audience = read(vault_token);
    assert_refused(&wrong_audience, 403, "AuthenticationFailed");
    assert!(wrong_audience.text().contains("Invalid token audience"));

    let not_a_jwt = read("opaque-token");
    assert_refused(&not_a_jwt, 403, "AuthenticationFailed");

    // The plain-HTTP Azurite takes no bearer tokens at all (Azure takes them only over
    // https), so a token-authenticated fetch test needs `start_https_oauth`.
    let plain = Azurite::start();
    plain.create_container("snapshots");
    let plain_url = plain.upload("snapshots", "a.tar", BLOB);
    let over_http = plain.request(
        "GET",
        &plain_url,
        &[
            ("Authorization", &format!("Bearer {storage_token}")),
            ("x-ms-version", sas::VERSION),
        ],
        &[],
    );
    assert_refused(&over_http, 403, "AuthorizationFailure");
}

#[test]
fn entra_stand_in_refuses_bad_requests_in_entra_shape() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let client = tls.client_config();
    let good = || token_form(FEDERATED_TOKEN, STORAGE_SCOPE);
    let refused = |what: &str, form: Vec<(&str, &str)>, status: u16, error: &str, code: u64| {
        let response = token_response(&entra, &client, &form);
        assert_eq!(response.status, status, "{what}: {}", response.text());
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["error"], error, "{what}");
        assert_eq!(body["error_codes"], serde_json::json!([code]), "{what}");
        let description = body["error_description"].as_str().unwrap();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{what}: {body}"
        );
    };
    refused(
        "wrong assertion",
        token_form("forged", STORAGE_SCOPE),
        401,
        "invalid_client",
        700213,
    );
    refused(
        "no assertion",
        without(good(), "client_assertion"),
        400,
        "invalid_request",
        900144,
    );
    refused(
        "unknown app",
        replaced(good(), "client_id", "00000000-0000-0000-0000-000000000001"),
        400,
        "unauthorized_client",
        700016,
    );
    refused(
        "scope without /.default",
        replaced(
            good(),
            "scope",
            "https://storage.azure.com/user_impersonation",
        ),
        400,
        "invalid_scope",
        1002012,
    );
    refused(
        "password grant",
        replaced(good(), "grant_type", "password"),
        400,
        "unsupported_grant_type",
        70003,
    );

    let other_tenant = http::request(
        "POST",
        &format!("{}/common/oauth2/v2.0/token", entra.authority()),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form_body(&token_form(FEDERATED_TOKEN, STORAGE_SCOPE)).as_bytes(),
        Some(&client),
    )
    .unwrap();
    assert_eq!(other_tenant.status, 400, "{}", other_tenant.text());

    entra.fail_next(&[503]);
    let unavailable = token_response(&entra, &client, &token_form(FEDERATED_TOKEN, STORAGE_SCOPE));
    assert_eq!(unavailable.status, 503);
    let recovered = token_response(&entra, &client, &token_form(FEDERATED_TOKEN, STORAGE_SCOPE));
    assert_eq!(recovered.status, 200, "{}", recovered.text());
    assert_eq!(entra.issued().len(), 1, "only the last request got a token");
    assert_eq!(entra.requests().len(), 8);
}

#[test]
fn sas_urls_are_accepted_and_tampering_is_refused() {
    let azurite = Azurite::start();
    azurite.create_container("snapshots");
    azurite.upload("snapshots", "dir/with space+plus.tar.gz", BLOB);
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);

    let url = azurite.sas_url("snapshots", "dir/with space+plus.tar.gz", "r", in_an_hour);
    assert!(url.starts_with(&format!(
        "http://{}/{ACCOUNT}/snapshots/dir/with%20space%2Bplus.tar.gz?",
        azurite.addr()
    )));
    let read = http::get(&url, None);
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.body, BLOB);

    // Azurite refuses a bad SAS with 403 AuthorizationFailure; Azure says 403
    // AuthenticationFailed. The status is what the agent can rely on.
    let (base, signature) = url.split_once("&sig=").unwrap();
    let tampered = format!("{base}&sig={}", flip_first_char(signature));
    assert_refused(&http::get(&tampered, None), 403, "AuthorizationFailure");

    // A signature is bound to its blob: the same query on another path is refused.
    azurite.upload("snapshots", "other.tar.gz", BLOB);
    let query = url.split_once('?').unwrap().1;
    let moved = format!("{}?{query}", azurite.blob_url("snapshots", "other.tar.gz"));
    assert_refused(&http::get(&moved, None), 403, "AuthorizationFailure");

    let expired = azurite.sas_url(
        "snapshots",
        "dir/with space+plus.tar.gz",
        "r",
        SystemTime::now() - Duration::from_secs(60),
    );
    assert_refused(&http::get(&expired, None), 403, "AuthorizationFailure");

    // Read permission does not let the holder write.
    let write = http::request(
        "PUT",
        &url,
        &[("x-ms-blob-type", "BlockBlob")],
        b"overwritten",
        None,
    )
    .unwrap();
    assert_refused(&write, 403, "AuthorizationPermissionMismatch");
    assert_eq!(
        azurite.download("snapshots", "dir/with space+plus.tar.gz"),
        Some(BLOB.to_vec())
    );

    // Create+write permission does, as `publish` needs.
    let upload_url = azurite.sas_url("snapshots", "published.tar.gz", "cw", in_an_hour);
    let put = http::request(
        "PUT",
        &upload_url,
        &[("x-ms-blob-type", "BlockBlob")],
        b"published",
        None,
    )
    .unwrap();
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(
        azurite.download("snapshots", "published.tar.gz"),
        Some(b"published".to_vec())
    );
    assert_eq!(azurite.download("snapshots", "missing.tar.gz"), None);
}

#[test]
fn hmac_matches_rfc_4231() {
    let hex = |bytes: [u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(sas::hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // A key longer than SHA-256's block is hashed first.
    assert_eq!(
        hex(sas::hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

#[test]
fn proxy_cuts_a_response_after_exactly_n_bytes() {
    let azurite = Azurite::start();
    azurite.create_container("snapshots");
    let blob = vec![b'x'; 100_000];
    azurite.upload("snapshots", "big.tar", &blob);
    let url = azurite.read_url("snapshots", "big.tar");
    let path = &url[url.find(&format!("/{ACCOUNT}/")).unwrap()..];
    let proxy = Proxy::start(azurite.addr(), Plan::first(1, Fault::Cut { after: 1000 }));

    let (received, end) = raw_get(&proxy, path, None);
    assert_eq!(received.len(), 1000);
    assert!(end.is_ok(), "a cut ends in a clean EOF, got {end:?}");
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert_eq!(proxy.bytes_to_client(), 1000);

    // The next connection passes through whole.
    let (received, end) = raw_get(&proxy, path, None);
    assert!(end.is_ok(), "{end:?}");
    assert!(received.len() > blob.len(), "{} bytes", received.len());
    assert!(received.ends_with(&blob));
    assert_eq!(proxy.connections(), 2);
    assert_eq!(proxy.upstream_connections(), 2);
    assert_eq!(proxy.bytes_to_client(), 1000 + received.len() as u64);
}

#[test]
fn proxy_resets_and_stalls() {
    let azurite = Azurite::start();
    azurite.create_container("snapshots");
    let blob = vec![b'y'; 100_000];
    azurite.upload("snapshots", "big.tar", &blob);
    let url = azurite.read_url("snapshots", "big.tar");
    let path = &url[url.find(&format!("/{ACCOUNT}/")).unwrap()..];
    let proxy = Proxy::start(
        azurite.addr(),
        Plan::sequence(vec![
            Fault::Reset { after: 500 },
            Fault::Stall { after: 700 },
        ]),
    );

    let (received, end) = raw_get(&proxy, path, None);
    assert!(received.len() <= 500, "{} bytes", received.len());
    assert_eq!(
        end.expect_err("a reset is an error, not EOF"),
        ErrorKind::ConnectionReset
    );

    let (received, end) = raw_get(&proxy, path, Some(Duration::from_millis(1500)));
    assert_eq!(received.len(), 700);
    assert!(
        matches!(end, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a stall keeps the connection open, got {end:?}"
    );
    assert_eq!(proxy.bytes_to_client(), 1200);
}

#[test]
fn proxy_answers_503_with_retry_after_without_contacting_upstream() {
    let azurite = Azurite::start();
    azurite.create_container("snapshots");
    azurite.upload("snapshots", "a.tar", BLOB);
    let url = azurite.read_url("snapshots", "a.tar");
    let proxy = Proxy::start(
        azurite.addr(),
        Plan::sequence(vec![Fault::busy(), Fault::internal_error()]),
    );
    let through = proxy.url(&url);
    assert!(through.starts_with(&format!("http://{}/{ACCOUNT}/", proxy.addr())));

    let busy = http::get(&through, None);
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("Retry-After"), Some("1"));
    assert_eq!(busy.header("x-ms-error-code"), Some("ServerBusy"));

    let failed = http::get(&through, None);
    assert_eq!(failed.status, 500);
    assert_eq!(failed.header("Retry-After"), None);
    assert_eq!(proxy.upstream_connections(), 0);
    assert_eq!(proxy.answered(), 2);

    let ok = http::get(&through, None);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.body, BLOB);
    assert_eq!(proxy.upstream_connections(), 1);
    assert_eq!(proxy.connections(), 3);

    proxy.set_plan(Plan::always(Fault::too_many()));
    for _ in 0..2 {
        let throttled = http::get(&through, None);
        assert_eq!(throttled.status, 429);
        assert_eq!(throttled.header("Retry-After"), Some("1"));
    }
    assert_eq!(proxy.upstream_connections(), 1);
}

/// GET `path` through the proxy on a plain socket and read until the connection ends; gives
/// every byte received and how the reading ended (EOF, or the error's kind).
fn raw_get(
    proxy: &Proxy,
    path: &str,
    read_timeout: Option<Duration>,
) -> (Vec<u8>, Result<(), ErrorKind>) {
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(read_timeout.unwrap_or(Duration::from_secs(30))))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nx-ms-version: {}\r\nConnection: close\r\n\r\n",
        proxy.upstream(),
        sas::VERSION
    )
    .unwrap();
    stream.flush().unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => break Err(e.kind()),
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    (received, end)
}

fn token_form(assertion: &'static str, scope: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("client_assertion", assertion),
        ("client_assertion_type", JWT_BEARER),
        ("client_id", CLIENT_ID),
        ("grant_type", "client_credentials"),
        ("scope", scope),
    ]
}

fn without<'a>(form: Vec<(&'a str, &'a str)>, name: &str) -> Vec<(&'a str, &'a str)> {
    form.into_iter().filter(|(key, _)| *key != name).collect()
}

fn replaced<'a>(
    form: Vec<(&'a str, &'a str)>,
    name: &str,
    value: &'a str,
) -> Vec<(&'a str, &'a str)> {
    form.into_iter()
        .map(|(key, old)| (key, if key == name { value } else { old }))
        .collect()
}

fn form_body(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(key, value)| format!("{}={}", sas::encode(key), sas::encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn token_response(
    entra: &Entra,
    client: &std::sync::Arc<rustls::ClientConfig>,
    form: &[(&str, &str)],
) -> Response {
    http::request(
        "POST",
        &entra.token_url(),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form_body(form).as_bytes(),
        Some(client),
    )
    .expect("token request")
}

fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("payload is base64url");
    serde_json::from_slice(&json).expect("payload is JSON")
}

fn flip_first_char(text: &str) -> String {
    let first = if text.starts_with('A') { "B" } else { "A" };
    format!("{first}{}", &text[1..])
}

#[track_caller]
fn assert_refused(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.header("x-ms-error-code"),
        Some(code),
        "{}",
        response.text()
    );
}
