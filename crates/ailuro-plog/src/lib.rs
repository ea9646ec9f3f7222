//! The plugin log ("plog") of Ailuro: one compact, versioned file format that every analysis
//! plugin writes its results into during replay, like PANDA's pandalog. Byte-level
//! documentation: `docs/PLOG.md`.
//!
//! Every record is stamped with the program point (`icount`, `pc`, optionally the address space)
//! and names its plugin and kind; its fields are self-describing [`Value`]s, so readers (and
//! `ailuro-plog dump`, which prints JSON lines) need no plugin-specific schema. Records are
//! written into zstd-compressed, BLAKE3-checksummed chunks; a file whose writer crashed is still
//! readable up to its last whole chunk and reports itself incomplete.
//!
//! Records are stored in the order they were emitted, which need not be icount order (plugins
//! report at different times); [`PlogReader::sorted`] reads them by icount.
//!
//! ```no_run
//! use ailuro_plog::{PlogHeader, PlogReader, PlogWriter, PlogError};
//!
//! # fn demo() -> Result<(), PlogError> {
//! let header = PlogHeader::new("ailuro-system-i386 -replay demo").with("recording", "demo").with("plugins", "syscalls");
//! let mut w = PlogWriter::create("demo.plog", &header, false)?;
//! w.record(1_000_123, 0xc100_0000, "syscalls", "syscall")
//!     .asid(0x1234000)
//!     .field("name", "openat")
//!     .field("fd", 3u64)
//!     .list("args", [0xffff_ff9cu64, 0x0804_a000, 0])
//!     .emit()?;
//! w.finish()?;
//!
//! let mut r = PlogReader::open("demo.plog")?;
//! assert!(r.is_complete());
//! r.seek_icount(1_000_000);
//! for rec in r {
//!     let rec = rec?;
//!     println!("{}", rec.to_json());
//! }
//! # Ok(()) }
//! ```
//!
//! Every failure is a [`PlogError`] naming the file (and the chunk and offset where relevant);
//! nothing in this crate panics on bad input.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod format;
mod reader;
mod sorted;
mod value;
mod writer;

pub use error::{PlogError, Result};
pub use format::{
    ChunkInfo, KindStats, PlogHeader, PlogTrailer, DEFAULT_CHUNK_SIZE, MAX_CHUNK_TARGET, MAX_CREATOR_LEN, MAX_DEPTH,
    MAX_HEADER_LEN, MAX_META_ENTRIES, MAX_META_KEY_LEN, MAX_NAME_LEN, MAX_RECORD_LEN, PLOG_MAGIC, PLOG_VERSION,
};
pub use reader::PlogReader;
pub use sorted::{SortedRecords, SORT_BUFFER_LIMIT};
pub use value::{OwnedRecord, Value, ValueRef, RESERVED_KEYS};
pub use writer::{PlogWriter, RecordBuilder};

#[cfg(test)]
mod tests;
