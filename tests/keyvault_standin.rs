//! The Key Vault stand-in the secrets tests stand on, checked against Microsoft's own client:
//! azure-keyvault-secrets' SecretClient with azure-identity's WorkloadIdentityCredential
//! (through the Entra ID stand-in) finds the challenge, gets a vault token, reads latest and
//! older versions, sees 404 and 403 as the service's errors, and rides out a 429. Then the
//! stand-in's answers are pinned down over plain https, and its in-flight counter is shown to
//! tell concurrent fetches from sequential ones.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::entra::{
    CLIENT_ID, Entra, FEDERATED_TOKEN, STORAGE_SCOPE, TENANT_ID, VAULT_RESOURCE, VAULT_SCOPE,
};
use common::http::{self, Response};
use common::keyvault::KeyVault;
use common::python;
use common::tls::Tls;
use serde_json::{Value, json};

/// The api-version the pinned Python SDK sends.
const PYTHON_API_VERSION: &str = "2026-04-01";

/// What the Rust SDK sends.
const API_VERSION: &str = "2025-07-01";

const GET_SECRETS: &str = r#"
import json, os, time
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import WorkloadIdentityCredential
from azure.keyvault.secrets import SecretClient

credential = WorkloadIdentityCredential(
    tenant_id=os.environ["T_TENANT"],
    client_id=os.environ["T_CLIENT"],
    token_file_path=os.environ["T_TOKEN_FILE"],
    authority=os.environ["T_AUTHORITY"],
)
# The vault is on 127.0.0.1, which is not under the challenge's resource vault.azure.net.
client = SecretClient(
    vault_url=os.environ["T_VAULT_URL"],
    credential=credential,
    verify_challenge_resource=False,
)

def bundle(secret):
    return {
        "value": secret.value,
        "id": secret.id,
        "name": secret.name,
        "version": secret.properties.version,
        "enabled": secret.properties.enabled,
        "recovery_level": secret.properties.recovery_level,
        "created": secret.properties.created_on.timestamp(),
    }

def failure(call):
    try:
        call()
    except ResourceNotFoundError as e:
        return {"type": "ResourceNotFoundError", "status": e.status_code, "code": e.error.code, "message": e.error.message}
    except HttpResponseError as e:
        return {"type": "HttpResponseError", "status": e.status_code, "code": e.error.code, "message": e.error.message}
    return None

result = {}
result["latest"] = bundle(client.get_secret("db-password"))
result["older"] = bundle(client.get_secret("db-password", os.environ["T_OLDER"]))
result["missing"] = failure(lambda: client.get_secret("no-such-secret"))
result["missing_version"] = failure(lambda: client.get_secret("db-password", "0" * 32))
result["forbidden"] = failure(lambda: client.get_secret("forbidden-secret"))
started = time.monotonic()
result["throttled"] = bundle(client.get_secret("busy-secret"))
result["throttled_seconds"] = time.monotonic() - started
print(json.dumps(result))
"#;

