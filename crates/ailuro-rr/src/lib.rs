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
    read_snapshot, read_snapshot_header, verify_snapshot, write_snapshot, Snapshot, SnapshotHeader, SnapshotInfo,
    MAX_BLOB_LEN, MAX_CONFIG_LEN, MAX_RAM_SIZE, SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
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
/// A symbolic link counts as existing even if it is dangling.
pub fn recording_exists(name: &Path) -> bool {
    let (s, l) = recording_paths(name);
    s.symlink_metadata().is_ok() || l.symlink_metadata().is_ok()
}

/// Error ([`RecordingError::AlreadyExists`]) if either file of recording `name` exists; for
/// `begin_record` without an explicit overwrite.
pub fn ensure_recording_absent(name: &Path) -> Result<()> {
    let (s, l) = recording_paths(name);
    for p in [s, l] {
        if p.symlink_metadata().is_ok() {
            return Err(RecordingError::AlreadyExists { path: p, hint: "" });
        }
    }
    Ok(())
}

/// Check, before anything is written, that both files of recording `name` can be created: the
/// directory exists and is writable (a temporary file is created and removed there), and each
/// name is free or, with `overwrite`, holds a regular file or a symbolic link (which will be
/// replaced itself, never the file it points to). A directory or special file at either name is
/// refused even with `overwrite`, as is a symbolic link (even a dangling one) without it.
///
/// The run loop calls this before taking the snapshot, so that a recording that cannot be created
/// fails before its snapshot is published. [`create_recording`] does it itself.
pub fn check_recording_targets(name: &Path, overwrite: bool) -> Result<()> {
    let (snp, log) = recording_paths(name);
    for p in [&snp, &log] {
        fsutil::check_target(p, overwrite, "")?;
    }
    // Writability: the only reliable test is to create a file (permissions, read-only mounts,
    // ACLs, quotas on inodes). It also clears stale temporary files of dead processes.
    drop(fsutil::TempFile::new_for(&snp)?);
    Ok(())
}

/// Create recording `name` all-or-nothing: check both targets ([`check_recording_targets`]),
/// write the snapshot, then create the log (header only) and return its writer. If creating the
/// log fails, the snapshot this call published is taken back (and, with `overwrite`, the previous
/// snapshot restored), so a failed call never leaves half a recording. The log header's arch,
/// start icount and creator are the snapshot header's; its snapshot hash is that of the snapshot
/// written (`writer.header().snapshot_hash`).
#[allow(clippy::too_many_arguments)]
pub fn create_recording(
    name: &Path,
    header: &SnapshotHeader,
    cpu: &[u8],
    devices: &[u8],
    console: &[u8],
    ram: &ailuro_bus::GuestRam,
    overwrite: bool,
) -> Result<LogWriter> {
    check_recording_targets(name, overwrite)?;
    let (snp, log) = recording_paths(name);
    let (tmp, snapshot_hash) = snapshot::write_snapshot_temp(&snp, header, cpu, devices, console, ram, overwrite)?;
    // Dropping `snp_published` on an error below rolls the snapshot back.
    let (_, snp_published) = tmp.publish_undoable(overwrite, "")?;
    let lh = LogHeader {
        arch: header.arch,
        start_icount: header.start_icount,
        snapshot_hash,
        creator: header.creator.clone(),
    };
    let (writer, log_published) = LogWriter::create_undoable(&log, &lh, overwrite)?;
    snp_published.commit();
    log_published.commit();
    Ok(writer)
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
    check_pair_parts(snp_path, &snapshot.header, &snapshot.file_hash, log)
}

