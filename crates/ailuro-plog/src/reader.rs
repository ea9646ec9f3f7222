//! [`PlogReader`]: opens a plog, checks its structure, and streams its records one decompressed
//! chunk at a time.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::codec::{checksum, show_magic, unzigzag, DecodeError, Reader};
use crate::error::{PlogError, Result};
use crate::format::*;
use crate::value::{is_reserved, tag, OwnedRecord, Value};

/// Why a record could not be decoded.
enum RecordError {
    Bytes(DecodeError),
    UnknownTag(u8),
}

impl From<DecodeError> for RecordError {
    fn from(e: DecodeError) -> Self {
        Self::Bytes(e)
    }
}

fn invalid(at: usize, detail: impl Into<String>) -> RecordError {
    RecordError::Bytes(DecodeError::invalid(at, detail))
}

/// The decoded string table of the current chunk.
#[derive(Default)]
struct Table {
    /// (string, is a reserved field name)
    names: Vec<(String, bool)>,
    defined: HashSet<String>,
    /// Per id: serial number of the last record that used it as a field name.
    stamps: Vec<u64>,
}

impl Table {
    fn clear(&mut self) {
        self.names.clear();
        self.defined.clear();
        self.stamps.clear();
    }

    /// Read a string reference, defining a new entry if it is a definition; returns the id.
    fn sref(&mut self, r: &mut Reader<'_>, what: &str) -> Result<usize, RecordError> {
        let at = r.pos();
        let n = r.var()?;
        if n > 0 {
            let id = (n - 1) as usize;
            if id >= self.names.len() {
                return Err(invalid(at, format!("{what} refers to string #{id}, which is not defined")));
            }
            return Ok(id);
        }
        let len = r.var_len("string length")?;
        if len == 0 || len > MAX_NAME_LEN {
            return Err(invalid(at, format!("{what} of {len} bytes (must be 1..={MAX_NAME_LEN})")));
        }
        let s = std::str::from_utf8(r.bytes(len)?).map_err(|_| invalid(at, format!("{what} is not UTF-8")))?;
        if !self.defined.insert(s.to_owned()) {
            return Err(invalid(at, format!("string {s:?} is defined twice in the chunk")));
        }
        self.names.push((s.to_owned(), is_reserved(s)));
        self.stamps.push(0);
        Ok(self.names.len() - 1)
    }

    fn name(&self, id: usize) -> String {
        self.names[id].0.clone()
    }
}

fn decode_value(t: &mut Table, r: &mut Reader<'_>, depth: usize) -> Result<Value, RecordError> {
    let at = r.pos();
    let tg = r.u8()?;
    Ok(match tg {
        tag::NULL => Value::Null,
        tag::FALSE => Value::Bool(false),
        tag::TRUE => Value::Bool(true),
        tag::U64 => Value::U64(r.var()?),
        tag::I64 => Value::I64(unzigzag(r.var()?)),
        tag::F64 => Value::F64(f64::from_bits(r.u64()?)),
        tag::STR => {
            let n = r.var_len("string length")?;
            let b = r.bytes(n)?;
            Value::Str(String::from_utf8(b.to_vec()).map_err(|_| invalid(at, "string value is not UTF-8"))?)
        }
        tag::BYTES => {
            let n = r.var_len("byte string length")?;
            Value::Bytes(r.bytes(n)?.to_vec())
        }
        tag::LIST | tag::MAP => {
            if depth >= MAX_DEPTH {
                return Err(invalid(at, format!("lists/maps nested deeper than {MAX_DEPTH} levels")));
            }
            let n = r.var_len("element count")?;
            if tg == tag::LIST {
                let mut l = Vec::with_capacity(n);
                for _ in 0..n {
                    l.push(decode_value(t, r, depth + 1)?);
                }
                Value::List(l)
            } else {
                let mut m = Vec::with_capacity(n);
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = t.sref(r, "map key")?;
                    ids.push(id);
                    m.push((t.name(id), decode_value(t, r, depth + 1)?));
                }
                ids.sort_unstable();
                if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
                    return Err(invalid(at, format!("map key {:?} appears twice", t.names[w[0]].0)));
                }
                Value::Map(m)
            }
        }
        other => return Err(RecordError::UnknownTag(other)),
    })
}

