//! A stand-in for the Azure Key Vault secrets data plane (`GET /secrets/{name}[/{version}]`),
//! over https with the test certificate, on a free loopback port. No Key Vault emulator
//! exists; this one answers as the service does for what the agent uses, and
//! tests/keyvault_standin.rs proves it against Microsoft's Python SecretClient.
//!
//! - Every request needs `Authorization: Bearer TOKEN`, where TOKEN is an access token the
//!   Entra stand-in issued for `https://vault.azure.net` and is within its `nbf`..`exp`.
//!   Without one the answer is 401 with the challenge
//!   `WWW-Authenticate: Bearer authorization="{entra authority}/{tenant}", resource="https://vault.azure.net"`,
//!   which is how the official clients learn where to get a token (they send their first
//!   request with no token on purpose). A bad token gets 401 with the same challenge.
//! - Then `api-version` must be present (400 `BadParameter` otherwise) and one Key Vault
//!   knows (`API_VERSIONS`).
//! - Then, in order: injected faults (`throttle_next*` → 429 with `Retry-After: 1`,
//!   `fail_next*` → the status asked for), forbidden names (403 `Forbidden` with inner
//!   `AccessDenied`, as an access policy without secrets/get gives), unknown names or versions
//!   (404 `SecretNotFound`), and the secret bundle (200).
//!
//! Secret names are case-insensitive, as in Key Vault, and must be 1-127 letters, digits and
//! dashes (400 `BadParameter` otherwise). `/secrets/NAME` and `/secrets/NAME/` (what the Rust
//! SDK sends) both mean the latest version. Versions are 32 hex digits, as Key Vault's.
//!
//! Connections are kept alive (HTTP/1.1 default, until the client says `Connection: close`
//! or is idle for `IDLE_TIMEOUT`), one thread each. Every request is recorded with its
//! timing; `set_latency` delays every answer so a test can see whether a client's fetches
//! overlap, which `peak_in_flight` reports.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use azure_core::http::Url;
use serde_json::{Value, json};

use super::entra::{self, Entra, TENANT_ID, VAULT_RESOURCE};
use super::http::find;
use super::tls::Tls;

/// The api-versions the secrets data plane accepts: the Rust SDK 1.0 sends 2025-07-01, the
/// Python SDK 4.12 2026-04-01.
pub const API_VERSIONS: [&str; 10] = [
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
    "2026-04-01",
];

/// The vault's name where the service puts it in messages.
pub const VAULT_NAME: &str = "task-agent-standin";

/// How long a kept-alive connection may sit idle before the stand-in closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Key Vault's seconds for `Retry-After` on a throttled request, as the stand-in sends it.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// One request the stand-in received, whatever it answered.
#[derive(Debug, Clone)]
pub struct VaultRequest {
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    /// The decoded query pairs.
    pub query: Vec<(String, String)>,
    /// The Authorization header as sent.
    pub authorization: Option<String>,
    /// Whether it carried a valid vault token (every request the stand-in served past the
    /// 401 check).
    pub authorized: bool,
    pub status: u16,
    /// The number of the TLS connection it came on (0, 1, …, in order of acceptance).
    pub connection: usize,
    /// When its head had been read, and when its answer was about to be written (after the
    /// latency).
    pub started: Instant,
    pub ended: Instant,
}

impl VaultRequest {
    /// The first query parameter of that name.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The secret name and version (None for the latest) if the path is a secret's.
    pub fn secret(&self) -> Option<(String, Option<String>)> {
        secret_path(&self.path)
    }

    /// The bearer token sent, if any.
    pub fn bearer(&self) -> Option<&str> {
        bearer(self.authorization.as_deref())
    }
}

struct SecretVersion {
    version: String,
    value: String,
    created: u64,
}

struct Secret {
    /// The name as first set, for the `id` Key Vault gives back.
    name: String,
    /// Oldest first; the last is the latest.
    versions: Vec<SecretVersion>,
}

