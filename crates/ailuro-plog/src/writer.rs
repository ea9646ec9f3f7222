//! [`PlogWriter`]: buffers records into chunks, compresses and appends them.
//!
//! Hot path: [`PlogWriter::record`] → [`RecordBuilder::field`]… → [`RecordBuilder::emit`] encodes
//! straight into reused buffers (no allocation once plugin, kind and field names are known in the
//! current chunk: they are interned in the chunk's string table and cost one byte each after their
//! first use).
//!
//! Records may come in any icount order (plugins report at different times: `console` after each
//! CPU slice, `trace` during it); they are stored in emission order, and each chunk records the
//! smallest and largest icount it holds.
//!
//! Crash behaviour: each chunk is appended with a single `write_all`; the trailer and the footer
//! (which make the file *complete*) are written only by [`PlogWriter::finish`], after an fsync of
//! everything before them. A writer dropped without `finish` writes its open chunk, so the file
//! stays readable as an incomplete plog.
//!
//! Failure behaviour (all or nothing): [`PlogWriter::create`] leaves no file behind when it
//! fails, and a failed write (disk full, I/O error) removes the file, since it can never be
//! finished and would only block a rerun.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec::{checksum, zigzag, Put};
use crate::error::{PlogError, Result};
use crate::format::*;
use crate::value::{is_reserved, tag, OwnedRecord, ValueRef};

/// A fast non-cryptographic hasher (the Fx hash of rustc) for the writer's small tables: the keys
/// come from plugins, not from an adversary, and SipHash would dominate the cost of a record.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The string table of the open chunk: each distinct plugin name, kind, field name and map key is
/// defined inline on first use in a chunk and referred to by index afterwards.
#[derive(Default)]
struct Interner {
    ids: FxMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    /// Per id: serial number of the last record that used it as a field name (duplicate check).
    stamps: Vec<u64>,
}

impl Interner {
    /// Write a string reference for `s` (defining it if new) and return its id.
    #[inline]
    fn put(&mut self, out: &mut Vec<u8>, s: &str, what: &str) -> Result<u32, String> {
        if let Some(&id) = self.ids.get(s) {
            out.put_var(u64::from(id) + 1);
            return Ok(id);
        }
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(format!("{what} {:?} is empty or longer than {MAX_NAME_LEN} bytes", truncate(s)));
        }
        let id = self.names.len() as u32;
        out.put_var(0);
        out.put_var(s.len() as u64);
        out.put_bytes(s.as_bytes());
        self.ids.insert(s.into(), id);
        self.names.push(s.into());
        self.stamps.push(0);
        Ok(id)
    }

    fn len(&self) -> u32 {
        self.names.len() as u32
    }

    /// Forget the strings defined from id `mark` on (their definitions were not written).
    fn rollback(&mut self, mark: u32) {
        for n in self.names.drain(mark as usize..) {
            self.ids.remove(&n);
        }
        self.stamps.truncate(mark as usize);
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.names.clear();
        self.stamps.clear();
    }
}

/// Shorten a string for an error message.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Encode a value (tag and payload) into `out`; map keys go through the string table.
fn encode_value(names: &mut Interner, out: &mut Vec<u8>, v: ValueRef<'_>, depth: usize) -> Result<(), String> {
    match v {
        ValueRef::Null => out.put_u8(tag::NULL),
        ValueRef::Bool(b) => out.put_u8(if b { tag::TRUE } else { tag::FALSE }),
        ValueRef::U64(x) => {
            out.put_u8(tag::U64);
            out.put_var(x);
        }
        ValueRef::I64(x) => {
            out.put_u8(tag::I64);
            out.put_var(zigzag(x));
        }
        ValueRef::F64(x) => {
            out.put_u8(tag::F64);
            out.put_u64(x.to_bits());
        }
        ValueRef::Str(s) => {
            out.put_u8(tag::STR);
            out.put_var(s.len() as u64);
            out.put_bytes(s.as_bytes());
        }
        ValueRef::Bytes(b) => {
            out.put_u8(tag::BYTES);
            out.put_var(b.len() as u64);
            out.put_bytes(b);
        }
        ValueRef::List(l) => {
            check_depth(depth)?;
            out.put_u8(tag::LIST);
            out.put_var(l.len() as u64);
            for x in l {
                encode_value(names, out, x.as_value_ref(), depth + 1)?;
            }
        }
        ValueRef::Map(m) => {
            check_depth(depth)?;
            out.put_u8(tag::MAP);
            out.put_var(m.len() as u64);
            let mut ids = Vec::with_capacity(m.len());
            for (k, x) in m {
                ids.push(names.put(out, k, "map key")?);
                encode_value(names, out, x.as_value_ref(), depth + 1)?;
            }
            ids.sort_unstable();
            if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
                return Err(format!("map key {:?} appears twice", truncate(&names.names[w[0] as usize])));
            }
        }
    }
    if out.len() > MAX_RECORD_LEN {
        return Err(format!("record exceeds {MAX_RECORD_LEN} bytes"));
    }
    Ok(())
}

