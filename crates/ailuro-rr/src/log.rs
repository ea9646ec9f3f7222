//! The nondet log (`NAME-rr-nondet.log`): header, zstd-compressed checksummed chunks of entries,
//! trailer and footer. Byte layout: docs/FORMATS.md.
//!
//! Crash behaviour: the writer appends whole chunks with a single `write_all`, and writes the
//! trailer and the footer (which is what makes a log "complete") only in [`LogWriter::finish`],
//! after an fsync of everything before it. A log without a valid footer is *incomplete*: it still
//! opens, and reads up to its last whole chunk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::codec::{checksum, show_magic, DecodeError, Put, Reader};
use crate::error::{RecordingError, Result};
use crate::event::{decode_event, kind, Event, EventDecodeError, LogEntry, MAX_EVENT_DATA};
use crate::fsutil::{check_target, Published, TempFile};
use crate::Arch;

/// Magic at offset 0 of a log.
pub const LOG_MAGIC: &[u8; 8] = b"AILUROLG";
/// Log format version written by this build (and the highest it reads).
pub const LOG_VERSION: u32 = 2;
const CHUNK_MAGIC: &[u8; 4] = b"CHNK";
const TRAILER_MAGIC: &[u8; 4] = b"TRLR";
const FOOTER_MAGIC: &[u8; 8] = b"AILUROFT";
/// Fixed part of the header before the creator string.
const HEADER_FIXED: usize = 64;
const HEADER_CHECK: usize = 16;
const MAX_HEADER_LEN: usize = 64 << 10;
/// Longest creator string (bytes).
pub const MAX_CREATOR_LEN: usize = 4096;
const CHUNK_HEADER_LEN: usize = 60;
const FOOTER_LEN: usize = 40;
/// Largest uncompressed chunk a reader accepts (the writer stays far below: target size plus one
/// entry of at most [`MAX_EVENT_DATA`]).
const MAX_CHUNK_RAW: u32 = 64 << 20;
/// Largest compressed chunk a reader accepts (zstd's worst-case expansion of `MAX_CHUNK_RAW`).
const MAX_CHUNK_COMP: u32 = MAX_CHUNK_RAW + (1 << 20);
/// Default uncompressed size at which the writer closes a chunk.
pub const DEFAULT_CHUNK_SIZE: usize = 256 << 10;
const MAX_CHUNK_TARGET: usize = 16 << 20;
const MAX_TRAILER_LEN: u64 = 1 << 30;
const ZSTD_LEVEL: i32 = 3;

/// The log header: which machine and snapshot this log belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHeader {
    /// Guest architecture.
    pub arch: Arch,
    /// Instruction count at `begin_record` (equal to the snapshot's).
    pub start_icount: u64,
    /// BLAKE3 of the complete snapshot file this log continues (as returned by
    /// [`crate::write_snapshot`]); a log cannot be replayed on another snapshot.
    pub snapshot_hash: [u8; 32],
    /// Free-form description of the writer (program, version, command line); at most
    /// [`MAX_CREATOR_LEN`] bytes of UTF-8.
    pub creator: String,
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `end_record` from the monitor.
    EndRecord,
    /// The guest asked to exit (isa-debug-exit) with this status.
    GuestExit(i32),
    /// The guest powered the machine off.
    PowerOff,
    /// The machine was reset and `-no-reboot` ended the run.
    Reset,
    /// The CPU shut down (triple fault). Unlike the other reasons the last event is not a retired
    /// instruction: the faulting instruction did not retire, so a replay must reproduce the shutdown
    /// at the end instruction count before it compares the final state.
    Shutdown,
    /// The user quit the emulator.
    Quit,
    /// The emulator stopped on an error.
    Error,
    /// A reason written by a newer version (tag byte, code); kept so that old readers can still
    /// open newer logs.
    Unknown(u8, i32),
}

impl EndReason {
    fn to_tag(self) -> (u8, i32) {
        match self {
            Self::EndRecord => (0, 0),
            Self::GuestExit(c) => (1, c),
            Self::PowerOff => (2, 0),
            Self::Reset => (3, 0),
            Self::Quit => (4, 0),
            Self::Error => (5, 0),
            Self::Shutdown => (6, 0),
            Self::Unknown(t, c) => (t, c),
        }
    }

    /// The guest's exit status, for [`Self::GuestExit`].
    pub fn exit_code(self) -> Option<i32> {
        match self {
            Self::GuestExit(c) => Some(c),
            _ => None,
        }
    }

    fn from_tag(tag: u8, code: i32) -> Self {
        match tag {
            0 => Self::EndRecord,
            1 => Self::GuestExit(code),
            2 => Self::PowerOff,
            3 => Self::Reset,
            4 => Self::Quit,
            5 => Self::Error,
            6 => Self::Shutdown,
            t => Self::Unknown(t, code),
        }
    }
}

/// How the run loop ends a recording; passed to [`LogWriter::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEnd {
    /// Instruction count when recording stopped (total instructions = `end_icount - start_icount`).
    pub end_icount: u64,
    /// Why it stopped.
    pub reason: EndReason,
    /// Hash of the final CPU+RAM state, which replay must reproduce.
    pub final_state_hash: [u8; 32],
}

/// Number and encoded size of the entries of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindStats {
    /// Event kind byte (see [`crate::Event::kind`]).
    pub kind: u8,
    /// Number of entries.
    pub count: u64,
    /// Uncompressed encoded bytes of these entries (delta, kind byte and fields).
    pub bytes: u64,
}

/// Where a chunk is and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// File offset of the chunk header.
    pub offset: u64,
    /// icount of the first entry.
    pub first_icount: u64,
    /// icount of the last entry.
    pub last_icount: u64,
    /// Number of entries.
    pub entries: u32,
}

/// The trailer of a complete log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTrailer {
    /// Instruction count at the end of the recording.
    pub end_icount: u64,
    /// Why the recording ended.
    pub reason: EndReason,
    /// Hash of the final CPU+RAM state.
    pub final_state_hash: [u8; 32],
    /// Total number of entries.
    pub entry_count: u64,
    /// Per-kind statistics (only kinds that occur).
    pub kind_stats: Vec<KindStats>,
    /// Chunk index, in file order.
    pub chunks: Vec<ChunkInfo>,
}