struct Fault {
    status: u16,
    /// Lowercased; None for any secret.
    name: Option<String>,
    remaining: usize,
}

struct State {
    /// Keyed by the lowercased name.
    secrets: HashMap<String, Secret>,
    forbidden: Vec<String>,
    faults: Vec<Fault>,
    latency: Duration,
    requests: Vec<VaultRequest>,
    in_flight: usize,
    peak_in_flight: usize,
    connections: usize,
}

struct Shared {
    state: Mutex<State>,
    base_url: String,
    challenge: String,
    stop: AtomicBool,
}

pub struct KeyVault {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl KeyVault {
    /// Starts an empty vault on a free loopback port, taking tokens from `entra`'s issuer and
    /// sending clients there in its challenge.
    pub fn start(tls: &Tls, entra: &Entra) -> KeyVault {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Key Vault stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                secrets: HashMap::new(),
                forbidden: Vec::new(),
                faults: Vec::new(),
                latency: Duration::ZERO,
                requests: Vec::new(),
                in_flight: 0,
                peak_in_flight: 0,
                connections: 0,
            }),
            base_url: format!("https://{addr}"),
            challenge: format!(
                "Bearer authorization=\"{}/{TENANT_ID}\", resource=\"{VAULT_RESOURCE}\"",
                entra.authority()
            ),
            stop: AtomicBool::new(false),
        });
        let config = tls.server_config();
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let connection = {
                        let mut state = shared.state.lock().unwrap();
                        state.connections += 1;
                        state.connections - 1
                    };
                    let shared = shared.clone();
                    let config = config.clone();
                    thread::spawn(move || {
                        // A client that hangs up is its own business; what the test checks
                        // is in the recorded requests.
                        let _ = serve(stream, config, &shared, connection);
                    });
                }
            })
        };
        KeyVault {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`: the vault URL for clients.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// A secret identifier, `{url}/secrets/NAME[/VERSION]`, as Key Vault gives them out.
    pub fn secret_url(&self, name: &str, version: Option<&str>) -> String {
        match version {
            Some(version) => format!("{}/secrets/{name}/{version}", self.url()),
            None => format!("{}/secrets/{name}", self.url()),
        }
    }

    /// The `WWW-Authenticate` value of every 401.
    pub fn challenge(&self) -> String {
        self.shared.challenge.clone()
    }

    /// Makes `name` a secret with this one version (dropping any earlier ones); gives the
    /// version.
    pub fn set_secret(&self, name: &str, value: &str) -> String {
        self.shared
            .state
            .lock()
            .unwrap()
            .secrets
            .remove(&name.to_ascii_lowercase());
        self.add_version(name, value)
    }

    /// Adds a version to `name` (creating the secret if need be), which becomes the latest,
    /// as Key Vault's set-secret does; gives the version.
    pub fn add_version(&self, name: &str, value: &str) -> String {
        assert!(valid_name(name), "{name:?} is not a valid Key Vault name");
        let version = random_hex();
        let mut state = self.shared.state.lock().unwrap();
        let secret = state
            .secrets
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| Secret {
                name: name.to_string(),
                versions: Vec::new(),
            });
        secret.versions.push(SecretVersion {
            version: version.clone(),
            value: value.to_string(),
            created: unix_now(),
        });
        version
    }

    /// The versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Vec<String> {
        let state = self.shared.state.lock().unwrap();
        state
            .secrets
            .get(&name.to_ascii_lowercase())
            .map(|secret| secret.versions.iter().map(|v| v.version.clone()).collect())
            .unwrap_or_default()
    }

    /// Requests for `name` (any version, existing or not) get 403 from now on.
    pub fn forbid(&self, name: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .forbidden
            .push(name.to_ascii_lowercase());
    }

    /// The next `count` authorized requests get 429 with `Retry-After: 1`.
    pub fn throttle_next(&self, count: usize) {
        self.push_fault(429, None, count);
    }

    /// The next `count` authorized requests for `name` get 429 with `Retry-After: 1`.
    pub fn throttle_next_for(&self, name: &str, count: usize) {
        self.push_fault(429, Some(name), count);
    }

    /// The next `count` authorized requests get `status` (say 500 or 503) with a Key Vault
    /// error body (and `Retry-After: 1` if the status is 429).
    pub fn fail_next(&self, status: u16, count: usize) {
        self.push_fault(status, None, count);
    }

    /// As `fail_next`, for requests for `name` only.
    pub fn fail_next_for(&self, name: &str, status: u16, count: usize) {
        self.push_fault(status, Some(name), count);
    }

    fn push_fault(&self, status: u16, name: Option<&str>, count: usize) {
        self.shared.state.lock().unwrap().faults.push(Fault {
            status,
            name: name.map(str::to_ascii_lowercase),
            remaining: count,
        });
    }

    /// Every later answer is delayed this long after its request arrived.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state.lock().unwrap().latency = latency;
    }

    /// Every request so far, in the order they were answered.
    pub fn requests(&self) -> Vec<VaultRequest> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Forgets the recorded requests and the peak in flight.
    pub fn clear_requests(&self) {
        let mut state = self.shared.state.lock().unwrap();
        state.requests.clear();
        state.peak_in_flight = state.in_flight;
    }

    /// The most requests that were being answered at one moment.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.state.lock().unwrap().peak_in_flight
    }

    /// TLS connections accepted so far; fewer than requests means connections were reused.
    pub fn connections(&self) -> usize {
        self.shared.state.lock().unwrap().connections
    }
}

impl Drop for KeyVault {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The acceptor blocks in accept(); one more connection lets it see the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// What the stand-in read of one request.
struct Request {
    method: String,
    target: String,
    authorization: Option<String>,
    close: bool,
}

struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    shared: &Shared,
    connection: usize,
) -> io::Result<()> {
    // A reply goes out as two TLS records (head, body): with Nagle's algorithm on, the second
    // waits for the client's delayed ACK, 40 ms a reply that no real endpoint costs.
    tcp.set_nodelay(true)?;
    // A short read timeout so an idle connection notices the stand-in stopping; the idle
    // limit itself is counted in `read_request`.
    tcp.set_read_timeout(Some(Duration::from_millis(500)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let server =
        rustls::ServerConnection::new(config).map_err(|e| io::Error::other(e.to_string()))?;
    let mut stream = rustls::StreamOwned::new(server, tcp);
    let mut pending = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut pending, &shared.stop)? else {
            return Ok(());
        };
        let started = Instant::now();
        let latency = {
            let mut state = shared.state.lock().unwrap();
            state.in_flight += 1;
            state.peak_in_flight = state.peak_in_flight.max(state.in_flight);
            state.latency
        };
        thread::sleep(latency);
        let (reply, record) = answer(shared, &request, connection, started);
        {
            let mut state = shared.state.lock().unwrap();
            state.in_flight -= 1;
            state.requests.push(record);
        }
        write_reply(&mut stream, &reply, request.close)?;
        if request.close {
            stream.conn.send_close_notify();
            return stream.flush();
        }
    }
}

/// Reads one request head (and skips a Content-Length body, which no secret GET has). None
/// when the client closes, goes idle past `IDLE_TIMEOUT` or the stand-in stops, between
/// requests.
fn read_request(
    stream: &mut impl Read,
    pending: &mut Vec<u8>,
    stop: &AtomicBool,
) -> io::Result<Option<Request>> {
    let idle_since = Instant::now();
    let head_end = loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(read) => pending.extend_from_slice(&chunk[..read]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) || idle_since.elapsed() > IDLE_TIMEOUT {
                    return Ok(None);
                }
            }
            // A TLS peer that hangs up without close_notify, between requests.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && pending.is_empty() => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    pending.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    let version = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let length: usize = header("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    while pending.len() < length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body")),
            Ok(read) => pending.extend_from_slice(&chunk[..read]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if idle_since.elapsed() > IDLE_TIMEOUT {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    pending.drain(..length);
    let connection = header("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let close = connection.contains("close") || (version == "HTTP/1.0" && connection.is_empty());
    Ok(Some(Request {
        method,
        target,
        authorization: header("authorization").map(str::to_string),
        close,
    }))
}

fn write_reply(stream: &mut impl Write, reply: &Reply, close: bool) -> io::Result<()> {
    let body = reply.body.to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nCache-Control: no-cache\r\nPragma: no-cache\r\nExpires: -1\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nx-ms-keyvault-region: local\r\nx-ms-keyvault-service-version: 1.9.0.0\r\nx-ms-request-id: {}\r\nX-Content-Type-Options: nosniff\r\nStrict-Transport-Security: max-age=31536000;includeSubDomains\r\n",
        reply.status,
        reason(reply.status),
        body.len(),
        request_id()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

fn answer(
    shared: &Shared,
    request: &Request,
    connection: usize,
    started: Instant,
) -> (Reply, VaultRequest) {
    // The target is origin-form; a dummy origin lets the url crate split and decode it.
    let url = Url::parse(&format!("https://vault.invalid{}", request.target)).ok();
    let path = request
        .target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let query: Vec<(String, String)> = url
        .as_ref()
        .map(|url| {
            url.query_pairs()
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let claims = check_token(bearer(request.authorization.as_deref()));
    let authorized = claims.is_ok();
    let reply = match claims {
        Err(message) => unauthorized(shared, &message),
        Ok(claims) => authorized_answer(shared, request, &path, &query, &claims),
    };
    let record = VaultRequest {
        method: request.method.clone(),
        path,
        query,
        authorization: request.authorization.clone(),
        authorized,
        status: reply.status,
        connection,
        started,
        ended: Instant::now(),
    };
    (reply, record)
}

/// The claims of a valid vault token, or Key Vault's message for why it is not one.
fn check_token(token: Option<&str>) -> Result<Value, String> {
    let Some(token) = token else {
        return Err("AKV10000: Request is missing a Bearer or PoP token.".to_string());
    };
    let claims =
        entra::verify_token(token).map_err(|why| format!("AKV10021: Invalid token: {why}."))?;
    if claims["aud"] != VAULT_RESOURCE {
        return Err(format!(
            "AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {}.",
            claims["aud"].as_str().unwrap_or_default()
        ));
    }
    let now = unix_now();
    if claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
        return Err("[TokenExpired] Error validating token: 'S2S12086'.".to_string());
    }
    // Five minutes of clock skew for a token from the future, as Entra-token validators allow.
    if claims["nbf"].as_u64().is_some_and(|nbf| nbf > now + 300) {
        return Err("[TokenNotYetValid] Error validating token: 'S2S12085'.".to_string());
    }
    Ok(claims)
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(shared: &Shared, message: &str) -> Reply {
    let mut reply = error(401, "Unauthorized", message);
    reply
        .headers
        .push(("WWW-Authenticate", shared.challenge.clone()));
    reply
}

fn authorized_answer(
    shared: &Shared,
    request: &Request,
    path: &str,
    query: &[(String, String)],
    claims: &Value,
) -> Reply {
    let api_version = query
        .iter()
        .find(|(key, _)| key == "api-version")
        .map(|(_, value)| value.as_str());
    match api_version {
        None | Some("") => {
            return error(
                400,
                "BadParameter",
                "The 'api-version' query parameter is missing.",
            );
        }
        Some(version) if !API_VERSIONS.contains(&version) => {
            return error(
                400,
                "BadParameter",
                &format!(
                    "The specified version ({version}) is not recognized. Consider using the latest supported version (2025-07-01)."
                ),
            );
        }
        Some(_) => {}
    }
    let Some((name, version)) = secret_path(path) else {
        return error(
            404,
            "NotFound",
            &format!("The requested URI {path} does not exist."),
        );
    };
    if !valid_name(&name) {
        return error(
            400,
            "BadParameter",
            &format!("The request URI contains an invalid name: {name}"),
        );
    }
    if request.method != "GET" {
        return error(
            405,
            "BadParameter",
            &format!(
                "The requested resource does not support http method '{}'.",
                request.method
            ),
        );
    }
    let key = name.to_ascii_lowercase();
    let mut state = shared.state.lock().unwrap();
    let fault = state.faults.iter_mut().find(|fault| {
        fault.remaining > 0 && fault.name.as_ref().is_none_or(|wanted| *wanted == key)
    });
    if let Some(fault) = fault {
        fault.remaining -= 1;
        let status = fault.status;
        state.faults.retain(|fault| fault.remaining > 0);
        return injected(status);
    }
    if state.forbidden.contains(&key) {
        let mut reply = error(
            403,
            "Forbidden",
            &format!(
                "The user, group or application 'appid={};oid={};iss={}' does not have secrets get permission on key vault '{VAULT_NAME};location=local'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                claims["appid"].as_str().unwrap_or_default(),
                claims["oid"].as_str().unwrap_or_default(),
                claims["iss"].as_str().unwrap_or_default(),
            ),
        );
        reply.body["error"]["innererror"] = json!({"code": "AccessDenied"});
        return reply;
    }
    let found = state.secrets.get(&key).and_then(|secret| {
        let found = match &version {
            None => secret.versions.last(),
            Some(wanted) => secret
                .versions
                .iter()
                .find(|v| v.version.eq_ignore_ascii_case(wanted)),
        };
        found.map(|found| (secret, found))
    });
    let Some((secret, found)) = found else {
        let id = match &version {
            Some(version) => format!("{name}/{version}"),
            None => name.clone(),
        };
        return error(
            404,
            "SecretNotFound",
            &format!(
                "A secret with (name/id) {id} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        );
    };
    Reply {
        status: 200,
        body: json!({
            "value": found.value,
            "id": format!("{}/secrets/{}/{}", shared.base_url, secret.name, found.version),
            "attributes": {
                "enabled": true,
                "created": found.created,
                "updated": found.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": {},
        }),
        headers: Vec::new(),
    }
}

/// The answer to an injected fault, with the code and message Key Vault gives for it.
fn injected(status: u16) -> Reply {
    match status {
        429 => {
            let mut reply = error(
                429,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: A generic throttling rule was applied. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125288",
            );
            reply
                .headers
                .push(("Retry-After", RETRY_AFTER_SECONDS.to_string()));
            reply
        }
        503 => error(
            503,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry later.",
        ),
        500 => error(
            500,
            "InternalServerError",
            "An unexpected error occurred. Please retry later.",
        ),
        other => error(other, "Error", "An injected fault."),
    }
}

/// Key Vault's error shape.
fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply {
        status,
        body: json!({"error": {"code": code, "message": message}}),
        headers: Vec::new(),
    }
}

/// `/secrets/NAME`, `/secrets/NAME/` and `/secrets/NAME/VERSION` (a leading `//`, as some
/// clients send after a vault URL with a trailing slash, is taken as `/`).
fn secret_path(path: &str) -> Option<(String, Option<String>)> {
    let rest = path.trim_start_matches('/').strip_prefix("secrets/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = rest.split('/');
    let name = parts.next().filter(|name| !name.is_empty())?.to_string();
    let version = parts.next().map(str::to_string);
    if parts.next().is_some() || version.as_deref() == Some("") {
        return None;
    }
    Some((name, version))
}

/// Key Vault object names: 1-127 ASCII letters, digits and dashes.
fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

/// 32 random hex digits, the form of Key Vault's version ids.
fn random_hex() -> String {
    let half = || RandomState::new().build_hasher().finish();
    format!("{:016x}{:016x}", half(), half())
}

fn request_id() -> String {
    let hex = random_hex();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
