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
///
/// Records come in file order, which is the order they were written in. In a version-2 file
/// (written by this build) that is emission order and not necessarily icount order: plugins
/// report at different times. [`Self::sorted`] yields them by icount instead.
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
    /// Offset and length of bytes after the footer of a complete file.
    trailing: Option<(u64, u64)>,
    /// Index of the next chunk to load.
    next_chunk: usize,
    /// Decompressed payload of the current chunk.
    cur: Vec<u8>,
    cur_pos: usize,
    cur_chunk: usize,
    /// Records decoded from the current chunk so far, and its record count.
    cur_done: u32,
    cur_records: u32,
    /// icount of the previous record decoded from the current chunk (the base of the next delta).
    cur_icount: u64,
    /// Smallest and largest icount decoded from the current chunk so far.
    cur_min: u64,
    cur_max: u64,
    table: Table,
    serial: u64,
    /// Only records with `from <= icount <= to` are returned ([`Self::select_icounts`]).
    from: u64,
    to: u64,
    decompressor: zstd::bulk::Decompressor<'static>,
    /// Set when decoding failed; the position is then meaningless, so reading stops.
    failed: bool,
}

/// How the walk over the chunks ended.
enum WalkEnd {
    /// At a valid trailer and footer (offset of the footer's end).
    Complete(u64),
    /// Incomplete: at the end of the file, or at partial data that is ignored (its offset).
    Incomplete(Option<u64>),
}

