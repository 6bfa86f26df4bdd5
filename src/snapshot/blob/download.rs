//! A blob as a blocking `Read`: a thread runs the SDK's download on its own small runtime
//! and hands over chunks through a bounded channel, so the network, gunzip and file writes
//! overlap while memory stays bounded. A stream that breaks resumes from the last byte
//! received with a range request pinned to the blob's ETag, within the retry budget.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::Bytes;
use azure_core::http::Etag;
use azure_storage_blob::models::BlobClientDownloadOptions;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::{Classified, Connection, nonzero};
use crate::snapshot::Transfer;
use crate::snapshot::error::SnapshotError;
use crate::snapshot::source::BlobLocation;

/// Chunks in flight between the network thread and the unpacker.
const CHANNEL_CHUNKS: usize = 16;
/// A single stream asks for the whole blob in one ranged GET.
const WHOLE_BLOB: usize = 1 << 46;

pub struct Download {
    chunks: mpsc::Receiver<Result<Bytes, SnapshotError>>,
    current: Bytes,
    failure: Arc<Mutex<Option<SnapshotError>>>,
    cancel: Arc<AtomicBool>,
    /// The blob's size.
    pub total: u64,
}

/// Carried inside the `io::Error` a failed read returns, so the typed cause survives the
/// tar and gzip readers that wrap it.
#[derive(Debug)]
struct Upstream(Arc<Mutex<Option<SnapshotError>>>);

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the snapshot download failed")
    }
}

impl std::error::Error for Upstream {}

/// The download failure behind a read error, if that is what it was.
pub fn take_failure(error: &io::Error) -> Option<SnapshotError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|e| e as _);
    while let Some(level) = current {
        if let Some(Upstream(slot)) = level.downcast_ref::<Upstream>() {
            return slot.lock().ok().and_then(|mut s| s.take());
        }
        current = match level.downcast_ref::<io::Error>() {
            Some(inner) => inner.get_ref().map(|e| e as _),
            None => level.source(),
        };
    }
    None
}

impl Download {
    /// Starts the download and waits for the first response, so a missing blob or a
    /// refused credential fails here, before anything is unpacked.
    pub fn start(
        location: &BlobLocation,
        transfer: &Transfer,
        cancel: &AtomicBool,
    ) -> Result<Download, SnapshotError> {
        let connection = Connection::open(location, transfer)?;
        let shown = connection.shown.clone();
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (first_tx, first_rx) = oneshot::channel();
        let transfer = *transfer;
        let stop = Arc::new(AtomicBool::new(cancel.load(Ordering::Relaxed)));
        let stop_pump = Arc::clone(&stop);
        let runtime = super::runtime(&shown)?;
        std::thread::Builder::new()
            .name("snapshot-download".into())
            .spawn(move || runtime.block_on(pump(connection, transfer, tx, first_tx, stop_pump)))
            .map_err(|e| SnapshotError::Unavailable {
                location: shown.clone(),
                detail: format!("cannot start the download thread: {e}"),
            })?;
        let total = first_rx
            .blocking_recv()
            .map_err(|_| SnapshotError::Unavailable {
                location: shown,
                detail: "the download stopped before it began".into(),
            })??;
        Ok(Download {
            chunks: rx,
            current: Bytes::new(),
            failure: Arc::new(Mutex::new(None)),
            cancel: stop,
            total,
        })
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(error)) => {
                    if let Ok(mut slot) = self.failure.lock() {
                        *slot = Some(error);
                    }
                    return Err(io::Error::other(Upstream(Arc::clone(&self.failure))));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.chunks.close();
    }
}

