//! A stand-in for the Microsoft Entra ID token endpoint, for workload identity: the
//! client-credentials grant with a federated (Kubernetes service account) token as client
//! assertion, over https with the test certificate. Clients reach it by taking its
//! `authority()` as their authority host (AZURE_AUTHORITY_HOST) and trusting the test CA.
//!
//! It checks the request as Entra ID would for one registered app whose federated credential
//! matches exactly one assertion, answers errors in Entra's JSON shape, and issues access
//! tokens for any `RESOURCE/.default` scope: a JWT whose `iss` starts with
//! `https://sts.windows.net/`, whose `aud` is the resource, and which carries `iat`, `nbf` and
//! `exp` around the current time. Azurite's `--oauth basic` accepts those for blob storage
//! (`STORAGE_SCOPE`) without checking the signature; the Key Vault stand-in takes those for
//! `VAULT_SCOPE` and checks the signature (HS256, with a key of this stand-in's) through
//! [`verify_token`], so only tokens issued here pass.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::http::Url;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::http::{find, request};
use super::sas::{encode, hmac_sha256};
use super::tls::Tls;

/// The tenant and app (client) id of the workload identity the stand-in knows.
pub const TENANT_ID: &str = "3f2b9c4e-7a1d-4e8b-9c6f-0d5a2e8b1c47";
pub const CLIENT_ID: &str = "8c1e4a7b-2d9f-4b3a-a6e5-71f0c3d9b2e8";
/// A projected service account token of the workload-identity pods the tests play; the
/// stand-in only compares it with the one it was started with.
pub const FEDERATED_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJhdWQiOlsiYXBpOi8vQXp1cmVBRFRva2VuRXhjaGFuZ2UiXSwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OmRhdGE6dGFzayJ9.c2lnbmF0dXJl";

/// What a workload-identity client puts in `client_assertion_type`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The scope a blob client asks for; the token's audience is the scope less `/.default`.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// The scope a Key Vault client asks for; tokens for it have the audience `VAULT_RESOURCE`.
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";

/// Default lifetime of issued tokens, as Entra ID gives app tokens.
pub const EXPIRES_IN: u64 = 3599;

const SIGNING_KEY: &[u8] = b"entra stand-in signing key";

/// One request the stand-in received, whatever it answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    pub path: String,
    pub form: Vec<(String, String)>,
    pub status: u16,
}

impl TokenRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

struct State {
    federated_token: String,
    expires_in: u64,
    fail_next: Vec<u16>,
    requests: Vec<TokenRequest>,
    issued: Vec<String>,
}