#[test]
fn secret_client_with_workload_identity_reads_secrets_from_the_stand_in() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let vault = KeyVault::start(&tls, &entra);
    let older = vault.set_secret("db-password", "older value");
    let latest = vault.add_version("db-password", "latest value \u{e9}\n2nd line");
    vault.set_secret("forbidden-secret", "never seen");
    vault.forbid("forbidden-secret");
    vault.set_secret("busy-secret", "after the throttle");
    vault.throttle_next_for("busy-secret", 1);

    let dir = tempfile::tempdir().unwrap();
    let token_file = python::token_file(dir.path(), FEDERATED_TOKEN);
    let authority = entra.authority();
    let vault_url = vault.url();
    let output = python::run(
        &tls,
        GET_SECRETS,
        &[
            ("T_TENANT", TENANT_ID),
            ("T_CLIENT", CLIENT_ID),
            ("T_TOKEN_FILE", token_file.to_str().unwrap()),
            ("T_AUTHORITY", authority.as_str()),
            ("T_VAULT_URL", vault_url.as_str()),
            ("T_OLDER", older.as_str()),
        ],
    );
    assert!(
        output.status.success(),
        "python failed: {}\nvault requests: {:#?}",
        common::stderr(&output),
        vault.requests()
    );
    let result: Value = serde_json::from_str(&common::stdout(&output)).expect("script's JSON");

    let got = &result["latest"];
    assert_eq!(got["value"], "latest value \u{e9}\n2nd line");
    assert_eq!(got["name"], "db-password");
    assert_eq!(got["version"], latest.as_str());
    assert_eq!(
        got["id"],
        vault.secret_url("db-password", Some(&latest)).as_str()
    );
    assert_eq!(got["enabled"], true);
    assert_eq!(got["recovery_level"], "Recoverable+Purgeable");
    assert!(got["created"].as_f64().unwrap() > 1.7e9, "{got}");
    assert_eq!(result["older"]["value"], "older value");
    assert_eq!(result["older"]["version"], older.as_str());

    let missing = &result["missing"];
    assert_eq!(missing["type"], "ResourceNotFoundError", "{missing}");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["code"], "SecretNotFound");
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .starts_with("A secret with (name/id) no-such-secret was not found in this key vault."),
        "{missing}"
    );
    assert_eq!(result["missing_version"]["type"], "ResourceNotFoundError");
    assert_eq!(result["missing_version"]["code"], "SecretNotFound");

    let forbidden = &result["forbidden"];
    assert_eq!(forbidden["type"], "HttpResponseError", "{forbidden}");
    assert_eq!(forbidden["status"], 403);
    assert_eq!(forbidden["code"], "Forbidden");
    assert!(
        forbidden["message"]
            .as_str()
            .unwrap()
            .contains("does not have secrets get permission on key vault"),
        "{forbidden}"
    );

    assert_eq!(result["throttled"]["value"], "after the throttle");
    let throttled_seconds = result["throttled_seconds"].as_f64().unwrap();
    assert!(
        throttled_seconds >= 0.9,
        "the client waited {throttled_seconds}s, not Retry-After's 1s"
    );

    // The protocol as the service sees it: the first request goes out bare to learn the
    // challenge, gets 401, and is repeated with a token; everything after carries it.
    let requests = vault.requests();
    let summary: Vec<(String, bool, u16)> = requests
        .iter()
        .map(|r| (r.path.clone(), r.authorized, r.status))
        .collect();
    let db_password = "/secrets/db-password/".to_string();
    let older_path = format!("/secrets/db-password/{older}");
    let busy = "/secrets/busy-secret/".to_string();
    assert_eq!(
        summary,
        vec![
            (db_password.clone(), false, 401),
            (db_password, true, 200),
            (older_path, true, 200),
            ("/secrets/no-such-secret/".to_string(), true, 404),
            (
                format!("/secrets/db-password/{}", "0".repeat(32)),
                true,
                404
            ),
            ("/secrets/forbidden-secret/".to_string(), true, 403),
            (busy.clone(), true, 429),
            (busy, true, 200),
        ],
        "{requests:#?}"
    );
    assert_eq!(requests[0].authorization, None);
    for request in &requests {
        assert_eq!(request.method, "GET");
        assert_eq!(request.query_value("api-version"), Some(PYTHON_API_VERSION));
    }
    let retry_gap = requests[7].started - requests[6].ended;
    assert!(
        retry_gap >= Duration::from_millis(900),
        "retried after {retry_gap:?}"
    );

    // One token, for the vault scope, got once and reused for every authorized request.
    let token_requests = entra.requests();
    assert_eq!(token_requests.len(), 1, "{token_requests:?}");
    assert_eq!(token_requests[0].field("scope"), Some(VAULT_SCOPE));
    assert_eq!(token_requests[0].status, 200);
    let issued = entra.issued();
    assert_eq!(jwt_claims(&issued[0])["aud"], VAULT_RESOURCE);
    for request in &requests[1..] {
        assert_eq!(request.bearer(), Some(issued[0].as_str()));
    }
    // requests' connection pool kept the connection alive across all of them.
    assert_eq!(vault.connections(), 1, "{requests:#?}");
}