async fn pump(
    connection: Connection,
    transfer: Transfer,
    tx: mpsc::Sender<Result<Bytes, SnapshotError>>,
    first: oneshot::Sender<Result<u64, SnapshotError>>,
    stop: Arc<AtomicBool>,
) {
    let mut first = Some(first);
    let fail = |first: &mut Option<oneshot::Sender<_>>, error: SnapshotError| {
        let tx = tx.clone();
        let first = first.take();
        async move {
            match first {
                Some(first) => drop(first.send(Err(error))),
                None => drop(tx.send(Err(error)).await),
            }
        }
    };
    let started = Instant::now();
    let mut offset: u64 = 0;
    let mut total: Option<u64> = None;
    let mut etag: Option<Etag> = None;
    let mut attempt: u32 = 0;
    let (parallel, partition) = if transfer.parallelism > 1 {
        (transfer.parallelism, transfer.block_size)
    } else {
        (1, WHOLE_BLOB)
    };
    loop {
        let options = BlobClientDownloadOptions {
            range: (offset > 0).then(|| (offset..).into()),
            if_match: etag.clone(),
            parallel: Some(nonzero(parallel)),
            partition_size: Some(nonzero(partition)),
            ..Default::default()
        };
        let why = match connection.client.download(Some(options)).await {
            Ok(response) => {
                if total.is_none() {
                    let size = blob_size(&response.headers)
                        .or(response.properties.content_length)
                        .unwrap_or(0);
                    total = Some(size);
                    etag = response.properties.etag.clone();
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(size));
                    }
                }
                let mut body = response.body;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match tokio::time::timeout(transfer.stall_timeout, body.next()).await {
                        Ok(Some(Ok(bytes))) => {
                            offset += bytes.len() as u64;
                            attempt = 0;
                            if tx.send(Ok(bytes)).await.is_err() {
                                return;
                            }
                        }
                        Ok(Some(Err(error))) => {
                            break connection.redact(&crate::azure::describe(&error));
                        }
                        Ok(None) if offset >= total.unwrap_or(0) => return,
                        Ok(None) => {
                            break format!(
                                "the connection ended at byte {offset} of {}",
                                total.unwrap_or(0)
                            );
                        }
                        Err(_) => {
                            break format!(
                                "no data for {:.1}s",
                                transfer.stall_timeout.as_secs_f64()
                            );
                        }
                    }
                }
            }
            Err(error) => match connection.classify(&error) {
                Classified::Permanent(snapshot_error) => {
                    return fail(&mut first, snapshot_error).await;
                }
                Classified::Transient(detail) => detail,
            },
        };
        attempt += 1;
        let delay = backoff(attempt);
        if started.elapsed() + delay > transfer.retry_budget {
            let error = SnapshotError::Unavailable {
                location: connection.shown.clone(),
                detail: format!(
                    "gave up after {:.1}s of retries (--snapshot-retry-budget {}): {why}",
                    started.elapsed().as_secs_f64(),
                    humantime::format_duration(transfer.retry_budget)
                ),
            };
            return fail(&mut first, error).await;
        }
        tracing::warn!(
            at_byte = offset,
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            "snapshot download interrupted ({why}); resuming"
        );
        tokio::time::sleep(delay).await;
    }
}

/// 0.5s, 1s, 2s, 4s, then 8s between attempts.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64 << attempt.saturating_sub(1).min(4))
}

/// The blob's full size from `Content-Range: bytes 0-99/1234`.
fn blob_size(headers: &azure_core::http::headers::Headers) -> Option<u64> {
    let range = headers.get_optional_str(&"content-range".into())?;
    range.rsplit_once('/')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_levels_off() {
        let delays: Vec<u64> = (1..=7).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(delays, vec![500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }

    #[test]
    fn the_failure_is_found_under_layers_of_wrapping() {
        let slot = Arc::new(Mutex::new(Some(SnapshotError::Cancelled)));
        let inner = io::Error::other(Upstream(Arc::clone(&slot)));
        let wrapped = io::Error::other(inner);
        assert!(matches!(
            take_failure(&wrapped),
            Some(SnapshotError::Cancelled)
        ));
        assert!(take_failure(&io::Error::other("plain")).is_none());
    }
}
