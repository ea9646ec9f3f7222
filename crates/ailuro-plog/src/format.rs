//! The fixed structures of a plog file (header, chunk header, trailer, footer) and their limits.
//! Byte layout: docs/PLOG.md.

use crate::codec::{checksum, show_magic, DecodeError, Put, Reader};

/// Magic at offset 0 of a plog.
pub const PLOG_MAGIC: &[u8; 8] = b"AILUROPL";
/// Format version written by this build (and the highest it reads). Version 1 required records
/// in nondecreasing icount order; version 2 (this one) stores them in emission order, with signed
/// icount deltas and per-chunk icount minimum and maximum. Readers read both.
pub const PLOG_VERSION: u32 = 2;
/// The first version: records sorted by icount (still read).
pub(crate) const PLOG_VERSION_SORTED: u32 = 1;
pub(crate) const CHUNK_MAGIC: &[u8; 4] = b"PCHK";
pub(crate) const TRAILER_MAGIC: &[u8; 4] = b"PTRL";
pub(crate) const FOOTER_MAGIC: &[u8; 8] = b"AILUROPF";

/// Bytes before the creator string: magic, version, header length, creator length.
pub(crate) const HEADER_FIXED: usize = 20;
pub(crate) const HEADER_CHECK: usize = 16;
/// Largest header (creator plus metadata) a writer produces and a reader accepts.
pub const MAX_HEADER_LEN: usize = 4 << 20;
/// Longest creator string (bytes).
pub const MAX_CREATOR_LEN: usize = 4096;
/// Longest metadata key (bytes); keys are non-empty and unique.
pub const MAX_META_KEY_LEN: usize = 1024;
/// Most metadata entries.
pub const MAX_META_ENTRIES: usize = 4096;
/// Longest plugin name, record kind, field name or map key (bytes); all are non-empty.
pub const MAX_NAME_LEN: usize = 1024;
/// Largest encoded record (bytes, before compression); bigger ones are refused by the writer.
pub const MAX_RECORD_LEN: usize = 16 << 20;
/// Deepest nesting of lists and maps in a field value (a scalar field is depth 0).
pub const MAX_DEPTH: usize = 32;
/// Default uncompressed size at which the writer closes a chunk.
pub const DEFAULT_CHUNK_SIZE: usize = 128 << 10;
/// Largest chunk target [`crate::PlogWriter::set_chunk_size`] accepts.
pub const MAX_CHUNK_TARGET: usize = 16 << 20;

pub(crate) const CHUNK_HEADER_LEN: usize = 60;
pub(crate) const FOOTER_LEN: usize = 40;
pub(crate) const CHUNK_INDEX_ENTRY: usize = 28;
/// Largest uncompressed chunk a reader accepts (the writer stays below target + one record).
pub(crate) const MAX_CHUNK_RAW: u32 = 64 << 20;
/// Largest compressed chunk a reader accepts (zstd's worst case for `MAX_CHUNK_RAW` is smaller).
pub(crate) const MAX_CHUNK_COMP: u32 = MAX_CHUNK_RAW + (1 << 20);
pub(crate) const MAX_TRAILER_LEN: u64 = 1 << 30;
pub(crate) const ZSTD_LEVEL: i32 = 3;

// A chunk closes once it reaches the target, so it holds at most the target plus one record.
const _: () = assert!(MAX_CHUNK_TARGET + MAX_RECORD_LEN + 64 < MAX_CHUNK_RAW as usize);

/// The file header: who wrote the plog and free-form metadata about the run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlogHeader {
    /// Free-form description of the writer (program, version, command line); UTF-8, at most
    /// [`MAX_CREATOR_LEN`] bytes.
    pub creator: String,
    /// Ordered `key = value` pairs (e.g. `recording`, `plugins`, `plugin.syscalls.args`); keys are
    /// non-empty, unique and at most [`MAX_META_KEY_LEN`] bytes. No timestamps are added: a replay
    /// run twice writes the same file.
    pub metadata: Vec<(String, String)>,
}

impl PlogHeader {
    /// A header with this creator and no metadata.
    pub fn new(creator: impl Into<String>) -> Self {
        Self { creator: creator.into(), metadata: Vec::new() }
    }

    /// Add a metadata entry (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Check the limits; `Err(why)`.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.creator.len() > MAX_CREATOR_LEN {
            return Err(format!("creator string of {} bytes exceeds {MAX_CREATOR_LEN}", self.creator.len()));
        }
        if self.metadata.len() > MAX_META_ENTRIES {
            return Err(format!("{} metadata entries exceed {MAX_META_ENTRIES}", self.metadata.len()));
        }
        let mut keys: Vec<&str> = Vec::with_capacity(self.metadata.len());
        for (k, _) in &self.metadata {
            if k.is_empty() || k.len() > MAX_META_KEY_LEN {
                return Err(format!("metadata key {k:?} is empty or longer than {MAX_META_KEY_LEN} bytes"));
            }
            keys.push(k);
        }
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("metadata key {:?} appears twice", w[0]));
        }
        Ok(())
    }
}

