//! A deliberately small HTTP/1.1 client for test set-up and checks: one request per
//! connection, over plain TCP or TLS that trusts only the test CA. It shares no code with the
//! agent's HTTP stack, so a fault there cannot also hide in the test's own view of a server.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::Url;

/// Long enough for Azurite under a loaded 2-core machine, short enough that a hung server
/// fails the test instead of the suite.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name, compared case-insensitively as HTTP requires.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the whole response. `tls` is required for https URLs.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> io::Result<Response> {
    let parsed = Url::parse(url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL has no host"))?
        .to_string();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL has no port"))?;
    let mut target = parsed.path().to_string();
    if let Some(query) = parsed.query() {
        target.push('?');
        target.push_str(query);
    }

    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");

    let tcp = TcpStream::connect((host.as_str(), port))?;
    tcp.set_read_timeout(Some(TIMEOUT))?;
    tcp.set_write_timeout(Some(TIMEOUT))?;
    match parsed.scheme() {
        "http" => exchange(tcp, &head, body, method),
        "https" => {
            let config = tls.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "https needs a TLS config")
            })?;
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let connection = rustls::ClientConnection::new(config.clone(), name)
                .map_err(|e| io::Error::other(e.to_string()))?;
            exchange(
                rustls::StreamOwned::new(connection, tcp),
                &head,
                body,
                method,
            )
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unsupported scheme {other}"),
        )),
    }
}

pub fn get(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Response {
    request("GET", url, &[], &[], tls).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn exchange(
    mut stream: impl Read + Write,
    head: &str,
    body: &[u8],
    method: &str,
) -> io::Result<Response> {
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    read_response(&mut stream, method == "HEAD")
}

/// Reads one response: status line, headers, then a body framed by Content-Length, chunked
/// encoding, or the end of the connection.
pub fn read_response(stream: &mut impl Read, head_only: bool) -> io::Result<Response> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        // One byte at a time: the head's end is not known in advance, and reading past it
        // would swallow the start of a pipelined response behind this one.
        let mut chunk = [0u8; 1];
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before the response head ended; got {:?}",
                    String::from_utf8_lossy(&buffer)
                ),
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut rest = buffer[head_end + 4..].to_vec();

    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let reason = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let mut response = Response {
        status,
        reason,
        headers,
        body: Vec::new(),
    };

    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(response);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    if chunked {
        response.body = read_chunked(stream, rest)?;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
        while rest.len() < length {
            let mut chunk = vec![0u8; (length - rest.len()).min(64 * 1024)];
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body ended after {} of {length} bytes", rest.len()),
                ));
            }
            rest.extend_from_slice(&chunk[..read]);
        }
        rest.truncate(length);
        response.body = rest;
    } else {
        read_to_close(stream, &mut rest)?;
        response.body = rest;
    }
    Ok(response)
}

fn read_chunked(stream: &mut impl Read, mut pending: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(&pending, b"\r\n") {
                break end;
            }
            fill(stream, &mut pending)?;
        };
        let size_text = String::from_utf8_lossy(&pending[..line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {size_text:?}"),
            )
        })?;
        pending.drain(..line_end + 2);
        // A chunk is followed by CRLF; the last (empty) one by optional trailers and CRLF,
        // which nothing here needs, so the body is complete once its size line is read.
        if size == 0 {
            return Ok(body);
        }
        while pending.len() < size + 2 {
            fill(stream, &mut pending)?;
        }
        body.extend_from_slice(&pending[..size]);
        pending.drain(..size + 2);
    }
}

fn fill(stream: &mut impl Read, pending: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let read = stream.read(&mut chunk)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a chunked body",
        ));
    }
    pending.extend_from_slice(&chunk[..read]);
    Ok(())
}

/// Reads until the peer closes. A TLS peer that closes without close_notify is taken as
/// done here, since the body has no other framing to check against.
fn read_to_close(stream: &mut impl Read, into: &mut Vec<u8>) -> io::Result<()> {
    match stream.read_to_end(into) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
