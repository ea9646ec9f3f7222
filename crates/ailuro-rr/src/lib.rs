//! Record/replay file formats of Ailuro. Byte-level documentation: `docs/FORMATS.md`.
//!
//! A recording `NAME` is two files (see [`recording_paths`]):
//!
//! * `NAME-rr-snp`, the snapshot taken at `begin_record`: [`write_snapshot`], [`read_snapshot`],
//!   [`read_snapshot_header`];
//! * `NAME-rr-nondet.log`, the non-deterministic inputs keyed by instruction count: [`LogWriter`]
//!   and [`LogReader`], carrying [`LogEntry`]s of [`Event`]s.
//!
//! `rrpack`/`rrunpack` (and [`pack`]/[`unpack`]) bundle both into a PANDA-compatible `NAME.rr`.
//!
//! # Run-loop usage
//!
//! ```no_run
//! # use ailuro_rr::*;
//! # use std::path::Path;
//! # fn demo(ram: &ailuro_bus::GuestRam, cpu_state: &[u8], devs: &[u8], con: &[u8]) -> Result<(), RecordingError> {
//! let (snp, log) = recording_paths(Path::new("rec/boot"));
//! let hdr = SnapshotHeader { arch: Arch::I386, ram_base: 0, ram_size: ram.size(), start_icount: 0,
//!                            machine_config: vec![], creator: "ailuro".into() };
//! let snapshot_hash = write_snapshot(&snp, &hdr, cpu_state, devs, con, ram, false)?;
//! let mut w = LogWriter::create(&log, &LogHeader { arch: Arch::I386, start_icount: 0, snapshot_hash,
//!                                                 creator: "ailuro".into() }, false)?;
//! w.append(&LogEntry { icount: 10, event: Event::IoRead { port: 0x3f8, size: 1, value: 0x41 } })?;
//! w.finish(LogEnd { end_icount: 100, reason: EndReason::EndRecord, final_state_hash: [0; 32] })?;
//!
//! let mut rec = open_recording(Path::new("rec/boot"), Some(Arch::I386))?;
//! while let Some(e) = rec.log.next_entry()? { let _ = e; }
//! # Ok(()) }
//! ```
//!
//! Every failure is a [`RecordingError`] naming the file (and offset/chunk where relevant);
//! nothing in this crate panics on bad input.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod event;
mod fsutil;
mod log;
mod pack;
mod snapshot;

use std::fmt;
use std::path::{Path, PathBuf};

pub use error::{LogError, RecordingError, Result};
pub use event::{Event, LogEntry, MAX_EVENT_DATA};
pub use log::{
    ChunkInfo, EndReason, KindStats, LogEnd, LogHeader, LogReader, LogTrailer, LogWriter, DEFAULT_CHUNK_SIZE,
    LOG_MAGIC, LOG_VERSION, MAX_CREATOR_LEN,
};
pub use pack::{pack, unpack, PackInfo, PackOptions, UnpackInfo, UnpackOptions, RR_MAGIC};
pub use snapshot::{
    read_snapshot, read_snapshot_header, write_snapshot, Snapshot, SnapshotHeader, MAX_BLOB_LEN, MAX_CONFIG_LEN,
    MAX_RAM_SIZE, SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
};

/// Guest architecture tag stored in snapshot and log headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 32-bit x86 (`ailuro-system-i386`).
    I386,
    /// 64-bit x86 (`ailuro-system-x86_64`).
    X86_64,
    /// 32-bit ARM (`ailuro-system-arm`).
    Arm,
}

impl Arch {
    /// Byte stored in the files.
    pub fn tag(self) -> u8 {
        match self {
            Self::I386 => 1,
            Self::X86_64 => 2,
            Self::Arm => 3,
        }
    }