/// Encode the header (after [`PlogHeader::validate`]); `Err(why)` if it is too large.
pub(crate) fn encode_header(h: &PlogHeader) -> Result<Vec<u8>, String> {
    h.validate()?;
    let mut b = Vec::new();
    b.put_bytes(PLOG_MAGIC);
    b.put_u32(PLOG_VERSION);
    b.put_u32(0); // header length, patched below
    b.put_str32(&h.creator);
    b.put_u32(h.metadata.len() as u32);
    for (k, v) in &h.metadata {
        if v.len() > MAX_HEADER_LEN {
            return Err(format!("metadata value of {} bytes is too large", v.len()));
        }
        b.put_str32(k);
        b.put_str32(v);
    }
    let len = b.len() + HEADER_CHECK;
    if len > MAX_HEADER_LEN {
        return Err(format!("header of {len} bytes exceeds {MAX_HEADER_LEN}"));
    }
    b[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    let c: [u8; HEADER_CHECK] = checksum(&[&b]);
    b.put_bytes(&c);
    Ok(b)
}

/// Parse the header body (bytes 16 .. H-16 of a header whose checksum was verified).
pub(crate) fn parse_header_body(body: &[u8]) -> Result<PlogHeader, DecodeError> {
    let mut r = Reader::new(body);
    let creator = r.str32("creator string", MAX_CREATOR_LEN)?;
    let at = r.pos();
    let n = r.u32()? as usize;
    if n > MAX_META_ENTRIES {
        return Err(DecodeError::invalid(at, format!("{n} metadata entries exceed {MAX_META_ENTRIES}")));
    }
    let mut metadata = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.str32("metadata key", MAX_META_KEY_LEN)?;
        let v = r.str32("metadata value", MAX_HEADER_LEN)?;
        metadata.push((k, v));
    }
    if r.remaining() != 0 {
        return Err(DecodeError::invalid(r.pos(), format!("{} unexpected bytes at the end", r.remaining())));
    }
    let h = PlogHeader { creator, metadata };
    h.validate().map_err(|e| DecodeError::invalid(0, e))?;
    Ok(h)
}

/// Where a chunk is and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// File offset of the chunk header.
    pub offset: u64,
    /// Smallest icount of the chunk's records (in a version-1 file: the first record's).
    pub min_icount: u64,
    /// Largest icount of the chunk's records (in a version-1 file: the last record's).
    pub max_icount: u64,
    /// Number of records (at least 1).
    pub records: u32,
}

/// Decoded chunk header fields.
pub(crate) struct ChunkHeader {
    pub(crate) seq: u32,
    /// Smallest and largest icount of the chunk's records (version 1: first and last).
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) records: u32,
    pub(crate) raw_len: u32,
    pub(crate) comp_len: u32,
    pub(crate) payload_check: [u8; 16],
}

pub(crate) fn encode_chunk_header(h: &ChunkHeader) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = Vec::with_capacity(CHUNK_HEADER_LEN);
    b.put_bytes(CHUNK_MAGIC);
    b.put_u32(h.seq);
    b.put_u64(h.min);
    b.put_u64(h.max);
    b.put_u32(h.records);
    b.put_u32(h.raw_len);
    b.put_u32(h.comp_len);
    b.put_bytes(&h.payload_check);
    let hc: [u8; 8] = checksum(&[&b]);
    b.put_bytes(&hc);
    let mut out = [0u8; CHUNK_HEADER_LEN];
    out.copy_from_slice(&b);
    out
}

/// Why a chunk header is unacceptable.
pub(crate) enum ChunkHeaderError {
    /// Its checksum fails.
    Checksum,
    /// Wrong magic or impossible values (with a description).
    Invalid(String),
}

pub(crate) fn parse_chunk_header(b: &[u8; CHUNK_HEADER_LEN]) -> Result<ChunkHeader, ChunkHeaderError> {
    if &b[..4] != CHUNK_MAGIC {
        return Err(ChunkHeaderError::Invalid(format!(
            "expected chunk magic \"PCHK\", found \"{}\"",
            show_magic(&b[..4])
        )));
    }
    let hc: [u8; 8] = checksum(&[&b[..52]]);
    if hc != b[52..60] {
        return Err(ChunkHeaderError::Checksum);
    }
    let mut r = Reader::new(&b[4..52]);
    let mut f = || -> Result<ChunkHeader, DecodeError> {
        Ok(ChunkHeader {
            seq: r.u32()?,
            min: r.u64()?,
            max: r.u64()?,
            records: r.u32()?,
            raw_len: r.u32()?,
            comp_len: r.u32()?,
            payload_check: r.array()?,
        })
    };
    let h = f().map_err(|e| ChunkHeaderError::Invalid(e.to_string()))?;
    if h.min > h.max || h.records == 0 || h.raw_len > MAX_CHUNK_RAW || h.comp_len > MAX_CHUNK_COMP {
        return Err(ChunkHeaderError::Invalid(format!(
            "impossible chunk header (icounts {} ..= {}, {} records, raw {} bytes, compressed {} bytes)",
            h.min, h.max, h.records, h.raw_len, h.comp_len
        )));
    }
    Ok(h)
}