#[test]
fn unauthenticated_and_bad_tokens_get_the_challenge() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let vault = KeyVault::start(&tls, &entra);
    vault.set_secret("db-password", "value");
    let url = format!(
        "{}?api-version={API_VERSION}",
        vault.secret_url("db-password", None)
    );
    let client = tls.client_config();

    let bare = http::get(&url, Some(&client));
    assert_unauthorized(
        &bare,
        &vault,
        "AKV10000: Request is missing a Bearer or PoP token.",
    );
    assert_eq!(
        bare.header("WWW-Authenticate").unwrap(),
        format!(
            "Bearer authorization=\"{}/{TENANT_ID}\", resource=\"https://vault.azure.net\"",
            entra.authority()
        )
    );
    assert_unauthorized(
        &get(&url, "Basic dXNlcjpwYXNz", &client),
        &vault,
        "AKV10000: ",
    );

    let storage_token = entra.token_for(&tls, STORAGE_SCOPE);
    assert_unauthorized(
        &get_with(&url, &storage_token, &client),
        &vault,
        "AKV10022: Invalid audience. Expected https://vault.azure.net, found: https://storage.azure.com.",
    );

    let vault_token = entra.token_for(&tls, VAULT_SCOPE);
    let forged = forge(&vault_token);
    assert_unauthorized(&get_with(&url, &forged, &client), &vault, "AKV10021: ");
    assert_unauthorized(&get_with(&url, "opaque", &client), &vault, "AKV10021: ");

    entra.set_expires_in(0);
    let expired = entra.token_for(&tls, VAULT_SCOPE);
    assert_unauthorized(&get_with(&url, &expired, &client), &vault, "[TokenExpired]");

    let accepted = get_with(&url, &vault_token, &client);
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    // The scheme is case-insensitive, as HTTP authentication schemes are.
    let lower = get(&url, &format!("bearer {vault_token}"), &client);
    assert_eq!(lower.status, 200, "{}", lower.text());

    let authorized: Vec<bool> = vault.requests().iter().map(|r| r.authorized).collect();
    assert_eq!(
        authorized,
        [false, false, false, false, false, false, true, true]
    );
}