/// [`check_pair`] for a snapshot known by its header and whole-file hash (as from
/// [`verify_snapshot`]).
pub fn check_pair_parts(snp_path: &Path, header: &SnapshotHeader, file_hash: &[u8; 32], log: &LogReader) -> Result<()> {
    let mismatch = |detail: String| RecordingError::Mismatch {
        snapshot: snp_path.to_path_buf(),
        log: log.path().to_path_buf(),
        detail,
    };
    let lh = log.header();
    if lh.arch != header.arch {
        return Err(mismatch(format!("log is for {}, snapshot for {}", lh.arch, header.arch)));
    }
    if lh.start_icount != header.start_icount {
        return Err(mismatch(format!(
            "log starts at instruction {}, snapshot was taken at {}",
            lh.start_icount, header.start_icount
        )));
    }
    if &lh.snapshot_hash != file_hash {
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

    fn snap_header() -> SnapshotHeader {
        SnapshotHeader {
            arch: Arch::I386,
            ram_base: 0,
            ram_size: 64 << 10,
            start_icount: 5,
            machine_config: vec![],
            creator: "lib test".into(),
        }
    }

    #[cfg(unix)]
    #[test]
    fn check_recording_targets_refuses_before_anything_is_written() {
        let d = tempfile::TempDir::new().unwrap();
        let name = d.path().join("rec");
        let (snp, log) = recording_paths(&name);
        check_recording_targets(&name, false).unwrap();
        // A dangling symbolic link at the log path: refused without overwrite (before the
        // snapshot is written), replaced itself with it.
        std::os::unix::fs::symlink(d.path().join("nowhere"), &log).unwrap();
        assert!(recording_exists(&name));
        assert!(ensure_recording_absent(&name).is_err());
        let e = check_recording_targets(&name, false).err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let ram = ailuro_bus::GuestRam::new(0, 64 << 10).unwrap();
        let e = create_recording(&name, &snap_header(), b"c", b"d", b"e", &ram, false).err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(!snp.exists(), "no orphan snapshot");
        check_recording_targets(&name, true).unwrap();
        // A directory at the log path: refused even with overwrite.
        std::fs::remove_file(&log).unwrap();
        std::fs::create_dir(&log).unwrap();
        for ow in [false, true] {
            let e = check_recording_targets(&name, ow).err().unwrap();
            assert!(e.to_string().contains("is a directory"), "{e}");
            assert!(create_recording(&name, &snap_header(), b"c", b"d", b"e", &ram, ow).is_err());
            assert!(!snp.exists(), "no orphan snapshot");
        }
        // A missing directory.
        let e = check_recording_targets(&d.path().join("no/such/rec"), true).err().unwrap();
        assert!(matches!(e, RecordingError::NotFound { what: "directory", .. }), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "only the directory made above");
    }

    #[test]
    fn create_recording_writes_a_replayable_pair() {
        let d = tempfile::TempDir::new().unwrap();
        let name = d.path().join("rec");
        let mut ram = ailuro_bus::GuestRam::new(0, 64 << 10).unwrap();
        ram.write(0x100, b"state").unwrap();
        let mut w = create_recording(&name, &snap_header(), b"c", b"d", b"e", &ram, false).unwrap();
        w.append(&LogEntry { icount: 7, event: Event::Reset }).unwrap();
        w.finish(LogEnd { end_icount: 9, reason: EndReason::GuestExit(3), final_state_hash: [0; 32] }).unwrap();
        let rec = open_recording(&name, Some(Arch::I386)).unwrap();
        assert_eq!(rec.log.end_reason().and_then(EndReason::exit_code), Some(3));
        assert_eq!(rec.log.header().creator, "lib test");
        let e = create_recording(&name, &snap_header(), b"c", b"d", b"e", &ram, false).err().unwrap();
        assert!(matches!(e, RecordingError::AlreadyExists { .. }), "{e}");
        // Overwriting replaces both.
        let w = create_recording(&name, &snap_header(), b"x", b"d", b"e", &ram, true).unwrap();
        drop(w);
        let rec = open_recording(&name, None).unwrap();
        assert_eq!(rec.snapshot.cpu, b"x");
        assert!(!rec.log.is_complete());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2, "no temporary files");
    }
}