fn check_depth(depth: usize) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!("value nests lists/maps deeper than {MAX_DEPTH} levels"));
    }
    Ok(())
}

#[derive(Default, Clone, Copy)]
struct Counts {
    records: u64,
    bytes: u64,
}

/// Writes a new plog. `Send`, used through `&mut`: the plugin host owns one and lends it to the
/// plugins, or a plugin owns its own.
pub struct PlogWriter {
    path: PathBuf,
    file: File,
    header: PlogHeader,
    /// Encoded records of the open chunk.
    buf: Vec<u8>,
    /// Smallest and largest icount in the open chunk (meaningful when `chunk_records > 0`).
    chunk_min: u64,
    chunk_max: u64,
    chunk_records: u32,
    /// icount of the previous record of the open chunk (the base of the next delta; 0 before the
    /// chunk's first record).
    prev_icount: u64,
    /// icount of the last record emitted (0 before the first).
    last_icount: u64,
    /// File offset where the next chunk goes.
    offset: u64,
    chunks: Vec<ChunkInfo>,
    names: Interner,
    /// Record being built: plugin and kind references, then the encoded fields.
    head: Vec<u8>,
    fields: Vec<u8>,
    serial: u64,
    /// (plugin id, kind id) → counts, for the open chunk; folded into `totals` per chunk.
    chunk_stats: FxMap<(u32, u32), Counts>,
    totals: BTreeMap<(String, String), Counts>,
    record_count: u64,
    raw_bytes: u64,
    compressed_bytes: u64,
    chunk_target: usize,
    compressor: zstd::bulk::Compressor<'static>,
    /// Set after a failed write: the file was removed and further records would be lost
    /// silently, so they are refused.
    poisoned: bool,
    finished: bool,
    /// Fault injection for tests: bytes that may still be written before writes fail.
    #[cfg(any(test, feature = "fault-injection"))]
    fail_after: Option<u64>,
}

/// Names of temporary files made by [`PlogWriter::create`] with `overwrite` are unique within the
/// process with this counter (and across processes with the process id).
static TEMP_SERIAL: AtomicU64 = AtomicU64::new(0);

/// Write `b` to `file`; with a fault budget (tests only), write what fits and then fail the way a
/// full disk does.
fn write_budgeted(file: &mut File, b: &[u8], budget: &mut Option<u64>) -> io::Result<()> {
    if let Some(left) = budget {
        if b.len() as u64 > *left {
            let n = *left as usize;
            *left = 0;
            file.write_all(&b[..n])?;
            return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device (injected)"));
        }
        *left -= b.len() as u64;
    }
    file.write_all(b)
}

/// Write the header and make it durable: a crash right after creation leaves a readable (empty,
/// incomplete) plog.
fn write_header(file: &mut File, hb: &[u8], budget: &mut Option<u64>) -> io::Result<()> {
    write_budgeted(file, hb, budget)?;
    file.sync_all()
}

/// Without overwrite: create `path` exclusively (`O_EXCL`: an existing file or symlink is never
/// touched), write the header; on failure remove the file again, so nothing half-made blocks a
/// rerun.
fn create_exclusive(path: &Path, hb: &[u8], budget: &mut Option<u64>) -> Result<File> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            PlogError::AlreadyExists { path: path.to_path_buf() }
        } else {
            PlogError::io("create", path, e)
        }
    })?;
    if let Err(e) = write_header(&mut file, hb, budget) {
        remove_if_same(path, &file);
        return Err(PlogError::io("write the header of", path, e));
    }
    Ok(file)
}

