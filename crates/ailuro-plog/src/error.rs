//! The one error type of this crate.
//!
//! Every variant names the file it is about and, where it makes sense, the chunk and byte offset
//! and what was expected versus found, so that a user looking at a broken plog knows where.

use std::io;
use std::path::{Path, PathBuf};

/// Errors from writing or reading plugin logs.
#[derive(Debug, thiserror::Error)]
pub enum PlogError {
    /// An I/O operation on the file failed (other than "not found" on open, see [`Self::NotFound`]).
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What we were doing ("open", "read", "write", ...).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file to read does not exist.
    #[error("plugin log {path} does not exist")]
    NotFound {
        /// The file concerned.
        path: PathBuf,
    },
    /// The file to create exists and overwriting was not requested.
    #[error("{path} already exists; refusing to overwrite it (overwrite must be requested explicitly)")]
    AlreadyExists {
        /// The file concerned.
        path: PathBuf,
    },
    /// The file does not start with the plog magic: it is not a plugin log at all.
    #[error("{path} is not an Ailuro plugin log: expected magic \"AILUROPL\", found \"{found}\"")]
    BadMagic {
        /// The file concerned.
        path: PathBuf,
        /// The bytes found (printable rendering).
        found: String,
    },
    /// The format version is newer than this build understands.
    #[error(
        "{path}: plugin log format version {found} is newer than this build supports (up to {supported}); \
         the file was written by a newer version of Ailuro"
    )]
    NewerVersion {
        /// The file concerned.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// The file ends inside a structure that must be complete (only the header: a cut anywhere
    /// later makes an *incomplete* file, which is not an error).
    #[error("{path}: truncated {what} at offset {offset}: {detail}")]
    Truncated {
        /// The file concerned.
        path: PathBuf,
        /// Which structure was cut.
        what: String,
        /// File offset where the structure starts.
        offset: u64,
        /// Expected versus found sizes.
        detail: String,
    },
    /// A structure is internally inconsistent.
    #[error("{path}: corrupt {what} at offset {offset}: {detail}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// Which structure ("header", "chunk 12", "trailer", ...).
        what: String,
        /// File offset where the structure starts.
        offset: u64,
        /// What exactly is wrong.
        detail: String,
    },
    /// A chunk (its header or its payload) fails its checksum.
    #[error("{path}: chunk {chunk} at offset {offset} fails its checksum (the file is corrupt)")]
    ChunkChecksum {
        /// The file concerned.
        path: PathBuf,
        /// Chunk index (0-based, in file order).
        chunk: u64,
        /// File offset of the chunk header.
        offset: u64,
    },
    /// A value type tag this build does not know.
    #[error(
        "{path}: unsupported value type {tag} in chunk {chunk} (offset {offset}), record {record}; \
         the file was written by a newer version of Ailuro"
    )]
    UnsupportedValue {
        /// The file concerned.
        path: PathBuf,
        /// The tag byte found.
        tag: u8,
        /// Chunk index.
        chunk: u64,
        /// File offset of the chunk header.
        offset: u64,
        /// Record index within the chunk.
        record: u64,
    },
    /// Reading in icount order ([`crate::SortedRecords`]) would need more memory than its limit:
    /// too many chunks overlap in icount (records written very far out of order).
    #[error(
        "{path}: records are too far out of icount order to sort within {limit} bytes of buffered chunks \
         (at instruction {icount}); read them in file order instead"
    )]
    SortLimit {
        /// The file concerned.
        path: PathBuf,
        /// The limit (uncompressed chunk bytes held at once).
        limit: u64,
        /// icount of the record being sorted when the limit was reached.
        icount: u64,
    },
    /// The caller asked for something that cannot be written (API misuse: reserved or
    /// duplicate field name, over-long string, ...). Nothing was written.
    #[error("{path}: invalid {what}: {detail}")]
    InvalidInput {
        /// The file being written.
        path: PathBuf,
        /// What was being written ("record", "header", ...).
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
}

impl PlogError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io { op, path: path.to_path_buf(), source }
    }

    /// Opening an existing file: "not found" gets its own message.
    pub(crate) fn open(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Self::NotFound { path: path.to_path_buf() }
        } else {
            Self::io("open", path, source)
        }
    }

    pub(crate) fn corrupt(path: &Path, what: impl Into<String>, offset: u64, detail: impl Into<String>) -> Self {
        Self::Corrupt { path: path.to_path_buf(), what: what.into(), offset, detail: detail.into() }
    }

    pub(crate) fn truncated(path: &Path, what: impl Into<String>, offset: u64, detail: impl Into<String>) -> Self {
        Self::Truncated { path: path.to_path_buf(), what: what.into(), offset, detail: detail.into() }
    }

    pub(crate) fn invalid(path: &Path, what: &'static str, detail: impl Into<String>) -> Self {
        Self::InvalidInput { path: path.to_path_buf(), what, detail: detail.into() }
    }
}

/// Result with [`PlogError`].
pub type Result<T, E = PlogError> = std::result::Result<T, E>;