pub struct Entra {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Entra {
    /// Starts the stand-in on a free loopback port. Token requests succeed when their
    /// `client_assertion` is exactly `federated_token` (the token file's content).
    pub fn start(tls: &Tls, federated_token: &str) -> Entra {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Entra stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let state = Arc::new(Mutex::new(State {
            federated_token: federated_token.to_string(),
            expires_in: EXPIRES_IN,
            fail_next: Vec::new(),
            requests: Vec::new(),
            issued: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let config = tls.server_config();
        let acceptor = {
            let state = state.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    let config = config.clone();
                    thread::spawn(move || {
                        // A client that gives up mid-handshake is its own business; what
                        // the test checks is in the recorded requests.
                        let _ = serve(stream, config, &state);
                    });
                }
            })
        };
        Entra {
            addr,
            state,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`: the authority host for clients (AZURE_AUTHORITY_HOST).
    pub fn authority(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `{authority}/{TENANT_ID}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!("{}/{TENANT_ID}/oauth2/v2.0/token", self.authority())
    }

    /// An access token for `scope`, got over https with the form azure-identity's
    /// WorkloadIdentityCredential posts and the current federated token, for tests that call
    /// a resource directly. It is recorded among `requests()` and `issued()` like any other.
    pub fn token_for(&self, tls: &Tls, scope: &str) -> String {
        let federated_token = self.state.lock().unwrap().federated_token.clone();
        let form = [
            ("client_assertion", federated_token.as_str()),
            ("client_assertion_type", JWT_BEARER),
            ("client_id", CLIENT_ID),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ]
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect::<Vec<_>>()
        .join("&");
        let response = request(
            "POST",
            &self.token_url(),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
            Some(&tls.client_config()),
        )
        .expect("token request");
        assert_eq!(response.status, 200, "token request: {}", response.text());
        let body: Value = serde_json::from_slice(&response.body).expect("token response JSON");
        body["access_token"]
            .as_str()
            .expect("access_token in the token response")
            .to_string()
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every access token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Makes later token requests succeed only with this assertion, as when the kubelet
    /// rotates the projected token.
    pub fn set_federated_token(&self, token: &str) {
        self.state.lock().unwrap().federated_token = token.to_string();
    }

    /// The `expires_in` of tokens issued from now on (and their `exp` claim).
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.lock().unwrap().expires_in = seconds;
    }

    /// The next `statuses.len()` requests are answered with these statuses (say 500, 503) in
    /// order, with an Entra-shaped error body, before requests are served normally again.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.state.lock().unwrap().fail_next = statuses.to_vec();
    }
}

impl Drop for Entra {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The acceptor blocks in accept(); one more connection lets it see the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    state: &Mutex<State>,
) -> io::Result<()> {
    // A reply goes out as two TLS records (head, body): with Nagle's algorithm on, the second
    // waits for the client's delayed ACK, 40 ms a reply that no real endpoint costs.
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let connection =
        rustls::ServerConnection::new(config).map_err(|e| io::Error::other(e.to_string()))?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let (method, path, body) = read_request(&mut stream)?;
    let form = parse_form(&body);
    let (status, reply) = answer(state, &method, &path, &form);
    state.lock().unwrap().requests.push(TokenRequest {
        method,
        path,
        form,
        status,
    });
    let body = reply.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store, no-cache\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// Reads a request head and a Content-Length body, which is how both the Python and the Rust
/// Azure SDKs send the token form.
fn read_request(stream: &mut impl Read) -> io::Result<(String, String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no request"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let length: usize = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(length);
    Ok((method, path, body))
}

/// Decodes an application/x-www-form-urlencoded body with the url crate's parser, the same
/// grammar as a query string.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let mut url = Url::parse("https://form.invalid/").expect("static URL");
    url.set_query(Some(&String::from_utf8_lossy(body)));
    url.query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

fn answer(
    state: &Mutex<State>,
    method: &str,
    path: &str,
    form: &[(String, String)],
) -> (u16, Value) {
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let mut state = state.lock().unwrap();
    if !state.fail_next.is_empty() {
        let status = state.fail_next.remove(0);
        return error(
            status,
            "temporarily_unavailable",
            50001,
            "The service is temporarily unavailable.",
        );
    }
    let expected_path = format!("/{TENANT_ID}/oauth2/v2.0/token");
    if path != expected_path {
        let tenant = path.trim_start_matches('/').split('/').next().unwrap_or("");
        if tenant != TENANT_ID && path.ends_with("/oauth2/v2.0/token") {
            return error(
                400,
                "invalid_tenant",
                90002,
                &format!("Tenant '{tenant}' not found."),
            );
        }
        return error(404, "not_found", 0, &format!("No endpoint at {path}."));
    }
    if method != "POST" {
        return error(
            405,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    match field("grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return error(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
        None => return missing("grant_type"),
    }
    let Some(client_id) = field("client_id") else {
        return missing("client_id");
    };
    if client_id != CLIENT_ID {
        return error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{TENANT_ID}'."
            ),
        );
    }
    match field("client_assertion_type") {
        Some(JWT_BEARER) => {}
        Some(_) => {
            return error(
                400,
                "invalid_request",
                50027,
                "Invalid client_assertion_type: must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            );
        }
        None => {
            return error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    }
    let Some(assertion) = field("client_assertion") else {
        return missing("client_assertion");
    };
    if assertion != state.federated_token {
        return error(
            401,
            "invalid_client",
            700213,
            "No matching federated identity record found for presented assertion.",
        );
    }
    let Some(scope) = field("scope") else {
        return missing("scope");
    };
    let Some(resource) = scope.strip_suffix("/.default").filter(|r| !r.is_empty()) else {
        return error(
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    let expires_in = state.expires_in;
    let token = access_token(resource, expires_in);
    state.issued.push(token.clone());
    (
        200,
        json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        }),
    )
}

/// A v1 app token for `resource`, shaped like Entra ID's for storage.
fn access_token(resource: &str, expires_in: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    // Entra backdates nbf and iat by five minutes to allow for clock skew; so does this.
    let not_before = now - 300;
    let header = json!({"typ": "JWT", "alg": "HS256"});
    let claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{TENANT_ID}/"),
        "iat": not_before,
        "nbf": not_before,
        "exp": now + expires_in,
        "appid": CLIENT_ID,
        "appidacr": "2",
        "idtyp": "app",
        "oid": "5b7e2a91-3c4d-4f6a-8e1b-9d0c2f7a6e35",
        "sub": "5b7e2a91-3c4d-4f6a-8e1b-9d0c2f7a6e35",
        "tid": TENANT_ID,
        "ver": "1.0",
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = hmac_sha256(SIGNING_KEY, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The claims of `token` if it is an access token this stand-in (any instance) signed and
/// issued for the test tenant; why not otherwise. Audience and lifetime are the caller's to
/// check, as a resource server does.
pub fn verify_token(token: &str) -> Result<Value, String> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (three dot-separated parts)".to_string());
    };
    let signing_input = format!("{header}.{claims}");
    let expected = URL_SAFE_NO_PAD.encode(hmac_sha256(SIGNING_KEY, signing_input.as_bytes()));
    if signature != expected {
        return Err("signature was not made by the Entra stand-in".to_string());
    }
    let claims: Value = URL_SAFE_NO_PAD
        .decode(claims)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| "payload is not base64url JSON".to_string())?;
    let issuer = format!("https://sts.windows.net/{TENANT_ID}/");
    if claims["iss"] != issuer.as_str() {
        return Err(format!("issuer {} is not {issuer}", claims["iss"]));
    }
    Ok(claims)
}

fn missing(name: &str) -> (u16, Value) {
    error(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// Entra ID's error shape: an OAuth error code, an AADSTS-prefixed description, its codes.
fn error(status: u16, code: &str, aadsts: u32, description: &str) -> (u16, Value) {
    (
        status,
        json!({
            "error": code,
            "error_description": format!("AADSTS{aadsts}: {description}"),
            "error_codes": [aadsts],
            "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000",
        }),
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
