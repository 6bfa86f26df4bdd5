//! An OTLP/HTTP receiver standing in for an OpenTelemetry Collector: a small HTTP/1.1 server
//! on `std::net` that takes POSTs to `/v1/traces`, `/v1/metrics` and `/v1/logs`, keeps each
//! request as it came (raw body included), and decodes them with the official OTLP
//! definitions of the `opentelemetry-proto` crate (prost for protobuf, its serde mapping
//! for JSON). It can be told to answer 500 or to hang, and counts every connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers 200 with an empty export response.
    Accept,
    /// Answers 500 to everything.
    Fail,
    /// Reads each request and never answers.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub content_type: String,
    pub content_encoding: String,
    /// The body as it came, compressed if it was.
    pub body: Vec<u8>,
}

impl Request {
    fn is_json(&self) -> bool {
        self.content_type.starts_with("application/json")
    }

    /// The body, decompressed.
    pub fn payload(&self) -> Vec<u8> {
        match self.content_encoding.as_str() {
            "" => self.body.clone(),
            "gzip" => {
                let mut payload = Vec::new();
                flate2::read::GzDecoder::new(self.body.as_slice())
                    .read_to_end(&mut payload)
                    .unwrap_or_else(|e| panic!("{}: bad gzip body: {e}", self.path));
                payload
            }
            other => panic!("{}: unexpected Content-Encoding {other}", self.path),
        }
    }
}

pub struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start(behaviour: Behaviour) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("receiver address").port();
        let receiver = Receiver {
            port,
            requests: Arc::default(),
            connections: Arc::default(),
            stop: Arc::default(),
        };
        let (requests, connections, stop) = (
            Arc::clone(&receiver.requests),
            Arc::clone(&receiver.connections),
            Arc::clone(&receiver.stop),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections.fetch_add(1, Ordering::SeqCst);
                        let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
                        thread::spawn(move || serve(stream, behaviour, &requests, &stop));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        receiver
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("requests").clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn spans(&self) -> Vec<(Resource, Span)> {
        let mut spans = Vec::new();
        for request in self.requests_to("/v1/traces") {
            let export: ExportTraceServiceRequest = decode(&request);
            for resource_spans in export.resource_spans {
                let resource = resource_spans.resource.unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    spans.extend(scope.spans.into_iter().map(|s| (resource.clone(), s)));
                }
            }
        }
        spans
    }

    pub fn metrics(&self) -> Vec<(Resource, Metric)> {
        let mut metrics = Vec::new();
        for request in self.requests_to("/v1/metrics") {
            let export: ExportMetricsServiceRequest = decode(&request);
            for resource_metrics in export.resource_metrics {
                let resource = resource_metrics.resource.unwrap_or_default();
                for scope in resource_metrics.scope_metrics {
                    metrics.extend(scope.metrics.into_iter().map(|m| (resource.clone(), m)));
                }
            }
        }
        metrics
    }

    /// Every log record with its resource and the name of its instrumentation scope.
    pub fn logs(&self) -> Vec<(Resource, String, LogRecord)> {
        let mut logs = Vec::new();
        for request in self.requests_to("/v1/logs") {
            let export: ExportLogsServiceRequest = decode(&request);
            for resource_logs in export.resource_logs {
                let resource = resource_logs.resource.unwrap_or_default();
                for scope in resource_logs.scope_logs {
                    let name = scope.scope.map(|s| s.name).unwrap_or_default();
                    logs.extend(
                        scope
                            .log_records
                            .into_iter()
                            .map(|r| (resource.clone(), name.clone(), r)),
                    );
                }
            }
        }
        logs
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Decodes an export request as its content type says, with the official definitions.
fn decode<T>(request: &Request) -> T
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    let payload = request.payload();
    if request.is_json() {
        serde_json::from_slice(&payload)
            .unwrap_or_else(|e| panic!("{}: not OTLP JSON: {e}", request.path))
    } else {
        T::decode(payload.as_slice())
            .unwrap_or_else(|e| panic!("{}: not OTLP protobuf: {e}", request.path))
    }
}

/// Serves one connection's requests (the exporter keeps connections alive) until it closes.
fn serve(
    stream: TcpStream,
    behaviour: Behaviour,
    requests: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Ok(Some(request)) = read_request(&mut reader) {
        let json = request.is_json();
        requests.lock().expect("requests").push(request);
        let response = match behaviour {
            Behaviour::Accept if json => ok_response("application/json", b"{}"),
            Behaviour::Accept => ok_response("application/x-protobuf", b""),
            Behaviour::Fail => {
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec()
            }
            Behaviour::Hang => {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        };
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

fn ok_response(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

/// One request: its head, then a body of Content-Length bytes. `None` at a clean end of
/// the connection.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let (method, path) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    assert_eq!(method, "POST", "OTLP/HTTP only POSTs: {line:?}");
    let path = path.to_string();
    let mut content_type = String::new();
    let mut content_encoding = String::new();
    let mut length = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.trim().to_string(),
                "content-encoding" => content_encoding = value.trim().to_string(),
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "transfer-encoding" => panic!("the receiver reads Content-Length bodies only"),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length.unwrap_or(0)];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        path,
        content_type,
        content_encoding,
        body,
    }))
}

/// The value of the attribute named `key`, if any.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key) {
        Some(any_value::Value::StringValue(text)) => Some(text.clone()),
        _ => None,
    }
}

pub fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key) {
        Some(any_value::Value::IntValue(number)) => Some(*number),
        _ => None,
    }
}

/// A log record's body as text.
pub fn body(record: &LogRecord) -> String {
    match record
        .body
        .as_ref()
        .and_then(|b: &AnyValue| b.value.as_ref())
    {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        other => format!("{other:?}"),
    }
}

/// The attribute sets of every data point of `metric`.
pub fn point_attributes(metric: &Metric) -> Vec<Vec<KeyValue>> {
    match &metric.data {
        Some(metric::Data::Gauge(gauge)) => gauge
            .data_points
            .iter()
            .map(|p| p.attributes.clone())
            .collect(),
        Some(metric::Data::Sum(sum)) => sum
            .data_points
            .iter()
            .map(|p| p.attributes.clone())
            .collect(),
        Some(metric::Data::Histogram(histogram)) => histogram
            .data_points
            .iter()
            .map(|p| p.attributes.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// Lowercase hex of an id's bytes, as `TRACEPARENT` writes them.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