fn encode_header(h: &LogHeader) -> Result<Vec<u8>> {
    if h.creator.len() > MAX_CREATOR_LEN {
        return Err(RecordingError::InvalidInput {
            what: "log header",
            detail: format!("creator string of {} bytes exceeds {MAX_CREATOR_LEN}", h.creator.len()),
        });
    }
    let len = HEADER_FIXED + h.creator.len() + HEADER_CHECK;
    let mut b = Vec::with_capacity(len);
    b.put_bytes(LOG_MAGIC);
    b.put_u32(LOG_VERSION);
    b.put_u32(len as u32);
    b.put_u8(h.arch.tag());
    b.put_bytes(&[0; 3]);
    b.put_u64(h.start_icount);
    b.put_bytes(&h.snapshot_hash);
    b.put_u32(h.creator.len() as u32);
    b.put_bytes(h.creator.as_bytes());
    let c: [u8; HEADER_CHECK] = checksum(&[&b]);
    b.put_bytes(&c);
    debug_assert_eq!(b.len(), len);
    Ok(b)
}

fn encode_chunk_header(
    seq: u32,
    first: u64,
    last: u64,
    entries: u32,
    raw_len: u32,
    payload: &[u8],
) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = Vec::with_capacity(CHUNK_HEADER_LEN);
    b.put_bytes(CHUNK_MAGIC);
    b.put_u32(seq);
    b.put_u64(first);
    b.put_u64(last);
    b.put_u32(entries);
    b.put_u32(raw_len);
    b.put_u32(payload.len() as u32);
    let pc: [u8; 16] = checksum(&[payload]);
    b.put_bytes(&pc);
    let hc: [u8; 8] = checksum(&[&b]);
    b.put_bytes(&hc);
    let mut out = [0u8; CHUNK_HEADER_LEN];
    out.copy_from_slice(&b);
    out
}

/// Decoded chunk header fields.
struct ChunkHeader {
    seq: u32,
    first: u64,
    last: u64,
    entries: u32,
    raw_len: u32,
    comp_len: u32,
    payload_check: [u8; 16],
}

/// Parse a chunk header; `Err(detail)` for a bad checksum or impossible field values.
fn parse_chunk_header(b: &[u8; CHUNK_HEADER_LEN]) -> std::result::Result<ChunkHeader, (bool, String)> {
    if &b[..4] != CHUNK_MAGIC {
        return Err((false, format!("expected chunk magic \"CHNK\", found \"{}\"", show_magic(&b[..4]))));
    }
    let hc: [u8; 8] = checksum(&[&b[..52]]);
    if hc != b[52..60] {
        return Err((true, String::new()));
    }
    let mut r = Reader::new(b);
    let mut f = || -> std::result::Result<ChunkHeader, DecodeError> {
        r.bytes(4)?;
        Ok(ChunkHeader {
            seq: r.u32()?,
            first: r.u64()?,
            last: r.u64()?,
            entries: r.u32()?,
            raw_len: r.u32()?,
            comp_len: r.u32()?,
            payload_check: r.array()?,
        })
    };
    let h = f().map_err(|e| (false, e.to_string()))?;
    if h.first > h.last || h.entries == 0 || h.raw_len > MAX_CHUNK_RAW || h.comp_len > MAX_CHUNK_COMP {
        return Err((
            false,
            format!(
                "impossible chunk header (icounts {}..{}, {} entries, raw {} bytes, compressed {} bytes)",
                h.first, h.last, h.entries, h.raw_len, h.comp_len
            ),
        ));
    }
    Ok(h)
}

fn encode_trailer(t: &LogTrailer) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_bytes(TRAILER_MAGIC);
    b.put_u32(0); // patched below with the trailer length
    b.put_u64(t.end_icount);
    let (tag, code) = t.reason.to_tag();
    b.put_u8(tag);
    b.put_bytes(&[0; 3]);
    b.put_i32(code);
    b.put_bytes(&t.final_state_hash);
    b.put_u64(t.entry_count);
    b.put_u32(t.kind_stats.len() as u32);
    for k in &t.kind_stats {
        b.put_u8(k.kind);
        b.put_u64(k.count);
        b.put_u64(k.bytes);
    }
    b.put_u64(t.chunks.len() as u64);
    for c in &t.chunks {
        b.put_u64(c.offset);
        b.put_u64(c.first_icount);
        b.put_u64(c.last_icount);
        b.put_u32(c.entries);
    }
    let len = b.len() as u32;
    b[4..8].copy_from_slice(&len.to_le_bytes());
    b
}

fn parse_trailer(b: &[u8]) -> std::result::Result<LogTrailer, DecodeError> {
    let mut r = Reader::new(b);
    r.bytes(8)?; // magic and length, checked by the caller
    let end_icount = r.u64()?;
    let tag = r.u8()?;
    r.bytes(3)?;
    let code_at = r.pos();
    let code = r.i32()?;
    // The code is the guest's exit status for GuestExit and 0 for every other known reason
    // (unknown, newer reasons may use it as they like).
    if code != 0
        && matches!(
            EndReason::from_tag(tag, code),
            EndReason::EndRecord
                | EndReason::PowerOff
                | EndReason::Reset
                | EndReason::Quit
                | EndReason::Error
                | EndReason::Shutdown
        )
    {
        return Err(DecodeError::Range {
            at: code_at,
            what: "exit code of a non-exit end reason",
            value: code as u32 as u64,
        });
    }
    let final_state_hash = r.array()?;
    let entry_count = r.u64()?;
    let at = r.pos();
    let nk = r.u32()? as usize;
    if nk > 256 {
        return Err(DecodeError::Range { at, what: "kind statistics count", value: nk as u64 });
    }
    let mut kind_stats = Vec::with_capacity(nk);
    for _ in 0..nk {
        kind_stats.push(KindStats { kind: r.u8()?, count: r.u64()?, bytes: r.u64()? });
    }
    let at = r.pos();
    let nc = r.u64()?;
    if nc > (r.remaining() / 28) as u64 {
        return Err(DecodeError::Range { at, what: "chunk count", value: nc });
    }
    let mut chunks = Vec::with_capacity(nc as usize);
    for _ in 0..nc {
        chunks.push(ChunkInfo { offset: r.u64()?, first_icount: r.u64()?, last_icount: r.u64()?, entries: r.u32()? });
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Range { at: r.pos(), what: "trailing trailer bytes", value: r.remaining() as u64 });
    }
    Ok(LogTrailer {
        end_icount,
        reason: EndReason::from_tag(tag, code),
        final_state_hash,
        entry_count,
        kind_stats,
        chunks,
    })
}

/// The virtual-clock state after `event`, given the state before it: a `Clock` entry sets it, a
/// `Reset` clears it (the machine's clock starts over), anything else keeps it. `Err(previous)`
/// if `event` is a `Clock` entry going back in time.
fn next_clock(last: Option<u64>, event: &Event) -> std::result::Result<Option<u64>, u64> {
    match event {
        Event::Clock { now_ns } => match last {
            Some(prev) if *now_ns < prev => Err(prev),
            _ => Ok(Some(*now_ns)),
        },
        Event::Reset => Ok(None),
        _ => Ok(last),
    }
}