/// With overwrite: write the header into a new temporary file in the same directory and rename
/// it over `path`. The rename replaces the directory entry itself, so an existing symlink is
/// replaced and its target never written; and the old file stays intact until the new one has
/// its header.
fn create_replacing(path: &Path, hb: &[u8], budget: &mut Option<u64>) -> Result<File> {
    let not_a_file = || PlogError::io("create", path, io::Error::new(io::ErrorKind::InvalidInput, "not a file name"));
    if path.file_name().is_none() {
        return Err(not_a_file());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, mut file) = loop {
        let n = TEMP_SERIAL.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".ailuro-plog-{}-{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            // A leftover of a killed process with a reused pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < u64::MAX => continue,
            Err(e) => return Err(PlogError::io("create", path, e)),
        }
    };
    if let Err(e) = write_header(&mut file, hb, budget) {
        remove_if_same(&tmp, &file);
        return Err(PlogError::io("write the header of", path, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        remove_if_same(&tmp, &file);
        return Err(PlogError::io("create", path, e));
    }
    // Make the new directory entry durable too (best effort: not every system can sync a
    // directory, and the file itself is already complete).
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(file)
}

/// Remove `path` if it still is `file` (nobody replaced it meanwhile).
fn remove_if_same(path: &Path, file: &File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino() => {}
            _ => return,
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    let _ = fs::remove_file(path);
}

impl PlogWriter {
    /// Create the plog at `path` and write its header, all or nothing: on failure no file is
    /// left at `path` (and an existing one is unchanged).
    ///
    /// Without `overwrite` an existing file (or symlink) is never touched
    /// ([`PlogError::AlreadyExists`]). With it, the header goes to a temporary file in the same
    /// directory that is then renamed over `path`: an existing file is replaced, and an existing
    /// symlink is replaced by the new file; its target is never written.
    pub fn create(path: impl AsRef<Path>, header: &PlogHeader, overwrite: bool) -> Result<Self> {
        Self::create_with_budget(path.as_ref(), header, overwrite, None)
    }

    /// [`Self::create`] with a fault-injection budget for the header write (tests).
    pub(crate) fn create_with_budget(
        path: &Path,
        header: &PlogHeader,
        overwrite: bool,
        mut budget: Option<u64>,
    ) -> Result<Self> {
        let hb = encode_header(header).map_err(|d| PlogError::invalid(path, "header", d))?;
        let compressor =
            zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| PlogError::io("set up compression for", path, e))?;
        let file = if overwrite {
            create_replacing(path, &hb, &mut budget)?
        } else {
            create_exclusive(path, &hb, &mut budget)?
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            header: header.clone(),
            buf: Vec::with_capacity(DEFAULT_CHUNK_SIZE + 4096),
            chunk_min: 0,
            chunk_max: 0,
            chunk_records: 0,
            prev_icount: 0,
            last_icount: 0,
            offset: hb.len() as u64,
            chunks: Vec::new(),
            names: Interner::default(),
            head: Vec::with_capacity(64),
            fields: Vec::with_capacity(1024),
            serial: 0,
            chunk_stats: FxMap::default(),
            totals: BTreeMap::new(),
            record_count: 0,
            raw_bytes: 0,
            compressed_bytes: 0,
            chunk_target: DEFAULT_CHUNK_SIZE,
            compressor,
            poisoned: false,
            finished: false,
            #[cfg(any(test, feature = "fault-injection"))]
            fail_after: budget,
        })
    }

    /// Fault injection for tests (feature `fault-injection`): once `bytes` more bytes have been
    /// written, writes fail like on a full disk (after a partial write), so callers can check
    /// that the error reaches them and that the file is removed.
    #[cfg(any(test, feature = "fault-injection"))]
    #[doc(hidden)]
    pub fn inject_write_failure_after(&mut self, bytes: u64) {
        self.fail_after = Some(bytes);
    }

    /// Write to the file, through the fault budget when fault injection is compiled in.
    fn write_file(&mut self, b: &[u8]) -> io::Result<()> {
        #[cfg(any(test, feature = "fault-injection"))]
        let budget = &mut self.fail_after;
        #[cfg(not(any(test, feature = "fault-injection")))]
        let budget = &mut None;
        write_budgeted(&mut self.file, b, budget)
    }

    /// Change the uncompressed size at which chunks are closed (clamped to 1 B ..
    /// [`MAX_CHUNK_TARGET`]). Smaller chunks lose less on a crash and compress worse.
    pub fn set_chunk_size(&mut self, bytes: usize) {
        self.chunk_target = bytes.clamp(1, MAX_CHUNK_TARGET);
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header written at creation.
    pub fn header(&self) -> &PlogHeader {
        &self.header
    }

    /// Number of records emitted so far.
    pub fn record_count(&self) -> u64 {
        self.record_count
    }

    /// icount of the last record emitted (0 before the first). Records may come in any icount
    /// order, so this is not necessarily the largest.
    pub fn last_icount(&self) -> u64 {
        self.last_icount
    }

    /// Start a record of `kind` from `plugin` at program point (`icount`, `pc`). Add fields with
    /// [`RecordBuilder::field`] and write it with [`RecordBuilder::emit`], which reports any
    /// problem (bad names, ...); a builder dropped without `emit` writes nothing.
    ///
    /// Records may be written in any icount order: they are stored in the order emitted (see
    /// docs/PLOG.md; readers can sort them with [`crate::PlogReader::sorted`]).
    ///
    /// ```no_run
    /// # fn f(w: &mut ailuro_plog::PlogWriter) -> Result<(), ailuro_plog::PlogError> {
    /// w.record(123_456, 0xc100_0000, "syscalls", "syscall").asid(0x1234000)
    ///     .field("name", "openat").field("fd", 3u64).field("ret", -2i64).emit()?;
    /// # Ok(()) }
    /// ```
    pub fn record(&mut self, icount: u64, pc: u64, plugin: &str, kind: &str) -> RecordBuilder<'_> {
        let mark = self.names.len();
        self.serial += 1;
        self.head.clear();
        self.fields.clear();
        let mut b = RecordBuilder { w: self, icount, pc, asid: None, nfields: 0, ids: (0, 0), mark, err: None };
        if let Err(e) = b.w.check_usable() {
            b.err = Some(e);
        } else {
            let r =
                b.w.names
                    .put(&mut b.w.head, plugin, "plugin name")
                    .and_then(|p| Ok((p, b.w.names.put(&mut b.w.head, kind, "record kind")?)));
            match r {
                Ok(ids) => b.ids = ids,
                Err(e) => b.fail(e),
            }
        }
        b
    }

    /// Write a record read from another plog (or built as an [`OwnedRecord`]).
    pub fn append(&mut self, r: &OwnedRecord) -> Result<()> {
        let mut b = self.record(r.icount, r.pc, &r.plugin, &r.kind).asid(r.asid);
        for (k, v) in &r.fields {
            b = b.field(k, v);
        }
        b.emit()
    }

    fn check_usable(&self) -> Result<()> {
        if self.poisoned {
            return Err(PlogError::invalid(
                &self.path,
                "record",
                "an earlier write failed and the unfinishable file was removed",
            ));
        }
        Ok(())
    }

    /// Compress and append the open chunk, if any.
    fn write_chunk(&mut self) -> Result<()> {
        if self.chunk_records == 0 {
            return Ok(());
        }
        let payload = match self.compressor.compress(&self.buf) {
            Ok(p) => p,
            Err(e) => {
                self.poison();
                return Err(PlogError::io("compress a chunk of", &self.path, e));
            }
        };
        let h = ChunkHeader {
            seq: self.chunks.len() as u32,
            min: self.chunk_min,
            max: self.chunk_max,
            records: self.chunk_records,
            raw_len: self.buf.len() as u32,
            comp_len: payload.len() as u32,
            payload_check: checksum(&[&payload]),
        };
        let mut all = Vec::with_capacity(CHUNK_HEADER_LEN + payload.len());
        all.extend_from_slice(&encode_chunk_header(&h));
        all.extend_from_slice(&payload);
        // One write of the whole chunk: a kill leaves a prefix of it, which readers ignore.
        if let Err(e) = self.write_file(&all) {
            self.poison();
            return Err(PlogError::io("write", &self.path, e));
        }
        self.chunks.push(ChunkInfo { offset: self.offset, min_icount: h.min, max_icount: h.max, records: h.records });
        self.offset += all.len() as u64;
        self.raw_bytes += u64::from(h.raw_len);
        self.compressed_bytes += u64::from(h.comp_len);
        for (&(p, k), c) in &self.chunk_stats {
            let key = (self.names.names[p as usize].to_string(), self.names.names[k as usize].to_string());
            let t = self.totals.entry(key).or_default();
            t.records += c.records;
            t.bytes += c.bytes;
        }
        self.chunk_stats.clear();
        self.names.clear();
        self.buf.clear();
        self.chunk_records = 0;
        self.prev_icount = 0;
        Ok(())
    }

    /// After a failed write: the plog can never be finished, so remove it (a leftover would block
    /// a rerun, which refuses to overwrite) and refuse further use.
    fn poison(&mut self) {
        self.poisoned = true;
        remove_if_same(&self.path, &self.file);
    }

    /// Write the open chunk to the file now (it survives a kill of the process from then on).
    pub fn flush(&mut self) -> Result<()> {
        self.check_usable()?;
        self.write_chunk()
    }

    /// [`Self::flush`] and fsync (it survives a host crash from then on).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        // A failed fsync may have lost written data for good: the file cannot be trusted.
        self.file.sync_data().map_err(|e| {
            self.poison();
            PlogError::io("sync", &self.path, e)
        })
    }

    /// Close the plog: write the last chunk, the trailer and the footer, and fsync. Returns the
    /// trailer as written.
    pub fn finish(mut self) -> Result<PlogTrailer> {
        self.check_usable()?;
        self.write_chunk()?;
        let trailer = PlogTrailer {
            record_count: self.record_count,
            raw_bytes: self.raw_bytes,
            compressed_bytes: self.compressed_bytes,
            kinds: self
                .totals
                .iter()
                .map(|((p, k), c)| KindStats {
                    plugin: p.clone(),
                    kind: k.clone(),
                    records: c.records,
                    raw_bytes: c.bytes,
                })
                .collect(),
            chunks: self.chunks.clone(),
        };
        let tb = encode_trailer(&trailer);
        let footer = encode_footer(&tb, self.offset);
        // The trailer and every chunk are durable before the footer exists: a footer never
        // vouches for data the disk does not have.
        let r = self
            .write_file(&tb)
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.write_file(&footer))
            .and_then(|()| self.file.sync_all());
        if let Err(e) = r {
            self.poison();
            return Err(PlogError::io("write the trailer of", &self.path, e));
        }
        self.finished = true;
        Ok(trailer)
    }
}

