//! The child's return value: JSON the child writes to the return file, which Airflow pushes
//! as the task's XCom `return_value`.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::error::AgentError;

/// A return value larger than this cannot fit in the record; it is only validated (streamed,
/// never held in memory) and reported as truncated.
pub const INLINE_LIMIT: u64 = super::RECORD_BUDGET as u64;

#[derive(Debug, Clone, PartialEq)]
pub enum ReturnValue {
    /// The child wrote no return file.
    Absent,
    Inline(Value),
    /// Valid JSON, but too large for the record.
    TooLarge {
        bytes: u64,
    },
}

/// Reads and validates the return file the child left behind.
pub fn read(path: &Path) -> Result<ReturnValue, AgentError> {
    let unreadable = |source: io::Error| AgentError::ReturnValueUnreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReturnValue::Absent),
        Err(e) => return Err(unreadable(e)),
    };
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(unreadable(io::Error::other("not a regular file")));
    }
    let invalid = |e: serde_json::Error| AgentError::ReturnValueInvalid {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    if metadata.len() > INLINE_LIMIT {
        let mut stream = serde_json::Deserializer::from_reader(BufReader::new(file));
        IgnoredAny::deserialize(&mut stream).map_err(invalid)?;
        stream.end().map_err(invalid)?;
        return Ok(ReturnValue::TooLarge {
            bytes: metadata.len(),
        });
    }
    let value = serde_json::from_reader(BufReader::new(file)).map_err(invalid)?;
    Ok(ReturnValue::Inline(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("return.json");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn a_missing_file_is_no_return_value() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read(&dir.path().join("nope.json")).unwrap(),
            ReturnValue::Absent
        );
    }

    #[test]
    fn small_json_is_inlined() {
        let (_dir, path) = write(br#"{"rows": 42, "ok": true}"#);
        assert_eq!(
            read(&path).unwrap(),
            ReturnValue::Inline(serde_json::json!({"rows": 42, "ok": true}))
        );
    }

    #[test]
    fn large_json_is_validated_and_reported_by_size() {
        let big = format!("[{}]", vec!["\"abcdefgh\""; 10_000].join(","));
        let (_dir, path) = write(big.as_bytes());
        assert_eq!(
            read(&path).unwrap(),
            ReturnValue::TooLarge {
                bytes: big.len() as u64
            }
        );
    }

    #[test]
    fn invalid_json_names_the_file_and_the_problem() {
        for content in [&b"{not json"[..], b"", b"{} trailing", &[0xff, 0xfe]] {
            let (_dir, path) = write(content);
            let err = read(&path).unwrap_err();
            assert_eq!(err.disposition().kind, "return_value_invalid");
            assert!(err.to_string().contains("return.json"), "{err}");
        }
        let big_and_broken = format!("[{}", vec!["1"; 5_000].join(","));
        let (_dir, path) = write(big_and_broken.as_bytes());
        assert_eq!(
            read(&path).unwrap_err().disposition().kind,
            "return_value_invalid"
        );
    }
}
