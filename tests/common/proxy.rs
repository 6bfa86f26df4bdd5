//! A TCP proxy on loopback in front of one upstream (Azurite, the Entra stand-in) that
//! injects network faults on chosen connections: a response cut short, a response that stops
//! arriving while the socket stays open, a connection reset, or an HTTP error answered by the
//! proxy itself. Each accepted connection takes the next fault of the plan; once the plan's
//! list is used up, connections get its `then` fault (pass through unless said otherwise).
//!
//! It runs on its own small tokio runtime, so one task owns each connection's two sockets:
//! dropping them really closes them (a reset needs the last handle closed with SO_LINGER 0,
//! which a socket shared between threads would not guarantee), and dropping the proxy ends
//! every connection at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to one connection. Byte counts are of the response, upstream to
/// client, counted from the start of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways until either side closes.
    Pass,
    /// Forward the first `after` response bytes, then close the connection cleanly (FIN).
    Cut { after: u64 },
    /// Forward the first `after` response bytes, then forward nothing more but keep the
    /// client's socket open until the client gives up or the proxy is dropped.
    Stall { after: u64 },
    /// Forward the first `after` response bytes, then reset the connection (RST).
    Reset { after: u64 },
    /// Answer the request without contacting upstream: `status`, an Azure Storage-shaped XML
    /// error body, `Retry-After` when given, and close. Plain HTTP only: a TLS client would
    /// see a failed handshake, not a status.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
}

impl Fault {
    /// 503 Server Busy with `Retry-After: 1`, as Azure Storage throttles.
    pub fn busy() -> Fault {
        Fault::Status {
            status: 503,
            retry_after: Some(1),
        }
    }

    /// 429 with `Retry-After: 1`.
    pub fn too_many() -> Fault {
        Fault::Status {
            status: 429,
            retry_after: Some(1),
        }
    }

    /// 500 with no `Retry-After`.
    pub fn internal_error() -> Fault {
        Fault::Status {
            status: 500,
            retry_after: None,
        }
    }
}

/// The faults for the connections to come, in order, then one for all after those.
#[derive(Debug, Clone)]
pub struct Plan {
    pub first: Vec<Fault>,
    pub then: Fault,
}

impl Plan {
    /// Every connection passes through.
    pub fn pass() -> Plan {
        Plan::always(Fault::Pass)
    }

    /// The next `count` connections get `fault`, later ones pass through.
    pub fn first(count: usize, fault: Fault) -> Plan {
        Plan {
            first: vec![fault; count],
            then: Fault::Pass,
        }
    }

    /// These faults, one a connection in order, then pass through.
    pub fn sequence(faults: Vec<Fault>) -> Plan {
        Plan {
            first: faults,
            then: Fault::Pass,
        }
    }

    /// Every connection gets `fault`.
    pub fn always(fault: Fault) -> Plan {
        Plan {
            first: Vec::new(),
            then: fault,
        }
    }