/// The time of a `Clock` event (0 for other kinds; for messages).
fn clock_ns(event: &Event) -> u64 {
    match event {
        Event::Clock { now_ns } => *now_ns,
        _ => 0,
    }
}

/// The footer for a trailer `trailer` at file offset `trailer_off`.
fn encode_footer(trailer_off: u64, trailer: &[u8]) -> [u8; FOOTER_LEN] {
    let mut footer = Vec::with_capacity(FOOTER_LEN);
    footer.put_bytes(FOOTER_MAGIC);
    footer.put_u64(trailer_off);
    footer.put_u64(trailer.len() as u64);
    let c: [u8; 16] = checksum(&[trailer, &footer]);
    footer.put_bytes(&c);
    let mut out = [0u8; FOOTER_LEN];
    out.copy_from_slice(&footer);
    out
}

/// Appends entries to a new log. See the module documentation for crash behaviour.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    header: LogHeader,
    /// Encoded entries of the open chunk.
    buf: Vec<u8>,
    chunk_first: u64,
    chunk_entries: u32,
    /// icount of the last appended entry (or the start icount).
    last_icount: u64,
    /// Virtual time of the last `Clock` entry since the start or the last `Reset` (time never
    /// goes backwards in between).
    last_clock: Option<u64>,
    /// File offset where the next chunk goes (everything before it is whole chunks).
    offset: u64,
    chunks: Vec<ChunkInfo>,
    stats: [(u64, u64); kind::MAX as usize + 1],
    entry_count: u64,
    chunk_target: usize,
    /// Set after a failed write: the file was cut back to `offset`, but further appends could
    /// silently lose entries, so they are refused.
    poisoned: bool,
    finished: bool,
}

impl LogWriter {
    /// Create the log at `path` and write its header. Without `overwrite` an existing file is
    /// never touched ([`RecordingError::AlreadyExists`]; a symbolic link, even a dangling one,
    /// counts as existing). With `overwrite` an existing log is replaced atomically, and a symbolic
    /// link at `path` is replaced itself: nothing is ever written through a link. A directory at
    /// `path` is refused in both cases.
    ///
    /// The header is written to a temporary file first and moved into place once synced, so a log
    /// under its final name always has a whole header.
    pub fn create(path: &Path, header: &LogHeader, overwrite: bool) -> Result<Self> {
        let (w, published) = Self::create_undoable(path, header, overwrite)?;
        published.commit();
        Ok(w)
    }

    /// [`Self::create`], returning the publish so that a caller creating a whole recording can
    /// undo it (see [`crate::create_recording`]).
    pub(crate) fn create_undoable(path: &Path, header: &LogHeader, overwrite: bool) -> Result<(Self, Published)> {
        let hb = encode_header(header)?;
        check_target(path, overwrite, "")?;
        let mut tmp = TempFile::new_for(path)?;
        tmp.file().write_all(&hb).map_err(|e| RecordingError::io("write", path, e))?;
        // publish syncs the file and its directory: the (empty) log is durable at once, so that a
        // crash right after begin_record leaves a readable incomplete log rather than nothing.
        let (mut file, published) = tmp.publish_undoable(overwrite, "")?;
        file.seek(SeekFrom::Start(hb.len() as u64)).map_err(|e| RecordingError::io("seek in", path, e))?;
        let w = Self {
            path: path.to_path_buf(),
            file,
            header: header.clone(),
            buf: Vec::with_capacity(DEFAULT_CHUNK_SIZE + 1024),
            chunk_first: 0,
            chunk_entries: 0,
            last_icount: header.start_icount,
            last_clock: None,
            offset: hb.len() as u64,
            chunks: Vec::new(),
            stats: [(0, 0); kind::MAX as usize + 1],
            entry_count: 0,
            chunk_target: DEFAULT_CHUNK_SIZE,
            poisoned: false,
            finished: false,
        };
        Ok((w, published))
    }

    /// Change the uncompressed size at which chunks are closed (clamped to 1 B..16 MiB). Smaller
    /// chunks lose less on a crash and cost more space.
    pub fn set_chunk_size(&mut self, bytes: usize) {
        self.chunk_target = bytes.clamp(1, MAX_CHUNK_TARGET);
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header written at creation.
    pub fn header(&self) -> &LogHeader {
        &self.header
    }

    /// Number of entries appended so far.
    pub fn entry_count(&self) -> u64 {
        self.entry_count
    }

    /// icount of the last appended entry (the start icount before the first).
    pub fn last_icount(&self) -> u64 {
        self.last_icount
    }

    fn check_usable(&self) -> Result<()> {
        if self.poisoned {
            return Err(RecordingError::InvalidInput {
                what: "log append",
                detail: format!(
                    "an earlier write to {} failed; the log ends at its last whole chunk",
                    self.path.display()
                ),
            });
        }
        Ok(())
    }

    /// Append one entry. Entries must come in nondecreasing icount, not before the start icount.
    /// The entry reaches the file when its chunk is closed (size reached, [`Self::flush`],
    /// [`Self::finish`] or drop).
    pub fn append(&mut self, entry: &LogEntry) -> Result<()> {
        self.check_usable()?;
        if entry.icount < self.last_icount {
            return Err(RecordingError::InvalidInput {
                what: "log entry",
                detail: format!(
                    "icount {} is before the previous entry's {} (entries must be appended in order)",
                    entry.icount, self.last_icount
                ),
            });
        }
        entry.event.validate().map_err(|detail| RecordingError::InvalidInput { what: "log entry", detail })?;
        let clock = next_clock(self.last_clock, &entry.event).map_err(|prev| RecordingError::InvalidInput {
            what: "log entry",
            detail: format!(
                "Clock entry at icount {} goes back in time (to {} ns, the previous Clock entry said {prev} ns)",
                entry.icount,
                clock_ns(&entry.event)
            ),
        })?;
        self.last_clock = clock;
        if self.chunk_entries == 0 {
            self.chunk_first = entry.icount;
            self.last_icount = entry.icount;
        }
        let before = self.buf.len();
        self.buf.put_var(entry.icount - self.last_icount);
        entry.event.encode(&mut self.buf);
        let k = entry.event.kind() as usize;
        self.stats[k].0 += 1;
        self.stats[k].1 += (self.buf.len() - before) as u64;
        self.last_icount = entry.icount;
        self.chunk_entries += 1;
        self.entry_count += 1;
        if self.buf.len() >= self.chunk_target {
            self.write_chunk()?;
        }
        Ok(())
    }

    /// Compress and append the open chunk, if any.
    fn write_chunk(&mut self) -> Result<()> {
        if self.chunk_entries == 0 {
            return Ok(());
        }
        let payload = zstd::bulk::compress(&self.buf, ZSTD_LEVEL)
            .map_err(|e| RecordingError::io("compress chunk for", &self.path, e))?;
        let seq = self.chunks.len() as u32;
        let hdr = encode_chunk_header(
            seq,
            self.chunk_first,
            self.last_icount,
            self.chunk_entries,
            self.buf.len() as u32,
            &payload,
        );
        let mut all = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len());
        all.extend_from_slice(&hdr);
        all.extend_from_slice(&payload);
        // One write of the whole chunk: a kill leaves a prefix of it, which the reader ignores.
        if let Err(e) = self.file.write_all(&all) {
            self.poison();
            return Err(RecordingError::io("write", &self.path, e));
        }
        self.chunks.push(ChunkInfo {
            offset: self.offset,
            first_icount: self.chunk_first,
            last_icount: self.last_icount,
            entries: self.chunk_entries,
        });
        self.offset += all.len() as u64;
        self.buf.clear();
        self.chunk_entries = 0;
        Ok(())
    }