/// Streams the records of a plog, one decompressed chunk in memory at a time.
pub struct PlogReader {
    path: PathBuf,
    file: File,
    version: u32,
    header: PlogHeader,
    header_len: u64,
    trailer: Option<PlogTrailer>,
    chunks: Vec<ChunkInfo>,
    raw_bytes: u64,
    compressed_bytes: u64,
    /// Offset of partial data after the last whole chunk of an incomplete file.
    truncated_at: Option<u64>,
    /// Index of the next chunk to load.
    next_chunk: usize,
    /// Decompressed payload of the current chunk.
    cur: Vec<u8>,
    cur_pos: usize,
    cur_chunk: usize,
    /// Records decoded from the current chunk so far, and its record count.
    cur_done: u32,
    cur_records: u32,
    cur_icount: u64,
    table: Table,
    serial: u64,
    /// Records below this icount are skipped ([`Self::seek_icount`]).
    skip_below: u64,
    decompressor: zstd::bulk::Decompressor<'static>,
    /// Set when decoding failed; the position is then meaningless, so reading stops.
    failed: bool,
}

impl PlogReader {
    /// Open a plog and check its header, footer, trailer and chunk structure (the chunk payloads
    /// are verified as they are read). A file cut short (no trailer) opens fine and reads up to
    /// its last whole chunk; see [`Self::is_complete`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| PlogError::open(path, e))?;
        let meta = file.metadata().map_err(|e| PlogError::io("stat", path, e))?;
        if meta.is_dir() {
            return Err(PlogError::io("read", path, std::io::Error::other("it is a directory")));
        }
        let file_len = meta.len();
        let (version, header, header_len) = read_header(&mut file, path, file_len)?;
        let decompressor =
            zstd::bulk::Decompressor::new().map_err(|e| PlogError::io("set up decompression for", path, e))?;
        let mut rd = Self {
            path: path.to_path_buf(),
            file,
            version,
            header,
            header_len,
            trailer: None,
            chunks: Vec::new(),
            raw_bytes: 0,
            compressed_bytes: 0,
            truncated_at: None,
            next_chunk: 0,
            cur: Vec::new(),
            cur_pos: 0,
            cur_chunk: 0,
            cur_done: 0,
            cur_records: 0,
            cur_icount: 0,
            table: Table::default(),
            serial: 0,
            skip_below: 0,
            decompressor,
            failed: false,
        };
        let trailer_off = rd.read_footer(file_len)?;
        let end = trailer_off.unwrap_or(file_len);
        rd.scan_chunks(end, trailer_off.is_some())?;
        if let Some(t) = &rd.trailer {
            if let Some(i) = (0..t.chunks.len().max(rd.chunks.len())).find(|&i| t.chunks.get(i) != rd.chunks.get(i)) {
                return Err(PlogError::corrupt(
                    path,
                    "trailer",
                    end,
                    format!("its chunk index disagrees with the chunks in the file from chunk {i} on"),
                ));
            }
            if t.raw_bytes != rd.raw_bytes || t.compressed_bytes != rd.compressed_bytes {
                return Err(PlogError::corrupt(
                    path,
                    "trailer",
                    end,
                    "its byte totals disagree with the chunk headers",
                ));
            }
        }
        Ok(rd)
    }

    /// Read and check the footer and trailer. Returns the trailer offset if the file is complete.
    fn read_footer(&mut self, file_len: u64) -> Result<Option<u64>> {
        let path = self.path.clone();
        if file_len < self.header_len + FOOTER_LEN as u64 {
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
        if t_off < self.header_len
            || !(8..=MAX_TRAILER_LEN).contains(&t_len)
            || t_off.checked_add(t_len) != Some(foot_off)
        {
            return Err(PlogError::corrupt(
                &path,
                "footer",
                foot_off,
                format!("trailer position {t_off}+{t_len} does not end at the footer"),
            ));
        }
        let mut tb = vec![0u8; t_len as usize];
        read_at(&mut self.file, &path, t_off, &mut tb)?;
        let c: [u8; 16] = checksum(&[&tb, &f[..24]]);
        if c != f[24..40] {
            return Err(PlogError::corrupt(&path, "trailer", t_off, "checksum mismatch (trailer or footer damaged)"));
        }
        if &tb[..4] != TRAILER_MAGIC || u64::from(u32::from_le_bytes(tb[4..8].try_into().unwrap_or_default())) != t_len
        {
            return Err(PlogError::corrupt(&path, "trailer", t_off, "bad trailer magic or length"));
        }
        let t = parse_trailer(&tb).map_err(|e| PlogError::corrupt(&path, "trailer", t_off, e.to_string()))?;
        self.trailer = Some(t);
        Ok(Some(t_off))
    }

    /// Walk the chunk headers from the end of the file header to `end`, building the chunk list.
    fn scan_chunks(&mut self, end: u64, complete: bool) -> Result<()> {
        let path = self.path.clone();
        let mut pos = self.header_len;
        let mut prev_last = 0;
        while pos < end {
            let i = self.chunks.len();
            let what = format!("chunk {i}");
            let rem = end - pos;
            let mut hb = [0u8; CHUNK_HEADER_LEN];
            let n = rem.min(CHUNK_HEADER_LEN as u64) as usize;
            read_at(&mut self.file, &path, pos, &mut hb[..n])?;
            let m = n.min(4);
            if !complete && hb[..m] == TRAILER_MAGIC[..m] {
                // A trailer without a valid footer: either cut short while finishing (fine:
                // incomplete) or complete but with a damaged footer (an error, not a quiet loss).
                if n >= 8 {
                    let t_len = u64::from(u32::from_le_bytes(hb[4..8].try_into().unwrap_or_default()));
                    if rem == t_len + FOOTER_LEN as u64 {
                        return Err(PlogError::corrupt(
                            &path,
                            "footer",
                            end - FOOTER_LEN as u64,
                            "the footer is damaged (the file has a full trailer)",
                        ));
                    }
                }
                self.truncated_at = Some(pos);
                return Ok(());
            }
            // After a host crash the unsynced end of an unfinished file can read back as zeros
            // (size persisted, data not): that is a cut, not corruption.
            if !complete && hb[..n].iter().all(|&b| b == 0) && self.is_zero(pos + n as u64, end)? {
                self.truncated_at = Some(pos);
                return Ok(());
            }
            if n < CHUNK_HEADER_LEN {
                if !complete && hb[..m] == CHUNK_MAGIC[..m] {
                    self.truncated_at = Some(pos);
                    return Ok(());
                }
                return Err(PlogError::corrupt(
                    &path,
                    what,
                    pos,
                    format!("{n} stray bytes where a chunk header was expected"),
                ));
            }
            let h = match parse_chunk_header(&hb) {
                Ok(h) => h,
                Err(ChunkHeaderError::Checksum) => {
                    return Err(PlogError::ChunkChecksum { path, chunk: i as u64, offset: pos })
                }
                Err(ChunkHeaderError::Invalid(d)) => return Err(PlogError::corrupt(&path, what, pos, d)),
            };
            if h.seq as usize != i {
                return Err(PlogError::corrupt(
                    &path,
                    what,
                    pos,
                    format!("chunk numbered {} (chunks missing or reordered)", h.seq),
                ));
            }
            if h.first < prev_last {
                return Err(PlogError::corrupt(
                    &path,
                    what,
                    pos,
                    format!("first icount {} is before the previous chunk's last {prev_last}", h.first),
                ));
            }
            let chunk_end = pos + CHUNK_HEADER_LEN as u64 + u64::from(h.comp_len);
            if chunk_end > end {
                if complete {
                    return Err(PlogError::truncated(
                        &path,
                        what,
                        pos,
                        format!("chunk of {} bytes extends past the trailer at {end}", chunk_end - pos),
                    ));
                }
                self.truncated_at = Some(pos);
                return Ok(());
            }
            self.chunks.push(ChunkInfo { offset: pos, first_icount: h.first, last_icount: h.last, records: h.records });
            self.raw_bytes += u64::from(h.raw_len);
            self.compressed_bytes += u64::from(h.comp_len);
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

    /// The header (creator and metadata).
    pub fn header(&self) -> &PlogHeader {
        &self.header
    }

    /// Whether the file has a valid trailer (its writer called [`crate::PlogWriter::finish`]).
    pub fn is_complete(&self) -> bool {
        self.trailer.is_some()
    }

    /// The trailer of a complete file.
    pub fn trailer(&self) -> Option<&PlogTrailer> {
        self.trailer.as_ref()
    }

    /// All whole chunks, in file order.
    pub fn chunks(&self) -> &[ChunkInfo] {
        &self.chunks
    }

    /// For an incomplete file: offset of the partial data after the last whole chunk, if any.
    pub fn truncated_at(&self) -> Option<u64> {
        self.truncated_at
    }

    /// Number of records in the whole chunks (from the chunk headers).
    pub fn record_count(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.records)).sum()
    }

    /// Uncompressed and compressed payload bytes of the whole chunks.
    pub fn payload_bytes(&self) -> (u64, u64) {
        (self.raw_bytes, self.compressed_bytes)
    }

    /// icounts of the first and last record, `None` if there are no records.
    pub fn icount_range(&self) -> Option<(u64, u64)> {
        Some((self.chunks.first()?.first_icount, self.chunks.last()?.last_icount))
    }

    /// Position the reader so that the next record is the first with icount ≥ `icount`. Chunks
    /// that end before it are skipped without being read; may also move backwards. Clears a
    /// previous read error, so a reader can skip past a damaged chunk.
    pub fn seek_icount(&mut self, icount: u64) {
        self.next_chunk = self.chunks.partition_point(|c| c.last_icount < icount);
        self.cur_done = 0;
        self.cur_records = 0;
        self.skip_below = icount;
        self.failed = false;
    }

    /// Load and verify the next chunk. Returns false at the end of the file.
    fn load_chunk(&mut self) -> Result<bool> {
        let Some(&c) = self.chunks.get(self.next_chunk) else {
            return Ok(false);
        };
        let i = self.next_chunk;
        let path = self.path.clone();
        let mut hb = [0u8; CHUNK_HEADER_LEN];
        read_at(&mut self.file, &path, c.offset, &mut hb)?;
        // Re-parse: the file may have changed since it was opened.
        let h = match parse_chunk_header(&hb) {
            Ok(h) => h,
            Err(ChunkHeaderError::Checksum) => {
                return Err(PlogError::ChunkChecksum { path, chunk: i as u64, offset: c.offset })
            }
            Err(ChunkHeaderError::Invalid(d)) => {
                return Err(PlogError::corrupt(&path, format!("chunk {i}"), c.offset, d))
            }
        };
        let mut payload = vec![0u8; h.comp_len as usize];
        read_at(&mut self.file, &path, c.offset + CHUNK_HEADER_LEN as u64, &mut payload)?;
        let pc: [u8; 16] = checksum(&[&payload]);
        if pc != h.payload_check {
            return Err(PlogError::ChunkChecksum { path, chunk: i as u64, offset: c.offset });
        }
        let raw = self.decompressor.decompress(&payload, h.raw_len as usize).map_err(|e| {
            PlogError::corrupt(&path, format!("chunk {i}"), c.offset, format!("zstd decompression failed: {e}"))
        })?;
        if raw.len() != h.raw_len as usize {
            return Err(PlogError::corrupt(
                &path,
                format!("chunk {i}"),
                c.offset,
                format!("decompressed to {} bytes, header says {}", raw.len(), h.raw_len),
            ));
        }
        self.cur = raw;
        self.cur_pos = 0;
        self.cur_chunk = i;
        self.cur_done = 0;
        self.cur_records = h.records;
        self.cur_icount = h.first;
        self.table.clear();
        self.next_chunk += 1;
        Ok(true)
    }

    /// Whether reading stopped on an error (the iterator then ends).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The next record; `None` at the end (for an incomplete file, at the end of its last whole
    /// chunk). After an error the reader stays failed until [`Self::seek_icount`].
    pub fn next_record(&mut self) -> Result<Option<OwnedRecord>> {
        if self.failed {
            return Err(PlogError::invalid(&self.path, "read", "reading this file already failed"));
        }
        loop {
            let r = self.decode_next();
            match r {
                Ok(Some(rec)) if rec.icount < self.skip_below => continue,
                Ok(x) => return Ok(x),
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
    }

    fn decode_next(&mut self) -> Result<Option<OwnedRecord>> {
        while self.cur_done == self.cur_records {
            if !self.load_chunk()? {
                return Ok(None);
            }
        }
        let c = self.chunks[self.cur_chunk];
        let record = self.cur_done;
        let mut r = Reader::new(&self.cur[self.cur_pos..]);
        self.serial += 1;
        let res = decode_record(&mut self.table, &mut r, self.cur_icount, c.last_icount, self.serial);
        let at = self.cur_pos;
        let bad = |detail: String| {
            PlogError::corrupt(
                &self.path,
                format!("chunk {}", self.cur_chunk),
                c.offset,
                format!("record {record} (payload byte {at}): {detail}"),
            )
        };
        let rec = match res {
            Ok(rec) => rec,
            Err(RecordError::Bytes(e)) => return Err(bad(e.to_string())),
            Err(RecordError::UnknownTag(tag)) => {
                return Err(PlogError::UnsupportedValue {
                    path: self.path.clone(),
                    tag,
                    chunk: self.cur_chunk as u64,
                    offset: c.offset,
                    record: u64::from(record),
                })
            }
        };
        self.cur_pos += r.pos();
        self.cur_icount = rec.icount;
        self.cur_done += 1;
        if self.cur_done == self.cur_records {
            if self.cur_pos != self.cur.len() {
                return Err(bad(format!("{} bytes left over after the last record", self.cur.len() - self.cur_pos)));
            }
            if rec.icount != c.last_icount {
                return Err(bad(format!("last record at icount {}, chunk header says {}", rec.icount, c.last_icount)));
            }
        }
        Ok(Some(rec))
    }
}

/// Decode one record; `prev` is the previous record's icount (the chunk's first for the first).
fn decode_record(
    t: &mut Table,
    r: &mut Reader<'_>,
    prev: u64,
    last: u64,
    serial: u64,
) -> Result<OwnedRecord, RecordError> {
    let delta = r.var()?;
    let icount = prev
        .checked_add(delta)
        .filter(|&i| i <= last)
        .ok_or_else(|| invalid(0, format!("icount {prev} + {delta} is beyond the chunk's last icount {last}")))?;
    let pc = r.var()?;
    let at = r.pos();
    let asid = match r.u8()? {
        0 => None,
        1 => Some(r.var()?),
        f => return Err(invalid(at, format!("flags byte {f:#04x} has unknown bits"))),
    };
    let p = t.sref(r, "plugin name")?;
    let k = t.sref(r, "record kind")?;
    let n = r.var_len("field count")?;
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.pos();
        let id = t.sref(r, "field name")?;
        let (name, reserved) = &t.names[id];
        if *reserved {
            return Err(invalid(at, format!("field name {name:?} is reserved")));
        }
        if t.stamps[id] == serial {
            return Err(invalid(at, format!("field {name:?} appears twice")));
        }
        t.stamps[id] = serial;
        let name = name.clone();
        fields.push((name, decode_value(t, r, 0)?));
    }
    Ok(OwnedRecord { icount, pc, asid, plugin: t.name(p), kind: t.name(k), fields })
}

impl Iterator for PlogReader {
    type Item = Result<OwnedRecord>;

    /// Yields each record, then `None`; an error is yielded once and ends the iteration.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.next_record().transpose()
    }
}