    fn next(&mut self) -> Fault {
        if self.first.is_empty() {
            self.then.clone()
        } else {
            self.first.remove(0)
        }
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    upstream_connections: AtomicUsize,
    answered: AtomicUsize,
    bytes_to_client: AtomicU64,
    bytes_to_upstream: AtomicU64,
}

pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    counters: Arc<Counters>,
    // Dropped with the proxy, which cancels every task and closes every socket.
    _runtime: tokio::runtime::Runtime,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` according to `plan`.
    pub fn start(upstream: SocketAddr, plan: Plan) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let plan = Arc::new(Mutex::new(plan));
        let counters = Arc::new(Counters::default());
        {
            let plan = plan.clone();
            let counters = counters.clone();
            runtime.spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let fault = plan.lock().unwrap().next();
                    counters.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(handle(client, upstream, fault, counters.clone()));
                }
            });
        }
        Proxy {
            addr,
            upstream,
            plan,
            counters,
            _runtime: runtime,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `url` with its host and port replaced by the proxy's, so a client goes through it.
    /// With TLS upstream the client still checks the certificate for 127.0.0.1, which the
    /// test certificate covers.
    pub fn url(&self, url: &str) -> String {
        let mut parsed = azure_core::http::Url::parse(url).expect("a URL");
        parsed
            .set_ip_host(self.addr.ip())
            .expect("URL takes an IP host");
        parsed
            .set_port(Some(self.addr.port()))
            .expect("URL takes a port");
        parsed.to_string()
    }

    /// Replaces the plan for connections accepted from now on.
    pub fn set_plan(&self, plan: Plan) {
        *self.plan.lock().unwrap() = plan;
    }

    /// Connections accepted from clients.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Connections opened to upstream (those answered by the proxy itself open none).
    pub fn upstream_connections(&self) -> usize {
        self.counters.upstream_connections.load(Ordering::SeqCst)
    }

    /// Requests the proxy answered itself with a `Fault::Status`.
    pub fn answered(&self) -> usize {
        self.counters.answered.load(Ordering::SeqCst)
    }

    /// Response bytes forwarded from upstream to clients, over all connections.
    pub fn bytes_to_client(&self) -> u64 {
        self.counters.bytes_to_client.load(Ordering::SeqCst)
    }

    /// Request bytes forwarded from clients to upstream, over all connections.
    pub fn bytes_to_upstream(&self) -> u64 {
        self.counters.bytes_to_upstream.load(Ordering::SeqCst)
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    fault: Fault,
    counters: Arc<Counters>,
) {
    let limit = match fault {
        Fault::Status {
            status,
            retry_after,
        } => {
            answer(client, status, retry_after, &counters).await;
            return;
        }
        Fault::Pass => None,
        Fault::Cut { after } | Fault::Stall { after } | Fault::Reset { after } => Some(after),
    };
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        // Upstream is down: the client sees its connection closed, as it would at a dead
        // backend behind a load balancer.
        return;
    };
    counters.upstream_connections.fetch_add(1, Ordering::SeqCst);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    let mut sent: u64 = 0;
    let mut to_server = vec![0u8; 16 * 1024];
    let mut to_client = vec![0u8; 16 * 1024];
    let mut client_open = true;
    let reached = loop {
        if limit.is_some_and(|limit| sent >= limit) {
            break true;
        }
        tokio::select! {
            read = client.read(&mut to_server), if client_open => match read {
                Ok(0) | Err(_) => {
                    // The client is done sending; let upstream see that and still answer.
                    client_open = false;
                    let _ = server.shutdown().await;
                }
                Ok(n) => {
                    if server.write_all(&to_server[..n]).await.is_err() {
                        return;
                    }
                    counters.bytes_to_upstream.fetch_add(n as u64, Ordering::SeqCst);
                }
            },
            read = server.read(&mut to_client) => match read {
                Ok(0) | Err(_) => {
                    let _ = client.shutdown().await;
                    return;
                }
                Ok(n) => {
                    let n = match limit {
                        Some(limit) => n.min((limit - sent) as usize),
                        None => n,
                    };
                    if client.write_all(&to_client[..n]).await.is_err() {
                        return;
                    }
                    sent += n as u64;
                    counters.bytes_to_client.fetch_add(n as u64, Ordering::SeqCst);
                }
            },
        }
    };
    if !reached {
        return;
    }
    drop(server);
    match fault {
        Fault::Cut { .. } => {
            let _ = client.shutdown().await;
            drain(&mut client).await;
        }
        Fault::Reset { .. } => {
            // Closing with a zero linger discards anything unsent and sends RST.
            let _ = client.set_zero_linger();
            drop(client);
        }
        Fault::Stall { .. } => drain(&mut client).await,
        Fault::Pass | Fault::Status { .. } => {}
    }
}

/// Reads and discards until the client closes, so closing afterwards never turns into a
/// reset over unread data.
async fn drain(client: &mut TcpStream) {
    let mut sink = [0u8; 16 * 1024];
    while let Ok(n) = client.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Reads the request head, answers with `status`, and closes.
async fn answer(mut client: TcpStream, status: u16, retry_after: Option<u64>, counters: &Counters) {
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_head = async {
        while super::http::find(&request, b"\r\n\r\n").is_none() {
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    if !tokio::time::timeout(Duration::from_secs(10), read_head)
        .await
        .unwrap_or(false)
    {
        return;
    }
    let (reason, code) = match status {
        429 => ("Too Many Requests", "TooManyRequests"),
        500 => ("Internal Server Error", "InternalError"),
        503 => ("Service Unavailable", "ServerBusy"),
        _ => ("Injected Fault", "InjectedFault"),
    };
    let body = format!(
        "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>Injected by the test proxy.</Message></Error>"
    );
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-ms-error-code: {code}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(seconds) = retry_after {
        head.push_str(&format!("Retry-After: {seconds}\r\n"));
    }
    head.push_str("\r\n");
    counters.answered.fetch_add(1, Ordering::SeqCst);
    let _ = client.write_all(head.as_bytes()).await;
    let _ = client.write_all(body.as_bytes()).await;
    let _ = client.shutdown().await;
    // Any request body still coming is read and dropped, so the close is a clean FIN.
    let _ = tokio::time::timeout(Duration::from_secs(10), drain(&mut client)).await;
}
