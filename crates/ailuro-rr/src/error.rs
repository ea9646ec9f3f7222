//! The one error type of this crate.
//!
//! Every variant names the file it is about and, where it makes sense, the byte offset and what was
//! expected versus found, so that a user looking at a broken recording knows which file to blame.

use std::io;
use std::path::{Path, PathBuf};

use crate::Arch;

/// Errors from reading or writing recordings, snapshots and `.rr` containers.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// An I/O operation on a file failed (other than "not found" on open, see [`Self::NotFound`]).
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What we were doing ("open", "read", "write", "rename", ...).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file that should exist does not.
    #[error("{what} {path} does not exist")]
    NotFound {
        /// Which kind of file ("snapshot", "nondet log", ".rr archive").
        what: &'static str,
        /// The file concerned.
        path: PathBuf,
    },
    /// A file we were asked to create already exists and overwriting was not requested.
    #[error("{path} already exists; refusing to overwrite it (overwrite must be requested explicitly{hint})")]
    AlreadyExists {
        /// The file concerned.
        path: PathBuf,
        /// How to ask for overwriting in the current context (e.g. ", use --force").
        hint: &'static str,
    },
    /// The file does not start with the expected magic: it is not a file of this kind at all.
    #[error("{path} is not {what}: expected magic \"{expected}\", found \"{found}\"")]
    BadMagic {
        /// The file concerned.
        path: PathBuf,
        /// What the file should have been ("an Ailuro nondet log", ...).
        what: &'static str,
        /// The magic we expected.
        expected: String,
        /// The bytes we found (lossily printed).
        found: String,
    },
    /// A file cannot be created at this path: a directory or special file is in the way, or a
    /// symbolic link that may only be replaced on explicit request.
    #[error("cannot create {path}: {detail}")]
    BadTarget {
        /// The path concerned.
        path: PathBuf,
        /// What is in the way.
        detail: String,
    },
    /// The file's format version is newer than this build understands.
    #[error(
        "{path}: {what} format version {found} is newer than this build supports (up to {supported}); \
         the file was written by a newer version of Ailuro"
    )]
    NewerVersion {
        /// The file concerned.
        path: PathBuf,
        /// Which format ("nondet log", "snapshot").
        what: &'static str,
        /// Version found in the file.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// The file ends before a structure that must be complete.
    #[error("{path}: truncated {what} at offset {offset}: {detail}")]
    Truncated {
        /// The file concerned.
        path: PathBuf,
        /// Which structure was cut ("log header", "snapshot section CPU", ...).
        what: String,
        /// File offset where the structure starts.
        offset: u64,
        /// Expected versus found sizes.
        detail: String,
    },
    /// A structure is internally inconsistent or fails its checksum.
    #[error("{path}: corrupt {what} at offset {offset}: {detail}")]
    Corrupt {
        /// The file concerned.
        path: PathBuf,
        /// Which structure ("log header", "chunk 12", "snapshot section RAMP", ...).
        what: String,
        /// File offset where the structure starts.
        offset: u64,
        /// What exactly is wrong.
        detail: String,
    },
    /// A log chunk failed its checksum.
    #[error("{path}: chunk {chunk} at offset {offset} fails its checksum (the log is corrupt)")]
    ChunkChecksum {
        /// The file concerned.
        path: PathBuf,
        /// Chunk index (0-based).
        chunk: u64,
        /// File offset of the chunk header.
        offset: u64,
    },
    /// An event kind this build does not know.
    #[error(
        "{path}: unsupported event kind {kind} in chunk {chunk} (offset {offset}); \
         the file was written by a newer version of Ailuro"
    )]
    UnsupportedEventKind {
        /// The file concerned.
        path: PathBuf,
        /// The kind byte found.
        kind: u8,
        /// Chunk index (0-based).
        chunk: u64,
        /// File offset of the chunk header.
        offset: u64,
    },
    /// An architecture tag this build does not know.
    #[error("{path}: unknown guest architecture tag {tag}; the file was written by a newer version of Ailuro")]
    UnknownArch {
        /// The file concerned.
        path: PathBuf,
        /// The tag byte found.
        tag: u8,
    },
    /// The recording is for another guest architecture.
    #[error("{path} is a recording of a {found} guest, but this is the {expected} emulator")]
    WrongArch {
        /// The file concerned.
        path: PathBuf,
        /// Architecture the caller can run.
        expected: Arch,
        /// Architecture recorded in the file.
        found: Arch,
    },
    /// The snapshot and the log do not belong together.
    #[error("{log} does not belong to {snapshot}: {detail}")]
    Mismatch {
        /// The snapshot file.
        snapshot: PathBuf,
        /// The log file.
        log: PathBuf,
        /// What differs.
        detail: String,
    },
    /// The recording is incomplete and the operation requires a complete one.
    #[error(
        "{path} is incomplete (the recording was cut short at instruction {last_icount}, \
         no end-of-recording trailer){hint}"
    )]
    Incomplete {
        /// The log file.
        path: PathBuf,
        /// Instruction count of the last complete chunk.
        last_icount: u64,
        /// How to proceed anyway.
        hint: &'static str,
    },
    /// A `.rr` container is corrupt, truncated or holds unexpected members.
    #[error("{path}: {detail}")]
    BadArchive {
        /// The `.rr` file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The caller passed something that cannot be written (API misuse, e.g. decreasing icount).
    #[error("invalid {what}: {detail}")]
    InvalidInput {
        /// What was being written.
        what: &'static str,
        /// Why it is invalid.
        detail: String,
    },
}

impl RecordingError {
    /// Wrap an I/O error with the operation and file; "not found" becomes [`Self::NotFound`]
    /// when opening, so that the message is about the missing file rather than errno.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io { op, path: path.to_path_buf(), source }
    }

    /// Like [`Self::io`], but for opening an existing file of kind `what`.
    pub(crate) fn open(what: &'static str, path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound {
            Self::NotFound { what, path: path.to_path_buf() }
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
}

/// Alias used by the log API: the reader and writer report [`RecordingError`]s.
pub type LogError = RecordingError;

/// Result with [`RecordingError`].
pub type Result<T, E = RecordingError> = std::result::Result<T, E>;