/// `read_exact` at `off`; the callers check sizes against the file length first, so hitting the
/// end means the file shrank under us.
fn read_at(file: &mut File, path: &Path, off: u64, buf: &mut [u8]) -> Result<()> {
    file.seek(SeekFrom::Start(off)).map_err(|e| PlogError::io("seek in", path, e))?;
    file.read_exact(buf).map_err(|e| PlogError::io("read", path, e))
}

/// Read and check the header. Returns (version, header, header length).
fn read_header(file: &mut File, path: &Path, file_len: u64) -> Result<(u32, PlogHeader, u64)> {
    let n = file_len.min(16) as usize;
    let mut first = [0u8; 16];
    read_at(file, path, 0, &mut first[..n])?;
    let m = n.min(8);
    if m == 0 {
        return Err(PlogError::truncated(path, "header", 0, "the file is empty"));
    }
    if first[..m] != PLOG_MAGIC[..m] {
        return Err(PlogError::BadMagic { path: path.to_path_buf(), found: show_magic(&first[..m]) });
    }
    if n < 16 {
        return Err(PlogError::truncated(path, "header", 0, format!("the file is only {file_len} bytes")));
    }
    let version = u32::from_le_bytes(first[8..12].try_into().unwrap_or_default());
    if version == 0 {
        return Err(PlogError::corrupt(path, "header", 0, "format version 0"));
    }
    if version > PLOG_VERSION {
        return Err(PlogError::NewerVersion { path: path.to_path_buf(), found: version, supported: PLOG_VERSION });
    }
    let hlen = u32::from_le_bytes(first[12..16].try_into().unwrap_or_default()) as usize;
    if !(HEADER_FIXED + 4 + HEADER_CHECK..=MAX_HEADER_LEN).contains(&hlen) {
        return Err(PlogError::corrupt(path, "header", 0, format!("impossible header length {hlen}")));
    }
    if hlen as u64 > file_len {
        return Err(PlogError::truncated(
            path,
            "header",
            0,
            format!("header is {hlen} bytes, the file only {file_len}"),
        ));
    }
    let mut hb = vec![0u8; hlen];
    read_at(file, path, 0, &mut hb)?;
    let c: [u8; HEADER_CHECK] = checksum(&[&hb[..hlen - HEADER_CHECK]]);
    if c != hb[hlen - HEADER_CHECK..] {
        return Err(PlogError::corrupt(path, "header", 0, "checksum mismatch"));
    }
    let header = parse_header_body(&hb[16..hlen - HEADER_CHECK])
        .map_err(|e| PlogError::corrupt(path, "header", 0, e.to_string()))?;
    Ok((version, header, hlen as u64))
}