    /// After a failed write, cut the file back to its last whole chunk and refuse further use.
    fn poison(&mut self) {
        self.poisoned = true;
        let _ = self.file.set_len(self.offset);
        let _ = self.file.seek(SeekFrom::Start(self.offset));
    }

    /// Write the open chunk to the file (it survives a kill of the process from then on).
    pub fn flush(&mut self) -> Result<()> {
        self.check_usable()?;
        self.write_chunk()
    }

    /// [`Self::flush`] and fsync (it survives a host crash from then on).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file.sync_data().map_err(|e| RecordingError::io("sync", &self.path, e))
    }

    /// Close the log: write the last chunk, the trailer and the footer, and fsync. Returns the
    /// trailer as written.
    pub fn finish(mut self, end: LogEnd) -> Result<LogTrailer> {
        self.check_usable()?;
        if end.end_icount < self.last_icount {
            return Err(RecordingError::InvalidInput {
                what: "log end",
                detail: format!("end icount {} is before the last entry's {}", end.end_icount, self.last_icount),
            });
        }
        self.write_chunk()?;
        let trailer = LogTrailer {
            end_icount: end.end_icount,
            reason: end.reason,
            final_state_hash: end.final_state_hash,
            entry_count: self.entry_count,
            kind_stats: self
                .stats
                .iter()
                .enumerate()
                .filter(|(_, s)| s.0 > 0)
                .map(|(k, s)| KindStats { kind: k as u8, count: s.0, bytes: s.1 })
                .collect(),
            chunks: self.chunks.clone(),
        };
        let tb = encode_trailer(&trailer);
        let footer = encode_footer(self.offset, &tb);
        // Trailer and chunks are durable before the footer exists: a footer can never vouch for
        // data the disk does not have.
        let r = self
            .file
            .write_all(&tb)
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.file.write_all(&footer))
            .and_then(|()| self.file.sync_all());
        if let Err(e) = r {
            self.poison();
            return Err(RecordingError::io("write trailer of", &self.path, e));
        }
        self.finished = true;
        Ok(trailer)
    }
}

impl Drop for LogWriter {
    /// A writer dropped without [`LogWriter::finish`] (error path, panic unwinding) writes its
    /// open chunk and no trailer: the log stays replayable, as an incomplete recording.
    fn drop(&mut self) {
        if !self.finished && !self.poisoned {
            let _ = self.write_chunk();
        }
    }
}

/// Streams the entries of a log, one decompressed chunk in memory at a time.
pub struct LogReader {
    path: PathBuf,
    file: File,
    file_len: u64,
    version: u32,
    header: LogHeader,
    trailer: Option<LogTrailer>,
    /// File offset of the trailer (complete logs only).
    trailer_off: u64,
    chunks: Vec<ChunkInfo>,
    /// Sum of the chunks' uncompressed payload lengths (the trailer's per-kind byte counts must
    /// add up to it).
    raw_total: u64,
    /// Offset of a partial structure at the end of an incomplete log.
    truncated_at: Option<u64>,
    /// Bytes after the footer of a complete log: (offset, length).
    trailing: Option<(u64, u64)>,
    /// Index of the next chunk to load.
    next_chunk: usize,
    /// Decompressed payload of the current chunk.
    cur: Vec<u8>,
    cur_pos: usize,
    cur_chunk: usize,
    cur_left: u32,
    cur_icount: u64,
    peeked: Option<LogEntry>,
    /// Set when decoding failed; the position is then meaningless, so reading stops.
    failed: bool,
    /// Entries decoded so far, and (count, encoded bytes) per kind: compared with the trailer
    /// when the end of a complete log is reached.
    read_entries: u64,
    read_stats: Vec<(u64, u64)>,
    /// Virtual time of the last `Clock` entry read (see [`next_clock`]).
    last_clock: Option<u64>,
    /// Whether the end-of-log checks against the trailer have passed.
    end_checked: bool,
}

/// What [`LogReader::probe_trailer`] found at a chunk boundary starting with the trailer magic.
enum TrailerProbe {
    /// A valid trailer and footer; the footer ends at `end`.
    Complete { trailer: LogTrailer, end: u64 },
    /// The file ends inside the trailer or footer (or they were lost to a host crash, reading
    /// back as zeros): the recording was cut short while finishing.
    Cut,
}

/// Smallest trailer: no kind statistics, no chunks.
const MIN_TRAILER_LEN: u64 = 76;

