//! Streaming uploads to block blobs with bounded memory.
//!
//! The calling thread reads the source block by block and hashes it (sha256, in order);
//! the blocks go up in parallel on a small runtime's workers, each with its Content-MD5
//! (see `content_md5`), at most `parallel` in flight, so memory is about `parallel + 1`
//! blocks whatever the size. A source that fits one block is one Put Blob. The block list
//! is committed last, so a blob appears whole or not at all. Throttling, 5xx and broken
//! connections are retried by the client's policy within the transfer's retry budget.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::sync::Arc;

use azure_core::http::RequestContent;
use azure_storage_blob::models::{
    BlobClientUploadOptions, BlockBlobClientCommitBlockListOptions, BlockLookupList,
};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::snapshot::Transfer;
use crate::snapshot::blob::Connection;
use crate::snapshot::error::SnapshotError;
use crate::snapshot::source::BlobLocation;
use crate::snapshot::stream::hex;

/// Why an upload stopped: reading the source, or the service.
#[derive(Debug)]
pub enum Failure {
    Read(io::Error),
    Remote(SnapshotError),
}

/// What went up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub sha256: String,
    pub bytes: u64,
}

/// Metadata every uploaded blob carries: its sha256, so a reader can check it without the
/// producer's record.
const SHA256_METADATA: &str = "sha256";

pub struct Uploader {
    runtime: Runtime,
    transfer: Transfer,
    block_size: usize,
    parallel: usize,
}

type Staged = JoinHandle<Result<(), azure_core::Error>>;

impl Uploader {
    pub fn new(transfer: Transfer, block_size: usize, parallel: usize) -> io::Result<Uploader> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("upload")
            .enable_all()
            .build()?;
        Ok(Uploader {
            runtime,
            transfer,
            block_size: block_size.max(1),
            parallel: parallel.max(1),
        })
    }

    /// The connection for one blob.
    pub fn connect(&self, location: &BlobLocation) -> Result<Arc<Connection>, SnapshotError> {
        Connection::open(location, &self.transfer).map(Arc::new)
    }

    /// Uploads all `reader` yields as the blob of `connection`; blocks until it is
    /// committed.
    pub fn stream(
        &self,
        connection: &Arc<Connection>,
        reader: &mut dyn Read,
    ) -> Result<Sent, Failure> {
        let mut hasher = Sha256::new();
        let first = read_block(reader, self.block_size).map_err(Failure::Read)?;
        hasher.update(&first);
        if first.len() < self.block_size {
            let sent = Sent {
                bytes: first.len() as u64,
                sha256: hex(&hasher.finalize()),
            };
            self.put_whole(connection, first, &sent.sha256)?;
            return Ok(sent);
        }
        let mut bytes = first.len() as u64;
        let mut pending: VecDeque<Staged> = VecDeque::new();
        let mut ids: Vec<Vec<u8>> = Vec::new();
        let mut block = first;
        let outcome = loop {
            let id = block_id(ids.len());
            pending.push_back(self.stage(connection, id.clone(), block));
            ids.push(id);
            if pending.len() >= self.parallel
                && let Some(oldest) = pending.pop_front()
                && let Err(failure) = self.settle(connection, oldest)
            {
                break Err(failure);
            }
            block = match read_block(reader, self.block_size) {
                Ok(block) => block,
                Err(error) => break Err(Failure::Read(error)),
            };
            if block.is_empty() {
                break Ok(());
            }
            hasher.update(&block);
            bytes += block.len() as u64;
        };
        if let Err(failure) = outcome {
            pending.iter().for_each(JoinHandle::abort);
            return Err(failure);
        }
        while let Some(staged) = pending.pop_front() {
            if let Err(failure) = self.settle(connection, staged) {
                pending.iter().for_each(JoinHandle::abort);
                return Err(failure);
            }
        }
        let sha256 = hex(&hasher.finalize());
        let list = BlockLookupList {
            latest: Some(ids),
            ..Default::default()
        };
        let options = BlockBlobClientCommitBlockListOptions {
            metadata: Some(digest_metadata(&sha256)),
            ..Default::default()
        };
        let client = connection.client.block_blob_client();
        let committed = self.runtime.block_on(async move {
            client
                .commit_block_list(list.try_into()?, Some(options))
                .await
                .map(drop)
        });
        committed.map_err(|error| Failure::Remote(remote(connection, &error)))?;
        Ok(Sent { sha256, bytes })
    }

    /// One Put Blob of a small body whose digest is known.
    pub fn put_whole(
        &self,
        connection: &Arc<Connection>,
        body: Vec<u8>,
        sha256: &str,
    ) -> Result<(), Failure> {
        let handle = self.spawn_put(connection, body, sha256);
        self.settle(connection, handle)
    }

    /// Starts a Put Blob of `body` on the runtime; `settle` waits for it.
    pub fn spawn_put(&self, connection: &Arc<Connection>, body: Vec<u8>, sha256: &str) -> Staged {
        let connection = Arc::clone(connection);
        let options = BlobClientUploadOptions {
            metadata: Some(digest_metadata(sha256)),
            ..Default::default()
        };
        self.runtime.spawn(async move {
            connection
                .client
                .upload(RequestContent::from(body), Some(options))
                .await
                .map(drop)
        })
    }

    fn stage(&self, connection: &Arc<Connection>, id: Vec<u8>, block: Vec<u8>) -> Staged {
        let client = connection.client.block_blob_client();
        self.runtime.spawn(async move {
            let len = block.len() as u64;
            client
                .stage_block(&id, len, RequestContent::from(block), None)
                .await
                .map(drop)
        })
    }

    /// Waits for a started request and explains its failure.
    pub fn settle(&self, connection: &Connection, handle: Staged) -> Result<(), Failure> {
        match self.runtime.block_on(handle) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Failure::Remote(remote(connection, &error))),
            Err(join) => Err(Failure::Remote(SnapshotError::Unavailable {
                location: connection.shown.clone(),
                detail: format!("the upload task failed: {join}"),
            })),
        }
    }
}

fn remote(connection: &Connection, error: &azure_core::Error) -> SnapshotError {
    match connection.failure(error) {
        SnapshotError::Unavailable { location, detail } => SnapshotError::Unavailable {
            location,
            detail: format!("{detail} (after retrying within the retry budget)"),
        },
        other => other,
    }
}

fn digest_metadata(sha256: &str) -> HashMap<String, String> {
    HashMap::from([(SHA256_METADATA.to_string(), sha256.to_string())])
}

/// Block ids must all have the same length within a blob.
fn block_id(index: usize) -> Vec<u8> {
    format!("block-{index:010}").into_bytes()
}

/// Reads up to `size` bytes; fewer only at the end of the source.
pub fn read_block(reader: &mut dyn Read, size: usize) -> io::Result<Vec<u8>> {
    let mut block = Vec::with_capacity(size);
    reader.take(size as u64).read_to_end(&mut block)?;
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_full_until_the_last() {
        let data: Vec<u8> = (0..10u8).collect();
        let mut reader = &data[..];
        assert_eq!(read_block(&mut reader, 4).unwrap(), [0, 1, 2, 3]);
        assert_eq!(read_block(&mut reader, 4).unwrap(), [4, 5, 6, 7]);
        assert_eq!(read_block(&mut reader, 4).unwrap(), [8, 9]);
        assert!(read_block(&mut reader, 4).unwrap().is_empty());
    }

    #[test]
    fn block_ids_have_one_length() {
        assert_eq!(block_id(0).len(), block_id(49_999).len());
        assert_ne!(block_id(1), block_id(10));
    }
}