/// Number and encoded size of the records of one (plugin, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindStats {
    /// Plugin name.
    pub plugin: String,
    /// Record kind.
    pub kind: String,
    /// Number of records.
    pub records: u64,
    /// Uncompressed encoded bytes of these records (string definitions included).
    pub raw_bytes: u64,
}

/// The trailer of a complete plog, written by [`crate::PlogWriter::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlogTrailer {
    /// Total number of records.
    pub record_count: u64,
    /// Sum of the chunks' uncompressed payload sizes.
    pub raw_bytes: u64,
    /// Sum of the chunks' compressed payload sizes.
    pub compressed_bytes: u64,
    /// Per (plugin, kind) statistics, sorted by plugin then kind (only pairs that occur).
    pub kinds: Vec<KindStats>,
    /// Chunk index, in file order.
    pub chunks: Vec<ChunkInfo>,
}

pub(crate) fn encode_trailer(t: &PlogTrailer) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_bytes(TRAILER_MAGIC);
    b.put_u32(0); // trailer length, patched below
    b.put_u64(t.record_count);
    b.put_u64(t.raw_bytes);
    b.put_u64(t.compressed_bytes);
    b.put_u32(t.kinds.len() as u32);
    for k in &t.kinds {
        b.put_str32(&k.plugin);
        b.put_str32(&k.kind);
        b.put_u64(k.records);
        b.put_u64(k.raw_bytes);
    }
    b.put_u64(t.chunks.len() as u64);
    for c in &t.chunks {
        b.put_u64(c.offset);
        b.put_u64(c.min_icount);
        b.put_u64(c.max_icount);
        b.put_u32(c.records);
    }
    let len = b.len() as u32;
    b[4..8].copy_from_slice(&len.to_le_bytes());
    b
}

/// Parse a trailer whose magic, length and checksum were verified by the caller.
pub(crate) fn parse_trailer(b: &[u8]) -> Result<PlogTrailer, DecodeError> {
    let mut r = Reader::new(b);
    r.bytes(8)?;
    let record_count = r.u64()?;
    let raw_bytes = r.u64()?;
    let compressed_bytes = r.u64()?;
    let at = r.pos();
    let nk = r.u32()? as usize;
    // Each entry takes at least 24 bytes.
    if nk > r.remaining() / 24 {
        return Err(DecodeError::invalid(at, format!("impossible (plugin, kind) count {nk}")));
    }
    let mut kinds = Vec::with_capacity(nk);
    for _ in 0..nk {
        kinds.push(KindStats {
            plugin: r.str32("plugin name", MAX_NAME_LEN)?,
            kind: r.str32("record kind", MAX_NAME_LEN)?,
            records: r.u64()?,
            raw_bytes: r.u64()?,
        });
    }
    let at = r.pos();
    let nc = r.u64()?;
    if nc > (r.remaining() / CHUNK_INDEX_ENTRY) as u64 {
        return Err(DecodeError::invalid(at, format!("impossible chunk count {nc}")));
    }
    let mut chunks = Vec::with_capacity(nc as usize);
    for _ in 0..nc {
        chunks.push(ChunkInfo { offset: r.u64()?, min_icount: r.u64()?, max_icount: r.u64()?, records: r.u32()? });
    }
    if r.remaining() != 0 {
        return Err(DecodeError::invalid(r.pos(), format!("{} unexpected bytes at the end", r.remaining())));
    }
    let by_kind: u64 = kinds.iter().map(|k| k.records).fold(0, u64::saturating_add);
    let by_chunk: u64 = chunks.iter().map(|c| u64::from(c.records)).sum();
    if by_kind != record_count || by_chunk != record_count {
        return Err(DecodeError::invalid(
            8,
            format!(
                "record count {record_count} disagrees with its per-kind ({by_kind}) or per-chunk ({by_chunk}) sums"
            ),
        ));
    }
    Ok(PlogTrailer { record_count, raw_bytes, compressed_bytes, kinds, chunks })
}

/// The footer: magic, trailer offset and length, checksum over trailer and footer.
pub(crate) fn encode_footer(trailer: &[u8], trailer_offset: u64) -> [u8; FOOTER_LEN] {
    let mut f = Vec::with_capacity(FOOTER_LEN);
    f.put_bytes(FOOTER_MAGIC);
    f.put_u64(trailer_offset);
    f.put_u64(trailer.len() as u64);
    let c: [u8; 16] = checksum(&[trailer, &f]);
    f.put_bytes(&c);
    let mut out = [0u8; FOOTER_LEN];
    out.copy_from_slice(&f);
    out
}
