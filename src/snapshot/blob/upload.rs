//! Writing a blob (`publish`, large return values) through the SDK's managed upload,
//! which splits large bodies into blocks.

use azure_core::http::RequestContent;

use super::{Classified, Connection};
use crate::snapshot::Transfer;
use crate::snapshot::error::SnapshotError;
use crate::snapshot::source::BlobLocation;

/// Uploads `bytes` to `location`, replacing what is there; blocks until done.
pub fn upload(
    location: &BlobLocation,
    bytes: Vec<u8>,
    transfer: &Transfer,
) -> Result<(), SnapshotError> {
    let connection = Connection::open(location, transfer)?;
    let runtime = super::runtime(&connection.shown)?;
    let content = RequestContent::from(bytes);
    runtime
        .block_on(connection.client.upload(content, None))
        .map(drop)
        .map_err(|error| match connection.classify(&error) {
            // A write only gets 404 when the container is missing.
            Classified::Permanent(SnapshotError::NotFound { location, .. }) => SnapshotError::NotFound {
                location,
                detail: "its container does not exist; create it first (az storage container create --name CONTAINER)".into(),
            },
            Classified::Permanent(error) => error,
            Classified::Transient(detail) => SnapshotError::Unavailable {
                location: connection.shown.clone(),
                detail,
            },
        })
}