impl PlogReader {
    /// Open a plog and check its header, chunk structure, trailer and footer (the chunk payloads
    /// are verified as they are read). A file cut short (no trailer) opens fine and reads up to
    /// its last whole chunk; see [`Self::is_complete`]. Bytes after the footer of a complete file
    /// are ignored and reported by [`Self::trailing_bytes`].
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
            trailing: None,
            next_chunk: 0,
            cur: Vec::new(),
            cur_pos: 0,
            cur_chunk: 0,
            cur_done: 0,
            cur_records: 0,
            cur_icount: 0,
            cur_min: 0,
            cur_max: 0,
            table: Table::default(),
            serial: 0,
            from: 0,
            to: u64::MAX,
            decompressor,
            failed: false,
        };
        match rd.walk(file_len)? {
            WalkEnd::Complete(end) => {
                if end < file_len {
                    rd.trailing = Some((end, file_len - end));
                }
            }
            WalkEnd::Incomplete(at) => {
                rd.truncated_at = at;
                // Safety net: a file that ends with a footer must be complete; if its chunks
                // stop short of a trailer, something in between is damaged.
                if file_len >= header_len + FOOTER_LEN as u64 {
                    let mut f = [0u8; 8];
                    read_at(&mut rd.file, path, file_len - FOOTER_LEN as u64, &mut f)?;
                    if &f == FOOTER_MAGIC {
                        let stop = at.unwrap_or(file_len);
                        return Err(PlogError::corrupt(
                            path,
                            "file",
                            stop,
                            format!("it ends with a footer, but its chunks end at offset {stop} without a trailer"),
                        ));
                    }
                }
            }
        }
        if let Some(t) = &rd.trailer {
            let at = rd.chunks.last().map_or(header_len, |c| c.offset);
            if let Some(i) = (0..t.chunks.len().max(rd.chunks.len())).find(|&i| t.chunks.get(i) != rd.chunks.get(i)) {
                return Err(PlogError::corrupt(
                    path,
                    "trailer",
                    at,
                    format!("its chunk index disagrees with the chunks in the file from chunk {i} on"),
                ));
            }
            if t.raw_bytes != rd.raw_bytes || t.compressed_bytes != rd.compressed_bytes {
                return Err(PlogError::corrupt(path, "trailer", at, "its byte totals disagree with the chunk headers"));
            }
        }
        Ok(rd)
    }

    /// Walk the chunk headers from the end of the file header, building the chunk list, up to
    /// the trailer (a complete file), the end of the file or partial data (an incomplete file).
    /// The trailer is found by this walk, not from the end of the file, so bytes appended after
    /// the footer do not hide it.
    fn walk(&mut self, file_len: u64) -> Result<WalkEnd> {
        let path = self.path.clone();
        let mut pos = self.header_len;
        let mut prev_max = 0;
        while pos < file_len {
            let i = self.chunks.len();
            let what = format!("chunk {i}");
            let rem = file_len - pos;
            let mut hb = [0u8; CHUNK_HEADER_LEN];
            let n = rem.min(CHUNK_HEADER_LEN as u64) as usize;
            read_at(&mut self.file, &path, pos, &mut hb[..n])?;
            let m = n.min(4);
            if hb[..m] == TRAILER_MAGIC[..m] {
                return self.at_trailer(pos, file_len, &hb[..n]);
            }
            // After a host crash the unsynced end of an unfinished file can read back as zeros
            // (size persisted, data not): that is a cut, not corruption.
            if hb[..n].iter().all(|&b| b == 0) && self.is_zero(pos + n as u64, file_len)? {
                return Ok(WalkEnd::Incomplete(Some(pos)));
            }
            if n < CHUNK_HEADER_LEN {
                if hb[..m] == CHUNK_MAGIC[..m] {
                    return Ok(WalkEnd::Incomplete(Some(pos)));
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
            // Version 1 promised icount order across chunks; version 2 stores emission order.
            if self.version == PLOG_VERSION_SORTED && h.min < prev_max {
                return Err(PlogError::corrupt(
                    &path,
                    what,
                    pos,
                    format!("first icount {} is before the previous chunk's last {prev_max}", h.min),
                ));
            }
            let chunk_end = pos + CHUNK_HEADER_LEN as u64 + u64::from(h.comp_len);
            if chunk_end > file_len {
                return Ok(WalkEnd::Incomplete(Some(pos)));
            }
            self.chunks.push(ChunkInfo { offset: pos, min_icount: h.min, max_icount: h.max, records: h.records });
            self.raw_bytes += u64::from(h.raw_len);
            self.compressed_bytes += u64::from(h.comp_len);
            prev_max = h.max;
            pos = chunk_end;
        }
        Ok(WalkEnd::Incomplete(None))
    }

    /// The walk reached a trailer magic at `pos` (`hb`: up to 60 bytes from there). Find its
    /// footer: where the trailer's own length says, else any footer further on that points back
    /// at this trailer (the length may be the damaged part). A footer found must be valid; a
    /// trailer or footer cut short is an incomplete file.
    fn at_trailer(&mut self, pos: u64, file_len: u64, hb: &[u8]) -> Result<WalkEnd> {
        let path = self.path.clone();
        let rem = file_len - pos;
        if hb.len() < 8 {
            return Ok(WalkEnd::Incomplete(Some(pos)));
        }
        let t_len = u64::from(u32::from_le_bytes(hb[4..8].try_into().unwrap_or_default()));
        let foot = FOOTER_LEN as u64;
        // Where the trailer says its footer is (if that is inside the file).
        let here = (8..=MAX_TRAILER_LEN).contains(&t_len) && t_len + foot <= rem;
        if here && self.footer_magic_at(pos + t_len)? {
            let end = self.check_footer(pos, pos + t_len)?;
            return Ok(WalkEnd::Complete(end));
        }
        // A damaged trailer length sends us to the wrong place; the real footer, wherever it is
        // (trailing bytes may follow it), still vouches for and checks this trailer.
        if let Some(f) = self.find_footer_for(pos, file_len)? {
            let end = self.check_footer(pos, f)?;
            return Ok(WalkEnd::Complete(end));
        }
        if here {
            // A whole trailer and room for a footer, but no footer: damage, not a crash (the
            // writer writes the footer right after the trailer, in one piece).
            return Err(PlogError::corrupt(
                &path,
                "footer",
                pos + t_len,
                "the footer is damaged or missing (the file has a full trailer)",
            ));
        }
        // Cut while finishing: the trailer or the footer is partial.
        Ok(WalkEnd::Incomplete(Some(pos)))
    }

    /// The first footer after the trailer at `pos` whose trailer offset is `pos` (a linear scan,
    /// done only when the trailer's length does not lead to a footer: damage or a crash).
    fn find_footer_for(&mut self, pos: u64, file_len: u64) -> Result<Option<u64>> {
        const BLOCK: usize = 64 << 10;
        let foot = FOOTER_LEN as u64;
        let mut buf = vec![0u8; BLOCK];
        // The smallest trailer is 44 bytes (no kinds, no chunks).
        let mut at = pos + 44;
        while at + foot <= file_len {
            let n = (file_len - at).min(BLOCK as u64) as usize;
            read_at(&mut self.file, &self.path, at, &mut buf[..n])?;
            for i in 0..n.saturating_sub(7) {
                if &buf[i..i + 8] == FOOTER_MAGIC && at + i as u64 + foot <= file_len {
                    let f = at + i as u64;
                    let mut t_off = [0u8; 8];
                    read_at(&mut self.file, &self.path, f + 8, &mut t_off)?;
                    if u64::from_le_bytes(t_off) == pos {
                        return Ok(Some(f));
                    }
                }
            }
            if n < BLOCK {
                break;
            }
            // Overlap so that a magic across the block boundary is seen.
            at += (n - 7) as u64;
        }
        Ok(None)
    }

    fn footer_magic_at(&mut self, off: u64) -> Result<bool> {
        let mut m = [0u8; 8];
        read_at(&mut self.file, &self.path, off, &mut m)?;
        Ok(&m == FOOTER_MAGIC)
    }

    /// Check the footer at `foot_off` against the trailer at `t_pos` and read the trailer.
    /// Returns the offset just past the footer.
    fn check_footer(&mut self, t_pos: u64, foot_off: u64) -> Result<u64> {
        let path = self.path.clone();
        let mut f = [0u8; FOOTER_LEN];
        read_at(&mut self.file, &path, foot_off, &mut f)?;
        let t_off = u64::from_le_bytes(f[8..16].try_into().unwrap_or_default());
        let t_len = u64::from_le_bytes(f[16..24].try_into().unwrap_or_default());
        if t_off != t_pos || !(8..=MAX_TRAILER_LEN).contains(&t_len) || t_off.checked_add(t_len) != Some(foot_off) {
            return Err(PlogError::corrupt(
                &path,
                "footer",
                foot_off,
                format!("trailer position {t_off}+{t_len} does not match the trailer at {t_pos} ending at the footer"),
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
        Ok(foot_off + FOOTER_LEN as u64)
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

    /// Whether the file's records are stored in nondecreasing icount order by definition (format
    /// version 1). A version-2 file stores them in emission order, which may or may not be.
    pub fn is_sorted_by_format(&self) -> bool {
        self.version == PLOG_VERSION_SORTED
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

    /// For a complete file with bytes after its footer (appended by something else): their
    /// offset and length. They are ignored; the file is still complete and verified.
    pub fn trailing_bytes(&self) -> Option<(u64, u64)> {
        self.trailing
    }

    /// Number of records in the whole chunks (from the chunk headers).
    pub fn record_count(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.records)).sum()
    }

    /// Uncompressed and compressed payload bytes of the whole chunks.
    pub fn payload_bytes(&self) -> (u64, u64) {
        (self.raw_bytes, self.compressed_bytes)
    }

    /// Smallest and largest icount of all records, `None` if there are no records.
    pub fn icount_range(&self) -> Option<(u64, u64)> {
        let min = self.chunks.iter().map(|c| c.min_icount).min()?;
        let max = self.chunks.iter().map(|c| c.max_icount).max()?;
        Some((min, max))
    }

    /// Read only the records with icount ≥ `icount` from now on, starting again from the first
    /// chunk that holds one (so it may also move backwards); same as
    /// `select_icounts(icount, u64::MAX)`.
    pub fn seek_icount(&mut self, icount: u64) {
        self.select_icounts(icount, u64::MAX);
    }

    /// Read only the records with `from <= icount <= to` from now on, in file order, starting
    /// again from the first chunk that holds one. Chunks whose icount range lies outside are
    /// skipped without being read. Clears a previous read error, so a reader can skip past a
    /// damaged chunk.
    pub fn select_icounts(&mut self, from: u64, to: u64) {
        self.from = from;
        self.to = to;
        self.next_chunk = 0;
        self.cur_done = 0;
        self.cur_records = 0;
        self.failed = false;
    }

    fn wanted_chunk(&self, c: &ChunkInfo) -> bool {
        c.max_icount >= self.from && c.min_icount <= self.to
    }

    /// Load the next chunk that can hold wanted records. Returns false at the end of the file.
    fn load_next_chunk(&mut self) -> Result<bool> {
        while self.chunks.get(self.next_chunk).is_some_and(|c| !self.wanted_chunk(c)) {
            self.next_chunk += 1;
        }
        if self.next_chunk >= self.chunks.len() {
            return Ok(false);
        }
        self.load_chunk(self.next_chunk)?;
        Ok(true)
    }

    /// Load and verify chunk `i` (its header and payload checksum, its size).
    fn load_chunk(&mut self, i: usize) -> Result<()> {
        let c = self.chunks[i];
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
        if (h.min, h.max, h.records) != (c.min_icount, c.max_icount, c.records) {
            return Err(PlogError::corrupt(&path, format!("chunk {i}"), c.offset, "the chunk header changed"));
        }
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
        // Version 1: deltas from the chunk's first icount, never negative. Version 2: signed
        // deltas, the first from 0.
        self.cur_icount = if self.version == PLOG_VERSION_SORTED { h.min } else { 0 };
        self.cur_min = u64::MAX;
        self.cur_max = 0;
        self.table.clear();
        self.next_chunk = i + 1;
        Ok(())
    }

    /// Decode every record of chunk `i` (for [`crate::SortedRecords`]); returns them and the
    /// chunk's uncompressed size. The reader's position afterwards is just past chunk `i`.
    pub(crate) fn read_chunk(&mut self, i: usize) -> Result<(Vec<OwnedRecord>, usize)> {
        let r = self.load_chunk(i).and_then(|()| {
            let mut v = Vec::with_capacity(self.cur_records as usize);
            while self.cur_done < self.cur_records {
                v.push(self.decode_one()?);
            }
            Ok(v)
        });
        match r {
            Ok(v) => Ok((v, self.cur.len())),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// The selected icount range ([`Self::select_icounts`]).
    pub(crate) fn selection(&self) -> (u64, u64) {
        (self.from, self.to)
    }

    /// Whether reading stopped on an error (the iterator then ends).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The next record; `None` at the end (for an incomplete file, at the end of its last whole
    /// chunk). After an error the reader stays failed until [`Self::select_icounts`] or
    /// [`Self::seek_icount`].
    pub fn next_record(&mut self) -> Result<Option<OwnedRecord>> {
        if self.failed {
            return Err(PlogError::invalid(&self.path, "read", "reading this file already failed"));
        }
        loop {
            let r = self.decode_next();
            match r {
                Ok(Some(rec)) if rec.icount < self.from || rec.icount > self.to => continue,
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
            if !self.load_next_chunk()? {
                return Ok(None);
            }
        }
        self.decode_one().map(Some)
    }

    /// Decode the next record of the current chunk (there is one) and check it against the chunk
    /// header.
    fn decode_one(&mut self) -> Result<OwnedRecord> {
        let c = self.chunks[self.cur_chunk];
        let record = self.cur_done;
        let mut r = Reader::new(&self.cur[self.cur_pos..]);
        self.serial += 1;
        let sorted = self.version == PLOG_VERSION_SORTED;
        let res = decode_icount(&mut r, self.cur_icount, c, sorted)
            .and_then(|icount| decode_record(&mut self.table, &mut r, icount, self.serial));
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
        self.cur_min = self.cur_min.min(rec.icount);
        self.cur_max = self.cur_max.max(rec.icount);
        self.cur_done += 1;
        if self.cur_done == self.cur_records {
            if self.cur_pos != self.cur.len() {
                return Err(bad(format!("{} bytes left over after the last record", self.cur.len() - self.cur_pos)));
            }
            if sorted && rec.icount != c.max_icount {
                return Err(bad(format!("last record at icount {}, chunk header says {}", rec.icount, c.max_icount)));
            }
            // The header's range must be exactly the records' range (so that skipping chunks by
            // it never skips a record, and the file cannot claim records it does not have).
            if (self.cur_min, self.cur_max) != (c.min_icount, c.max_icount) {
                return Err(bad(format!(
                    "records span icounts {} ..= {}, chunk header says {} ..= {}",
                    self.cur_min, self.cur_max, c.min_icount, c.max_icount
                )));
            }
        }
        Ok(rec)
    }
}

/// Decode a record's icount; `prev` is the previous record's (for the first record of a chunk:
/// the chunk's first icount in version 1, 0 in version 2). It must lie in the chunk's range.
fn decode_icount(r: &mut Reader<'_>, prev: u64, c: ChunkInfo, sorted: bool) -> Result<u64, RecordError> {
    let raw = r.var()?;
    let icount = if sorted {
        prev.checked_add(raw).ok_or_else(|| {
            invalid(0, format!("icount {prev} + {raw} is beyond the chunk's last icount {}", c.max_icount))
        })?
    } else {
        prev.wrapping_add(unzigzag(raw) as u64)
    };
    if icount < c.min_icount || icount > c.max_icount {
        return Err(invalid(
            0,
            format!("icount {icount} is outside the chunk's range {} ..= {}", c.min_icount, c.max_icount),
        ));
    }
    Ok(icount)
}

/// Decode the rest of a record whose icount was decoded.
fn decode_record(t: &mut Table, r: &mut Reader<'_>, icount: u64, serial: u64) -> Result<OwnedRecord, RecordError> {
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