impl Drop for PlogWriter {
    /// A writer dropped without [`PlogWriter::finish`] (error path, panic unwinding) writes its
    /// open chunk and no trailer: the file stays readable, as an incomplete plog.
    fn drop(&mut self) {
        if !self.finished && !self.poisoned {
            let _ = self.write_chunk();
        }
    }
}

/// A record being built; see [`PlogWriter::record`]. Nothing reaches the writer's buffer until
/// [`Self::emit`].
#[must_use = "a record is written only by .emit()"]
pub struct RecordBuilder<'w> {
    w: &'w mut PlogWriter,
    icount: u64,
    pc: u64,
    asid: Option<u64>,
    nfields: u64,
    /// (plugin id, kind id) in the chunk's string table.
    ids: (u32, u32),
    /// String-table size before this record: definitions from here on belong to it.
    mark: u32,
    /// First problem found; reported by `emit`.
    err: Option<PlogError>,
}

impl RecordBuilder<'_> {
    fn fail(&mut self, detail: String) {
        if self.err.is_none() {
            self.err = Some(PlogError::invalid(&self.w.path, "record", detail));
        }
    }

    /// Set the address-space identifier (CR3/TTBR); `None` leaves it absent.
    pub fn asid(mut self, asid: impl Into<Option<u64>>) -> Self {
        self.asid = asid.into();
        self
    }

    /// Add field `key` (non-empty, not one of [`crate::RESERVED_KEYS`], not used twice in the
    /// record) with `value`: an integer, float, `bool`, `&str`, bytes, `&Value`, `Option`, ...
    /// (see [`ValueRef`]).
    #[inline]
    pub fn field<'v>(mut self, key: &str, value: impl Into<ValueRef<'v>>) -> Self {
        if self.err.is_none() {
            if let Err(e) = self.add_field(key, value.into()) {
                self.fail(e);
            }
        }
        self
    }

    /// Add field `key` holding a list of `items` (any values convertible to [`ValueRef`]),
    /// without building a [`crate::Value::List`] first.
    pub fn list<'v, I>(mut self, key: &str, items: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<ValueRef<'v>>,
        I::IntoIter: ExactSizeIterator,
    {
        if self.err.is_none() {
            if let Err(e) = self.add_list(key, items.into_iter()) {
                self.fail(e);
            }
        }
        self
    }

    fn add_key(&mut self, key: &str) -> Result<(), String> {
        if is_reserved(key) {
            return Err(format!("field name {key:?} is reserved (icount, pc, asid, plugin and kind are columns)"));
        }
        let w = &mut *self.w;
        let id = w.names.put(&mut w.fields, key, "field name")? as usize;
        if w.names.stamps[id] == w.serial {
            return Err(format!("field {:?} appears twice", truncate(key)));
        }
        w.names.stamps[id] = w.serial;
        self.nfields += 1;
        Ok(())
    }

    fn add_field(&mut self, key: &str, value: ValueRef<'_>) -> Result<(), String> {
        self.add_key(key)?;
        let w = &mut *self.w;
        encode_value(&mut w.names, &mut w.fields, value, 0)
    }

    fn add_list<'v, T: Into<ValueRef<'v>>>(
        &mut self,
        key: &str,
        items: impl ExactSizeIterator<Item = T>,
    ) -> Result<(), String> {
        self.add_key(key)?;
        let w = &mut *self.w;
        let n = items.len();
        w.fields.put_u8(tag::LIST);
        w.fields.put_var(n as u64);
        let mut seen = 0usize;
        for x in items {
            seen += 1;
            if seen > n {
                break;
            }
            encode_value(&mut w.names, &mut w.fields, x.into(), 1)?;
        }
        if seen != n {
            return Err(format!("list iterator announced {n} items but yielded {seen}"));
        }
        Ok(())
    }

    /// Append the record to the open chunk (closing the chunk if it reached its size). Errors:
    /// [`PlogError::InvalidInput`] for a bad record (nothing is written, the writer stays
    /// usable), [`PlogError::Io`] if closing the chunk failed.
    pub fn emit(mut self) -> Result<()> {
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        let w = &mut *self.w;
        let before = w.buf.len();
        if w.chunk_records == 0 {
            w.chunk_min = self.icount;
            w.chunk_max = self.icount;
        }
        // Signed delta from the previous record (wrapping, so any two u64 icounts work): records
        // come in emission order, which need not be icount order.
        w.buf.put_var(zigzag(self.icount.wrapping_sub(w.prev_icount) as i64));
        w.buf.put_var(self.pc);
        match self.asid {
            Some(a) => {
                w.buf.put_u8(1);
                w.buf.put_var(a);
            }
            None => w.buf.put_u8(0),
        }
        w.buf.extend_from_slice(&w.head);
        w.buf.put_var(self.nfields);
        w.buf.extend_from_slice(&w.fields);
        let len = (w.buf.len() - before) as u64;
        let c = w.chunk_stats.entry(self.ids).or_default();
        c.records += 1;
        c.bytes += len;
        w.last_icount = self.icount;
        w.prev_icount = self.icount;
        w.chunk_min = w.chunk_min.min(self.icount);
        w.chunk_max = w.chunk_max.max(self.icount);
        w.chunk_records += 1;
        w.record_count += 1;
        // The record's string definitions are now in the stream.
        self.mark = w.names.len();
        if w.buf.len() >= w.chunk_target {
            w.write_chunk()?;
            self.mark = 0;
        }
        Ok(())
    }
}

impl Drop for RecordBuilder<'_> {
    /// An abandoned or failed record un-defines the strings it introduced.
    fn drop(&mut self) {
        if self.mark < self.w.names.len() {
            self.w.names.rollback(self.mark);
        }
    }
}

// Plugins may own a writer and be moved between threads.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<PlogWriter>();
};