    /// Inverse of [`Self::tag`]; `None` for tags of newer versions.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::I386),
            2 => Some(Self::X86_64),
            3 => Some(Self::Arm),
            _ => None,
        }
    }

    /// QEMU-style name (`i386`, `x86_64`, `arm`).
    pub fn name(self) -> &'static str {
        match self {
            Self::I386 => "i386",
            Self::X86_64 => "x86_64",
            Self::Arm => "arm",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Suffix of the snapshot file of a recording.
pub const SNAPSHOT_SUFFIX: &str = "-rr-snp";
/// Suffix of the log file of a recording.
pub const LOG_SUFFIX: &str = "-rr-nondet.log";

fn with_suffix(name: &Path, suffix: &str) -> PathBuf {
    let mut s = name.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The two files of recording `name` (which may include directories): `(NAME-rr-snp,
/// NAME-rr-nondet.log)`.
pub fn recording_paths(name: &Path) -> (PathBuf, PathBuf) {
    (with_suffix(name, SNAPSHOT_SUFFIX), with_suffix(name, LOG_SUFFIX))
}

/// Whether either file of recording `name` exists (so that creating it would overwrite something).
pub fn recording_exists(name: &Path) -> bool {
    let (s, l) = recording_paths(name);
    s.exists() || l.exists()
}

/// Error ([`RecordingError::AlreadyExists`]) if either file of recording `name` exists; for
/// `begin_record` without an explicit overwrite.
pub fn ensure_recording_absent(name: &Path) -> Result<()> {
    let (s, l) = recording_paths(name);
    for p in [s, l] {
        if p.exists() {
            return Err(RecordingError::AlreadyExists { path: p, hint: "" });
        }
    }
    Ok(())
}

/// A recording opened for replay: its snapshot (RAM separately) and its log, checked to belong
/// together.
pub struct Recording {
    /// The snapshot blobs and header.
    pub snapshot: Snapshot,
    /// RAM restored from the snapshot.
    pub ram: ailuro_bus::GuestRam,
    /// The log, positioned at its first entry.
    pub log: LogReader,
}

/// Open recording `name` for replay: read the snapshot, open the log, check that they belong
/// together (architecture, start icount, snapshot hash) and, if `expected` is given, that the
/// recording is of that architecture.
pub fn open_recording(name: &Path, expected: Option<Arch>) -> Result<Recording> {
    let (snp, logp) = recording_paths(name);
    // Check the cheap things first so that a wrong-arch recording fails before RAM is loaded.
    let log = LogReader::open(&logp)?;
    if let Some(a) = expected {
        log.expect_arch(a)?;
    }
    let sh = read_snapshot_header(&snp)?;
    if let Some(a) = expected {
        sh.expect_arch(&snp, a)?;
    }
    let (snapshot, ram) = read_snapshot(&snp)?;
    check_pair(&snp, &snapshot, &log)?;
    Ok(Recording { snapshot, ram, log })
}

/// Check that `log` continues `snapshot` (read from `snp_path`).
pub fn check_pair(snp_path: &Path, snapshot: &Snapshot, log: &LogReader) -> Result<()> {
    let mismatch = |detail: String| RecordingError::Mismatch {
        snapshot: snp_path.to_path_buf(),
        log: log.path().to_path_buf(),
        detail,
    };
    let lh = log.header();
    if lh.arch != snapshot.header.arch {
        return Err(mismatch(format!("log is for {}, snapshot for {}", lh.arch, snapshot.header.arch)));
    }
    if lh.start_icount != snapshot.header.start_icount {
        return Err(mismatch(format!(
            "log starts at instruction {}, snapshot was taken at {}",
            lh.start_icount, snapshot.header.start_icount
        )));
    }
    if lh.snapshot_hash != snapshot.file_hash {
        return Err(mismatch("the log was recorded from a different snapshot (hash differs)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ailuro_bus::GuestRam;

    fn record(name: &Path, arch: Arch, snapshot_hash: Option<[u8; 32]>) -> [u8; 32] {
        let (snp, log) = recording_paths(name);
        let ram = GuestRam::new(0, 64 << 10).unwrap();
        let sh = SnapshotHeader {
            arch,
            ram_base: 0,
            ram_size: 64 << 10,
            start_icount: 5,
            machine_config: vec![],
            creator: String::new(),
        };
        let h = write_snapshot(&snp, &sh, b"c", b"d", b"e", &ram, true).unwrap();
        let lh = LogHeader { arch, start_icount: 5, snapshot_hash: snapshot_hash.unwrap_or(h), creator: String::new() };
        let w = LogWriter::create(&log, &lh, true).unwrap();
        w.finish(LogEnd { end_icount: 9, reason: EndReason::Quit, final_state_hash: [0; 32] }).unwrap();
        h
    }

    #[test]
    fn recording_paths_append_suffixes_keeping_directories() {
        let (s, l) = recording_paths(Path::new("dir/sub/name"));
        assert_eq!(s, Path::new("dir/sub/name-rr-snp"));
        assert_eq!(l, Path::new("dir/sub/name-rr-nondet.log"));
        for a in [Arch::I386, Arch::X86_64, Arch::Arm] {
            assert_eq!(Arch::from_tag(a.tag()), Some(a));
        }
        assert_eq!(Arch::from_tag(0), None);
        assert_eq!(Arch::X86_64.to_string(), "x86_64");
    }

    #[test]
    fn open_recording_checks_arch_and_pairing() {
        let d = tempfile::TempDir::new().unwrap();
        let name = d.path().join("rec");
        assert!(!recording_exists(&name));
        ensure_recording_absent(&name).unwrap();
        record(&name, Arch::Arm, None);
        assert!(recording_exists(&name));
        assert!(matches!(ensure_recording_absent(&name), Err(RecordingError::AlreadyExists { .. })));
        let rec = open_recording(&name, Some(Arch::Arm)).unwrap();
        assert_eq!(rec.snapshot.cpu, b"c");
        assert_eq!(rec.ram.size(), 64 << 10);
        assert_eq!(rec.log.instruction_count(), 4);
        let e = open_recording(&name, Some(Arch::I386)).err().unwrap();
        assert!(matches!(e, RecordingError::WrongArch { expected: Arch::I386, found: Arch::Arm, .. }), "{e}");
        record(&name, Arch::Arm, Some([1; 32]));
        let e = open_recording(&name, None).err().unwrap();
        assert!(e.to_string().contains("different snapshot"), "{e}");
    }
}