#[test]
fn secrets_versions_and_errors_have_key_vaults_shape() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let vault = KeyVault::start(&tls, &entra);
    let client = tls.client_config();
    let token = entra.token_for(&tls, VAULT_SCOPE);
    let fetch = |path: &str| get_with(&format!("{}{path}", vault.url()), &token, &client);

    let first = vault.set_secret("Db-Password", "one");
    let second = vault.add_version("db-password", "two");
    assert_eq!(
        vault.versions("DB-PASSWORD"),
        [first.clone(), second.clone()]
    );
    assert_eq!(first.len(), 32);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    assert_ne!(first, second);

    let latest = fetch(&format!("/secrets/db-password?api-version={API_VERSION}"));
    assert_eq!(latest.status, 200, "{}", latest.text());
    assert_eq!(
        latest.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let body: Value = serde_json::from_slice(&latest.body).unwrap();
    let created = body["attributes"]["created"].as_u64().unwrap();
    assert_eq!(
        body,
        json!({
            "value": "two",
            "id": format!("{}/secrets/Db-Password/{second}", vault.url()),
            "attributes": {
                "enabled": true,
                "created": created,
                "updated": created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": {},
        })
    );
    // The Rust SDK asks for the latest version with a trailing slash; names and versions
    // are case-insensitive.
    for path in [
        format!("/secrets/db-password/?api-version={API_VERSION}"),
        format!("/secrets/DB-PASSWORD/{second}?api-version={API_VERSION}"),
        format!(
            "/secrets/db-password/{}?api-version={API_VERSION}",
            second.to_uppercase()
        ),
    ] {
        let response = fetch(&path);
        assert_eq!(response.status, 200, "{path}: {}", response.text());
        assert_eq!(json_of(&response)["value"], "two", "{path}");
    }
    let older = fetch(&format!("/secrets/db-password/{first}?api-version=7.4"));
    assert_eq!(json_of(&older)["value"], "one");

    // set_secret starts the history over.
    let only = vault.set_secret("db-password", "three");
    assert_eq!(vault.versions("db-password"), [only]);
    let gone = fetch(&format!(
        "/secrets/db-password/{first}?api-version={API_VERSION}"
    ));
    assert_error(&gone, 404, "SecretNotFound");
    assert!(
        json_of(&gone)["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "A secret with (name/id) db-password/{first} was not found in this key vault."
            )),
        "{}",
        gone.text()
    );
    assert_error(
        &fetch(&format!("/secrets/nothing?api-version={API_VERSION}")),
        404,
        "SecretNotFound",
    );

    assert_error(&fetch("/secrets/db-password"), 400, "BadParameter");
    assert_error(
        &fetch("/secrets/db-password?api-version=1999-01-01"),
        400,
        "BadParameter",
    );
    assert_error(
        &fetch(&format!("/secrets/bad_name?api-version={API_VERSION}")),
        400,
        "BadParameter",
    );

    vault.set_secret("locked", "secret");
    vault.forbid("Locked");
    let forbidden = fetch(&format!("/secrets/locked?api-version={API_VERSION}"));
    assert_error(&forbidden, 403, "Forbidden");
    let error = &json_of(&forbidden)["error"];
    assert_eq!(error["innererror"]["code"], "AccessDenied");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("appid={CLIENT_ID};")),
        "{error}"
    );
    assert!(!forbidden.text().contains("secret\""), "no value in a 403");
}

#[test]
fn injected_faults_come_in_order_then_clear() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let vault = KeyVault::start(&tls, &entra);
    let client = tls.client_config();
    let token = entra.token_for(&tls, VAULT_SCOPE);
    vault.set_secret("a", "1");
    vault.set_secret("b", "2");
    let fetch = |name: &str| {
        get_with(
            &format!("{}?api-version={API_VERSION}", vault.secret_url(name, None)),
            &token,
            &client,
        )
    };

    vault.throttle_next(2);
    for _ in 0..2 {
        let throttled = fetch("a");
        assert_error(&throttled, 429, "Throttled");
        assert_eq!(throttled.header("Retry-After"), Some("1"));
    }
    assert_eq!(fetch("a").status, 200);

    vault.fail_next(503, 1);
    vault.fail_next(500, 1);
    let unavailable = fetch("a");
    assert_error(&unavailable, 503, "ServiceUnavailable");
    assert_eq!(unavailable.header("Retry-After"), None);
    assert_error(&fetch("b"), 500, "InternalServerError");
    assert_eq!(fetch("a").status, 200);

    // Per-name faults leave other names alone, and go before 403 and 404.
    vault.throttle_next_for("B", 1);
    vault.fail_next_for("missing", 503, 1);
    assert_eq!(fetch("a").status, 200);
    assert_error(&fetch("missing"), 503, "ServiceUnavailable");
    assert_error(&fetch("missing"), 404, "SecretNotFound");
    assert_error(&fetch("b"), 429, "Throttled");
    assert_eq!(fetch("b").status, 200);

    // A request without a token is refused before any fault is spent.
    vault.throttle_next(1);
    let bare = http::get(
        &format!("{}?api-version={API_VERSION}", vault.secret_url("a", None)),
        Some(&client),
    );
    assert_eq!(bare.status, 401);
    assert_error(&fetch("a"), 429, "Throttled");
}