impl LogReader {
    /// Open a log and check its header, trailer, footer and chunk structure (not yet the chunk
    /// payloads, which are verified as they are read). An incomplete log opens fine; see
    /// [`Self::is_complete`]. A complete log followed by unrelated bytes also opens, as complete;
    /// see [`Self::trailing_bytes`].
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| RecordingError::open("nondet log", path, e))?;
        let file_len = file.metadata().map_err(|e| RecordingError::io("stat", path, e))?.len();
        let (version, header, header_len) = read_log_header(&mut file, path, file_len)?;
        let mut rd = Self {
            path: path.to_path_buf(),
            file,
            file_len,
            version,
            header,
            trailer: None,
            trailer_off: 0,
            chunks: Vec::new(),
            raw_total: 0,
            truncated_at: None,
            trailing: None,
            next_chunk: 0,
            cur: Vec::new(),
            cur_pos: 0,
            cur_chunk: 0,
            cur_left: 0,
            cur_icount: 0,
            peeked: None,
            failed: false,
            read_entries: 0,
            read_stats: vec![(0, 0); 256],
            last_clock: None,
            end_checked: false,
        };
        // Fast path: a valid footer at the very end of the file says where the trailer is. If
        // there is none (an incomplete log, or bytes appended after a complete one), the chunk
        // walk from the start finds where the chunks end and looks for the trailer there. The
        // walk reads every chunk header either way, so the slow path costs no more.
        match rd.footer_at_end(header_len)? {
            Some((t_off, t)) => {
                rd.trailer = Some(t);
                rd.trailer_off = t_off;
                rd.scan_chunks(header_len, t_off, true)?;
            }
            None => rd.scan_chunks(header_len, file_len, false)?,
        }
        if rd.trailer.is_some() {
            rd.check_trailer()?;
        }
        Ok(rd)
    }

    /// Consistency of the trailer with the chunks found by the walk, checked at open.
    fn check_trailer(&self) -> Result<()> {
        let Some(t) = &self.trailer else {
            return Ok(());
        };
        let bad = |detail: String| RecordingError::corrupt(&self.path, "log trailer", self.trailer_off, detail);
        if let Some(i) = (0..t.chunks.len().max(self.chunks.len())).find(|&i| t.chunks.get(i) != self.chunks.get(i)) {
            return Err(bad(format!("its chunk index disagrees with the chunks in the file from chunk {i} on")));
        }
        let last = self.chunks.last().map_or(self.header.start_icount, |c| c.last_icount);
        if t.end_icount < last || t.end_icount < self.header.start_icount {
            return Err(bad(format!("end icount {} is before the last entry ({last})", t.end_icount)));
        }
        let in_chunks: u64 = self.chunks.iter().map(|c| u64::from(c.entries)).sum();
        if t.entry_count != in_chunks {
            return Err(bad(format!("says {} entries, the chunks hold {in_chunks}", t.entry_count)));
        }
        let mut seen = [false; 256];
        let (mut count, mut bytes) = (0u64, 0u64);
        for k in &t.kind_stats {
            if std::mem::replace(&mut seen[k.kind as usize], true) || k.count == 0 {
                return Err(bad(format!("kind {} listed twice or with no entries in its statistics", k.kind)));
            }
            count = count.saturating_add(k.count);
            bytes = bytes.saturating_add(k.bytes);
        }
        if count != t.entry_count || bytes != self.raw_total {
            return Err(bad(format!(
                "per-kind statistics add up to {count} entries of {bytes} bytes, the chunks hold {} entries \
                 of {} bytes",
                t.entry_count, self.raw_total
            )));
        }
        Ok(())
    }

    /// A valid footer at the end of the file, with its trailer: `Some((trailer offset, trailer))`.
    /// Anything else is `None` (the chunk walk then decides what the end of the file is).
    fn footer_at_end(&mut self, header_len: u64) -> Result<Option<(u64, LogTrailer)>> {
        let path = self.path.clone();
        let file_len = self.file_len;
        if file_len < header_len + MIN_TRAILER_LEN + FOOTER_LEN as u64 {
            return Ok(None);
        }
        let foot_off = file_len - FOOTER_LEN as u64;
        let mut f = [0u8; FOOTER_LEN];
        read_at(&mut self.file, &path, foot_off, &mut f)?;
        if &f[..8] != FOOTER_MAGIC {
            return Ok(None);
        }
        let t_off = u64::from_le_bytes(f[8..16].try_into().unwrap_or_default());
        let t_len = u64::from_le_bytes(f[16..24].try_into().unwrap_or_default());
        if t_off < header_len || t_off.checked_add(t_len) != Some(foot_off) {
            return Ok(None);
        }
        match self.probe_trailer(t_off) {
            Ok(TrailerProbe::Complete { trailer, end }) if end == file_len => Ok(Some((t_off, trailer))),
            _ => Ok(None),
        }
    }

    /// At `pos`, a chunk boundary where the trailer magic (or a prefix of it, at the end of the
    /// file) was found: read and verify the trailer and the footer after it.
    fn probe_trailer(&mut self, pos: u64) -> Result<TrailerProbe> {
        let path = self.path.clone();
        let file_len = self.file_len;
        let rem = file_len - pos;
        let bad = |detail: String| RecordingError::corrupt(&path, "log trailer", pos, detail);
        if rem < 8 {
            return Ok(TrailerProbe::Cut);
        }
        let mut head = [0u8; 8];
        read_at(&mut self.file, &path, pos, &mut head)?;
        if &head[..4] != TRAILER_MAGIC {
            return Err(bad(format!("expected trailer magic \"TRLR\", found \"{}\"", show_magic(&head[..4]))));
        }
        let t_len = u64::from(u32::from_le_bytes(head[4..8].try_into().unwrap_or_default()));
        if !(MIN_TRAILER_LEN..=MAX_TRAILER_LEN).contains(&t_len) {
            return Err(bad(format!("impossible trailer length {t_len}")));
        }
        if rem < t_len + FOOTER_LEN as u64 {
            // The file ends inside the trailer or the footer: cut short while finishing. Unless
            // the length field itself is damaged: the trailer's own counts, where present, must
            // agree with it (otherwise a single flipped bit there would pass for a cut).
            if rem >= 68 {
                let mut k = [0u8; 4];
                read_at(&mut self.file, &path, pos + 64, &mut k)?;
                let k = u64::from(u32::from_le_bytes(k));
                let n_at = 68 + 17 * k;
                if k > 256 || n_at + 8 > t_len {
                    return Err(bad(format!("{k} kind statistics do not fit a trailer of {t_len} bytes")));
                }
                if rem >= n_at + 8 {
                    let mut n = [0u8; 8];
                    read_at(&mut self.file, &path, pos + n_at, &mut n)?;
                    let n = u64::from_le_bytes(n);
                    if n.checked_mul(28).and_then(|b| b.checked_add(n_at + 8)) != Some(t_len) {
                        return Err(bad(format!("length {t_len} disagrees with its {k} kinds and {n} chunks")));
                    }
                }
            }
            if rem > t_len {
                // Whole trailer, partial footer: what is there must be the start of the footer
                // the trailer calls for, or zeros.
                let mut tb = vec![0u8; t_len as usize];
                read_at(&mut self.file, &path, pos, &mut tb)?;
                let want = encode_footer(pos, &tb);
                let mut got = vec![0u8; (rem - t_len) as usize];
                read_at(&mut self.file, &path, pos + t_len, &mut got)?;
                if got != want[..got.len()] && got.iter().any(|&b| b != 0) {
                    return Err(RecordingError::corrupt(
                        &path,
                        "log footer",
                        pos + t_len,
                        "the partial footer at the end of the file does not match the trailer",
                    ));
                }
            }
            return Ok(TrailerProbe::Cut);
        }
        let foot_off = pos + t_len;
        let mut tb = vec![0u8; t_len as usize];
        read_at(&mut self.file, &path, pos, &mut tb)?;
        let mut f = [0u8; FOOTER_LEN];
        read_at(&mut self.file, &path, foot_off, &mut f)?;
        let end = foot_off + FOOTER_LEN as u64;
        let footer_bad = |detail: &str| RecordingError::corrupt(&path, "log footer", foot_off, detail.to_string());
        if f[..] != encode_footer(pos, &tb)[..] {
            // A footer lost to a host crash (written, not synced) reads back as zeros: a cut.
            if f.iter().all(|&b| b == 0) && self.is_zero(end, file_len)? {
                return Ok(TrailerProbe::Cut);
            }
            if &f[..8] != FOOTER_MAGIC {
                return Err(footer_bad(
                    "the footer is damaged (the log has a full trailer, but no valid footer after it)",
                ));
            }
            let t_off = u64::from_le_bytes(f[8..16].try_into().unwrap_or_default());
            let len = u64::from_le_bytes(f[16..24].try_into().unwrap_or_default());
            if t_off != pos || len != t_len {
                return Err(footer_bad(&format!(
                    "the footer is damaged: it places the trailer at {t_off}+{len}, the trailer is at {pos}+{t_len}"
                )));
            }
            return Err(bad("checksum mismatch (trailer or footer damaged)".into()));
        }
        let trailer = parse_trailer(&tb).map_err(|e| bad(e.to_string()))?;
        Ok(TrailerProbe::Complete { trailer, end })
    }

    /// Walk the chunk headers between `start` and `end`, building the chunk list. For a log
    /// whose trailer is not yet known (`complete` false, `end` the end of the file), a trailer
    /// found where the chunks end makes the log complete; bytes after its footer are recorded as
    /// trailing garbage.
    fn scan_chunks(&mut self, start: u64, end: u64, complete: bool) -> Result<()> {
        let path = self.path.clone();
        let mut pos = start;
        let mut prev_last = self.header.start_icount;
        while pos < end {
            let i = self.chunks.len();
            let what = format!("chunk {i}");
            let rem = end - pos;
            let mut hb = [0u8; CHUNK_HEADER_LEN];
            let n = rem.min(CHUNK_HEADER_LEN as u64) as usize;
            read_at(&mut self.file, &path, pos, &mut hb[..n])?;
            let m = n.min(4);
            if !complete && hb[..m] == TRAILER_MAGIC[..m] {
                match self.probe_trailer(pos)? {
                    TrailerProbe::Complete { trailer, end: footer_end } => {
                        self.trailer = Some(trailer);
                        self.trailer_off = pos;
                        if footer_end < self.file_len {
                            self.trailing = Some((footer_end, self.file_len - footer_end));
                        }
                    }
                    TrailerProbe::Cut => self.truncated_at = Some(pos),
                }
                return Ok(());
            }
            // After a host crash the unsynced end of an unfinished log can read back as zeros
            // (file size persisted, data not): that is a cut, not corruption.
            if !complete && hb[..n].iter().all(|&b| b == 0) && self.is_zero(pos + n as u64, end)? {
                self.truncated_at = Some(pos);
                return Ok(());
            }
            if n < CHUNK_HEADER_LEN {
                if !complete && hb[..m] == CHUNK_MAGIC[..m] {
                    self.truncated_at = Some(pos);
                    return Ok(());
                }
                return Err(RecordingError::corrupt(
                    &path,
                    what,
                    pos,
                    format!("{n} stray bytes where a chunk header was expected"),
                ));
            }
            let h = match parse_chunk_header(&hb) {
                Ok(h) => h,
                Err((true, _)) => return Err(RecordingError::ChunkChecksum { path, chunk: i as u64, offset: pos }),
                Err((false, d)) => return Err(RecordingError::corrupt(&path, what, pos, d)),
            };
            if h.seq as usize != i {
                return Err(RecordingError::corrupt(
                    &path,
                    what,
                    pos,
                    format!("chunk numbered {} (chunks missing or reordered)", h.seq),
                ));
            }
            if h.first < prev_last {
                return Err(RecordingError::corrupt(
                    &path,
                    what,
                    pos,
                    format!("first icount {} is before the previous chunk's last {prev_last}", h.first),
                ));
            }
            let chunk_end = pos + (CHUNK_HEADER_LEN as u64) + u64::from(h.comp_len);
            if chunk_end > end {
                if complete {
                    return Err(RecordingError::truncated(
                        &path,
                        what,
                        pos,
                        format!("chunk of {} bytes extends past the trailer at {end}", chunk_end - pos),
                    ));
                }
                self.truncated_at = Some(pos);
                return Ok(());
            }
            self.chunks.push(ChunkInfo { offset: pos, first_icount: h.first, last_icount: h.last, entries: h.entries });
            self.raw_total += u64::from(h.raw_len);
            prev_last = h.last;
            pos = chunk_end;
        }
        Ok(())
    }

    /// Whether bytes `from..to` of the file are all zero.
    fn is_zero(&mut self, from: u64, to: u64) -> Result<bool> {
        let mut buf = vec![0u8; 64 << 10];
        let mut pos = from;
        while pos < to {
            let n = (to - pos).min(buf.len() as u64) as usize;
            read_at(&mut self.file, &self.path, pos, &mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += n as u64;
        }
        Ok(true)
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format version of the file.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The header.
    pub fn header(&self) -> &LogHeader {
        &self.header
    }

    /// Guest architecture of the recording.
    pub fn arch(&self) -> Arch {
        self.header.arch
    }

    /// Error unless the log is a recording of `expected` ([`RecordingError::WrongArch`]).
    pub fn expect_arch(&self, expected: Arch) -> Result<()> {
        if self.header.arch != expected {
            return Err(RecordingError::WrongArch { path: self.path.clone(), expected, found: self.header.arch });
        }
        Ok(())
    }

    /// Whether the log has a valid trailer (the recording was ended properly).
    pub fn is_complete(&self) -> bool {
        self.trailer.is_some()
    }

    /// The trailer of a complete log.
    pub fn trailer(&self) -> Option<&LogTrailer> {
        self.trailer.as_ref()
    }

    /// All whole chunks, in file order.
    pub fn chunks(&self) -> &[ChunkInfo] {
        &self.chunks
    }

    /// For an incomplete log: offset of the partial data after the last whole chunk, if any.
    pub fn truncated_at(&self) -> Option<u64> {
        self.truncated_at
    }

    /// For a complete log with bytes after its footer: `(offset, length)` of those bytes. They
    /// are not part of the recording (something appended to the file after it was finished) and
    /// are ignored; the log is still complete and fully verified. Callers should show
    /// [`Self::warnings`] to the user.
    pub fn trailing_bytes(&self) -> Option<(u64, u64)> {
        self.trailing
    }

    /// Number of bytes of the file that belong to the log: the file length, less any
    /// [trailing bytes](Self::trailing_bytes) after the footer of a complete log.
    pub fn data_len(&self) -> u64 {
        self.trailing.map_or(self.file_len, |(off, _)| off)
    }

    /// Things a user should know that do not stop the log from being read, one line each,
    /// prefixed with the file name (currently: trailing garbage after a complete log).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some((off, len)) = self.trailing {
            w.push(format!(
                "{}: {len} bytes of trailing garbage after the end-of-recording trailer at offset {off} ignored",
                self.path.display()
            ));
        }
        w
    }

    /// Why the recording ended (complete logs only). For [`EndReason::GuestExit`] this carries the
    /// guest's exit status, see [`EndReason::exit_code`].
    pub fn end_reason(&self) -> Option<EndReason> {
        self.trailer.as_ref().map(|t| t.reason)
    }

    /// Hash of the final CPU+RAM state, which a replay must reproduce (complete logs only).
    pub fn final_state_hash(&self) -> Option<[u8; 32]> {
        self.trailer.as_ref().map(|t| t.final_state_hash)
    }

    /// The icount up to which the recording is known: the trailer's end icount for a complete
    /// log, otherwise the last entry of the last whole chunk (or the start icount if none).
    /// For an incomplete log this is the "recording was cut short at instruction N" point.
    pub fn end_icount(&self) -> u64 {
        match &self.trailer {
            Some(t) => t.end_icount,
            None => self.chunks.last().map_or(self.header.start_icount, |c| c.last_icount),
        }
    }

    /// Number of instructions the recording covers (`end_icount - start_icount`).
    pub fn instruction_count(&self) -> u64 {
        self.end_icount().saturating_sub(self.header.start_icount)
    }

    /// Error unless the log is complete ([`RecordingError::Incomplete`]).
    pub fn expect_complete(&self, hint: &'static str) -> Result<()> {
        if self.trailer.is_none() {
            return Err(RecordingError::Incomplete { path: self.path.clone(), last_icount: self.end_icount(), hint });
        }
        Ok(())
    }

    /// Load and verify the next chunk. Returns false at the end of the log.
    fn load_chunk(&mut self) -> Result<bool> {
        let Some(&c) = self.chunks.get(self.next_chunk) else {
            return Ok(false);
        };
        let i = self.next_chunk;
        let path = self.path.clone();
        let mut hb = [0u8; CHUNK_HEADER_LEN];
        read_at(&mut self.file, &path, c.offset, &mut hb)?;
        // Re-parse: the file may have changed since open; a bad header is a checksum error.
        let h = match parse_chunk_header(&hb) {
            Ok(h) => h,
            Err((true, _)) => return Err(RecordingError::ChunkChecksum { path, chunk: i as u64, offset: c.offset }),
            Err((false, d)) => return Err(RecordingError::corrupt(&path, format!("chunk {i}"), c.offset, d)),
        };
        let mut payload = vec![0u8; h.comp_len as usize];
        read_at(&mut self.file, &path, c.offset + CHUNK_HEADER_LEN as u64, &mut payload)?;
        let pc: [u8; 16] = checksum(&[&payload]);
        if pc != h.payload_check {
            return Err(RecordingError::ChunkChecksum { path, chunk: i as u64, offset: c.offset });
        }
        let raw = zstd::bulk::decompress(&payload, h.raw_len as usize).map_err(|e| {
            RecordingError::corrupt(&path, format!("chunk {i}"), c.offset, format!("zstd decompression failed: {e}"))
        })?;
        if raw.len() != h.raw_len as usize {
            return Err(RecordingError::corrupt(
                &path,
                format!("chunk {i}"),
                c.offset,
                format!("decompressed to {} bytes, header says {}", raw.len(), h.raw_len),
            ));
        }
        self.cur = raw;
        self.cur_pos = 0;
        self.cur_chunk = i;
        self.cur_left = h.entries;
        self.cur_icount = h.first;
        self.next_chunk += 1;
        Ok(true)
    }

    /// Decode the next entry; after an error the reader stays failed (see [`Self::failed`]).
    fn decode_next(&mut self) -> Result<Option<LogEntry>> {
        if self.failed {
            return Err(RecordingError::InvalidInput {
                what: "log read",
                detail: format!("reading {} already failed", self.path.display()),
            });
        }
        let r = self.decode_next_inner();
        self.failed = r.is_err();
        r
    }

    /// Whether reading stopped on an error (the iterator then ends).
    pub fn failed(&self) -> bool {
        self.failed
    }

    fn decode_next_inner(&mut self) -> Result<Option<LogEntry>> {
        while self.cur_left == 0 {
            if !self.load_chunk()? {
                self.check_end()?;
                return Ok(None);
            }
        }
        let c = self.chunks[self.cur_chunk];
        let bad =
            |detail: String| RecordingError::corrupt(&self.path, format!("chunk {}", self.cur_chunk), c.offset, detail);
        let mut r = Reader::new(&self.cur[self.cur_pos..]);
        let delta = r.var().map_err(|e| bad(format!("entry: {e}")))?;
        let event = match decode_event(&mut r) {
            Ok(e) => e,
            Err(EventDecodeError::Bytes(e)) => return Err(bad(format!("entry: {e}"))),
            Err(EventDecodeError::UnknownKind(kind)) => {
                return Err(RecordingError::UnsupportedEventKind {
                    path: self.path.clone(),
                    kind,
                    chunk: self.cur_chunk as u64,
                    offset: c.offset,
                })
            }
        };
        let icount = self
            .cur_icount
            .checked_add(delta)
            .filter(|&i| i <= c.last_icount)
            .ok_or_else(|| bad(format!("entry icount beyond the chunk's last icount {}", c.last_icount)))?;
        self.last_clock = next_clock(self.last_clock, &event).map_err(|prev| {
            bad(format!(
                "Clock entry at icount {icount} goes back in time (to {} ns, the previous Clock entry said {prev} ns)",
                clock_ns(&event)
            ))
        })?;
        let k = &mut self.read_stats[usize::from(event.kind())];
        k.0 += 1;
        k.1 += r.pos() as u64;
        self.read_entries += 1;
        self.cur_pos += r.pos();
        self.cur_icount = icount;
        self.cur_left -= 1;
        if self.cur_left == 0 {
            if self.cur_pos != self.cur.len() {
                return Err(bad(format!("{} bytes left over after the last entry", self.cur.len() - self.cur_pos)));
            }
            if icount != c.last_icount {
                return Err(bad(format!("last entry at icount {icount}, header says {}", c.last_icount)));
            }
        }
        Ok(Some(LogEntry { icount, event }))
    }

    /// At the end of a complete log: the entries read must be what the trailer says, in total
    /// and per kind (count and encoded bytes).
    fn check_end(&mut self) -> Result<()> {
        if self.end_checked {
            return Ok(());
        }
        if let Some(t) = &self.trailer {
            let bad = |detail: String| RecordingError::corrupt(&self.path, "log trailer", self.trailer_off, detail);
            if self.read_entries != t.entry_count {
                return Err(bad(format!("says {} entries, the log holds {}", t.entry_count, self.read_entries)));
            }
            let mut want = vec![(0u64, 0u64); 256];
            for k in &t.kind_stats {
                want[usize::from(k.kind)] = (k.count, k.bytes);
            }
            if let Some(k) = (0..256).find(|&k| want[k] != self.read_stats[k]) {
                return Err(bad(format!(
                    "says {} {} entries of {} bytes, the log holds {} of {} bytes",
                    want[k].0,
                    Event::kind_name(k as u8),
                    want[k].1,
                    self.read_stats[k].0,
                    self.read_stats[k].1
                )));
            }
        }
        self.end_checked = true;
        Ok(())
    }

    /// The next entry, consuming it; `None` at the end of the log (for an incomplete log, at the
    /// end of its last whole chunk).
    pub fn next_entry(&mut self) -> Result<Option<LogEntry>> {
        if let Some(e) = self.peeked.take() {
            return Ok(Some(e));
        }
        self.decode_next()
    }

    /// The next entry without consuming it.
    pub fn peek(&mut self) -> Result<Option<&LogEntry>> {
        if self.peeked.is_none() {
            self.peeked = self.decode_next()?;
        }
        Ok(self.peeked.as_ref())
    }

    /// Read every remaining entry, verifying all checksums (and, at the end of a complete log,
    /// that the entries are what the trailer says); returns the number of entries.
    pub fn verify_rest(&mut self) -> Result<u64> {
        let mut n = 0;
        while self.next_entry()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

impl Iterator for LogReader {
    type Item = Result<LogEntry>;

    /// Yields each entry, then `None`; an error is yielded once and ends the iteration.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.next_entry().transpose()
    }
}