#[test]
fn connections_are_kept_alive() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let vault = KeyVault::start(&tls, &entra);
    vault.set_secret("a", "1");
    let token = entra.token_for(&tls, VAULT_SCOPE);
    let head = format!(
        "GET /secrets/a/?api-version={API_VERSION} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        vault.addr()
    );

    let tcp = TcpStream::connect(vault.addr()).unwrap();
    tcp.set_read_timeout(Some(http::TIMEOUT)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(tls.client_config(), name).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    // Two requests written back to back (pipelined), then a third after the answers.
    stream
        .write_all(format!("{head}{head}").as_bytes())
        .unwrap();
    for answered in 1..=3 {
        let response = http::read_response(&mut stream, false).unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("Connection"), Some("keep-alive"));
        assert_eq!(json_of(&response)["value"], "1");
        if answered == 2 {
            stream.write_all(head.as_bytes()).unwrap();
        }
    }
    let last = head.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    stream.write_all(last.as_bytes()).unwrap();
    let closing = http::read_response(&mut stream, false).unwrap();
    assert_eq!(closing.header("Connection"), Some("close"));

    let requests = vault.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|r| r.connection == 0), "{requests:#?}");
    assert_eq!(vault.connections(), 1);
}

#[test]
fn in_flight_peak_tells_concurrent_fetches_from_sequential_ones() {
    let tls = Tls::new();
    let entra = Entra::start(&tls, FEDERATED_TOKEN);
    let vault = KeyVault::start(&tls, &entra);
    let client = tls.client_config();
    let token = entra.token_for(&tls, VAULT_SCOPE);
    let latency = Duration::from_millis(200);
    vault.set_latency(latency);
    let urls: Vec<String> = (0..8)
        .map(|i| {
            let name = format!("secret-{i}");
            vault.set_secret(&name, &format!("value {i}"));
            format!(
                "{}?api-version={API_VERSION}",
                vault.secret_url(&name, None)
            )
        })
        .collect();

    for url in &urls[..3] {
        assert_eq!(get_with(url, &token, &client).status, 200);
    }
    assert_eq!(
        vault.peak_in_flight(),
        1,
        "sequential fetches never overlap"
    );
    let sequential = vault.requests();
    for pair in sequential.windows(2) {
        assert!(pair[1].started >= pair[0].ended, "{pair:#?}");
        assert!(pair[0].ended - pair[0].started >= latency, "{pair:#?}");
    }

    vault.clear_requests();
    assert_eq!(vault.peak_in_flight(), 0);
    let handles: Vec<_> = urls
        .iter()
        .map(|url| {
            let (url, token, client) = (url.clone(), token.clone(), client.clone());
            thread::spawn(move || get_with(&url, &token, &client).status)
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), 200);
    }
    let peak = vault.peak_in_flight();
    assert!(
        peak >= 2,
        "concurrent fetches overlapped only {peak} at a time"
    );
    let requests = vault.requests();
    assert_eq!(requests.len(), 8);
    let overlapping = requests
        .iter()
        .filter(|r| r.started < requests[0].ended && r.ended > requests[0].started)
        .count();
    assert!(overlapping >= 2, "{requests:#?}");
}

fn get(url: &str, authorization: &str, client: &Arc<rustls::ClientConfig>) -> Response {
    http::request(
        "GET",
        url,
        &[("Authorization", authorization)],
        &[],
        Some(client),
    )
    .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn get_with(url: &str, token: &str, client: &Arc<rustls::ClientConfig>) -> Response {
    get(url, &format!("Bearer {token}"), client)
}

fn json_of(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.text()))
}

#[track_caller]
fn assert_error(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        json_of(response)["error"]["code"],
        code,
        "{}",
        response.text()
    );
}

#[track_caller]
fn assert_unauthorized(response: &Response, vault: &KeyVault, message_start: &str) {
    assert_error(response, 401, "Unauthorized");
    assert_eq!(
        response.header("WWW-Authenticate"),
        Some(vault.challenge().as_str())
    );
    let message = json_of(response)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.starts_with(message_start), "{message}");
}

/// The token with a claim of its payload changed and the signature kept.
fn forge(token: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = jwt_claims(token);
    claims["appid"] = json!("00000000-0000-0000-0000-000000000bad");
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("payload is base64url");
    serde_json::from_slice(&json).expect("payload is JSON")
}