/// `read_exact` at `off`; hitting the end of the file is reported as an I/O error (callers check
/// sizes against the file length first, so this only happens if the file shrinks under us).
fn read_at(file: &mut File, path: &Path, off: u64, buf: &mut [u8]) -> Result<()> {
    file.seek(SeekFrom::Start(off)).map_err(|e| RecordingError::io("seek in", path, e))?;
    file.read_exact(buf).map_err(|e| RecordingError::io("read", path, e))
}

/// Read and check the header. Returns (version, header, header length).
fn read_log_header(file: &mut File, path: &Path, file_len: u64) -> Result<(u32, LogHeader, u64)> {
    let n = file_len.min(16) as usize;
    let mut first = [0u8; 16];
    read_at(file, path, 0, &mut first[..n])?;
    let m = n.min(8);
    if first[..m] != LOG_MAGIC[..m] {
        return Err(RecordingError::BadMagic {
            path: path.to_path_buf(),
            what: "an Ailuro nondet log",
            expected: "AILUROLG".into(),
            found: show_magic(&first[..m]),
        });
    }
    if n < 16 {
        return Err(RecordingError::truncated(path, "log header", 0, format!("file is only {file_len} bytes")));
    }
    let version = u32::from_le_bytes(first[8..12].try_into().unwrap_or_default());
    if version == 0 {
        return Err(RecordingError::corrupt(path, "log header", 0, "format version 0"));
    }
    if version > LOG_VERSION {
        return Err(RecordingError::NewerVersion {
            path: path.to_path_buf(),
            what: "nondet log",
            found: version,
            supported: LOG_VERSION,
        });
    }
    let hlen = u32::from_le_bytes(first[12..16].try_into().unwrap_or_default()) as usize;
    if !(HEADER_FIXED + HEADER_CHECK..=MAX_HEADER_LEN).contains(&hlen) {
        return Err(RecordingError::corrupt(path, "log header", 0, format!("impossible header length {hlen}")));
    }
    if (hlen as u64) > file_len {
        return Err(RecordingError::truncated(
            path,
            "log header",
            0,
            format!("header is {hlen} bytes, file only {file_len}"),
        ));
    }
    let mut hb = vec![0u8; hlen];
    read_at(file, path, 0, &mut hb)?;
    let c: [u8; HEADER_CHECK] = checksum(&[&hb[..hlen - HEADER_CHECK]]);
    if c != hb[hlen - HEADER_CHECK..] {
        return Err(RecordingError::corrupt(path, "log header", 0, "checksum mismatch"));
    }
    let mut r = Reader::new(&hb[16..hlen - HEADER_CHECK]);
    let parse = |r: &mut Reader<'_>| -> std::result::Result<(u8, u64, [u8; 32], Vec<u8>), DecodeError> {
        let tag = r.u8()?;
        r.bytes(3)?;
        let start = r.u64()?;
        let snap: [u8; 32] = r.array()?;
        let clen = r.u32()? as usize;
        let creator = r.bytes(clen)?.to_vec();
        Ok((tag, start, snap, creator))
    };
    let (tag, start_icount, snapshot_hash, creator) =
        parse(&mut r).map_err(|e| RecordingError::corrupt(path, "log header", 0, e.to_string()))?;
    if r.remaining() != 0 {
        return Err(RecordingError::corrupt(path, "log header", 0, "length disagrees with its creator string"));
    }
    let arch = Arch::from_tag(tag).ok_or(RecordingError::UnknownArch { path: path.to_path_buf(), tag })?;
    let creator = String::from_utf8(creator)
        .map_err(|_| RecordingError::corrupt(path, "log header", 0, "creator string is not UTF-8"))?;
    Ok((version, LogHeader { arch, start_icount, snapshot_hash, creator }, hlen as u64))
}

// A chunk closes once it reaches the target size, so it holds at most the target plus one entry.
const _: () = assert!(MAX_EVENT_DATA + 64 < MAX_CHUNK_RAW as usize - MAX_CHUNK_TARGET);

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
