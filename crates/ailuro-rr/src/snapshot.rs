//! The snapshot (`NAME-rr-snp`): header, opaque state blobs, RAM with zero pages elided, and an
//! end section holding the hash of everything before it. Byte layout: docs/FORMATS.md.
//!
//! The file is written to a temporary name, fsynced and renamed into place, so a snapshot under
//! its final name is always complete.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use ailuro_bus::{GuestRam, PAGE_SIZE};

use crate::codec::{checksum, show_magic, DecodeError, Put, Reader};
use crate::error::{RecordingError, Result};
use crate::fsutil::{check_target, TempFile};
use crate::{Arch, MAX_CREATOR_LEN};

/// Magic at offset 0 of a snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"AILUROSN";
/// Snapshot format version written by this build (and the highest it reads).
pub const SNAPSHOT_VERSION: u32 = 1;
/// Largest machine-config blob.
pub const MAX_CONFIG_LEN: usize = 1 << 20;
/// Largest CPU, device or console blob (1 GiB).
pub const MAX_BLOB_LEN: u64 = 1 << 30;
/// Largest RAM a snapshot may describe (the limit of [`GuestRam`]).
pub const MAX_RAM_SIZE: u64 = 1 << 40;
const HEADER_FIXED: usize = 56;
const HEADER_CHECK: usize = 16;
const MAX_HEADER_LEN: usize = HEADER_FIXED + MAX_CONFIG_LEN + MAX_CREATOR_LEN + HEADER_CHECK;
const SECTION_HEAD: usize = 16;
const SECTION_CHECK: usize = 16;
/// Pages per independently compressed RAM part (16 MiB of raw RAM): bounds memory on both sides.
const PAGES_PER_PART: u32 = 4096;
const MAX_PAGES_PER_PART: u32 = 16384;
const ZSTD_LEVEL: i32 = 3;

const TAG_CPU: &[u8; 4] = b"CPU_";
const TAG_DEVS: &[u8; 4] = b"DEVS";
const TAG_CONS: &[u8; 4] = b"CONS";
const TAG_RAMH: &[u8; 4] = b"RAMH";
const TAG_RAMP: &[u8; 4] = b"RAMP";
const TAG_END: &[u8; 4] = b"END_";

/// Snapshot header: what machine the state belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Guest architecture.
    pub arch: Arch,
    /// Guest-physical address of the first RAM byte.
    pub ram_base: u64,
    /// RAM size in bytes (non-zero multiple of 4 KiB).
    pub ram_size: u64,
    /// Instruction count at which the snapshot was taken.
    pub start_icount: u64,
    /// Machine configuration, opaque to this crate (at most [`MAX_CONFIG_LEN`] bytes).
    pub machine_config: Vec<u8>,
    /// Free-form description of the writer (at most [`MAX_CREATOR_LEN`] bytes).
    pub creator: String,
}

impl SnapshotHeader {
    /// Error unless the snapshot is of `expected` architecture.
    pub fn expect_arch(&self, path: &Path, expected: Arch) -> Result<()> {
        if self.arch != expected {
            return Err(RecordingError::WrongArch { path: path.to_path_buf(), expected, found: self.arch });
        }
        Ok(())
    }
}

/// A snapshot as read back, without its RAM (returned separately as a [`GuestRam`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The header.
    pub header: SnapshotHeader,
    /// Format version of the file.
    pub version: u32,
    /// CPU state blob (opaque).
    pub cpu: Vec<u8>,
    /// Device state blob (opaque).
    pub devices: Vec<u8>,
    /// Console-tap state blob (opaque).
    pub console: Vec<u8>,
    /// BLAKE3 of the whole file (what the log header's `snapshot_hash` must equal).
    pub file_hash: [u8; 32],
}

/// Writer that hashes everything it passes on.
struct HashWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_section<W: Write>(w: &mut W, tag: &[u8; 4], payload: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let mut head = Vec::with_capacity(SECTION_HEAD);
    head.put_bytes(tag);
    head.put_u32(0);
    head.put_u64(len as u64);
    let mut h = blake3::Hasher::new();
    h.update(&head);
    w.write_all(&head)?;
    for p in payload {
        h.update(p);
        w.write_all(p)?;
    }
    w.write_all(&h.finalize().as_bytes()[..SECTION_CHECK])
}

fn encode_header(h: &SnapshotHeader) -> Vec<u8> {
    let len = HEADER_FIXED + h.machine_config.len() + h.creator.len() + HEADER_CHECK;
    let mut b = Vec::with_capacity(len);
    b.put_bytes(SNAPSHOT_MAGIC);
    b.put_u32(SNAPSHOT_VERSION);
    b.put_u32(len as u32);
    b.put_u8(h.arch.tag());
    b.put_bytes(&[0; 3]);
    b.put_u32(PAGE_SIZE as u32);
    b.put_u64(h.ram_base);
    b.put_u64(h.ram_size);
    b.put_u64(h.start_icount);
    b.put_u32(h.machine_config.len() as u32);
    b.put_bytes(&h.machine_config);
    b.put_u32(h.creator.len() as u32);
    b.put_bytes(h.creator.as_bytes());
    let c: [u8; HEADER_CHECK] = checksum(&[&b]);
    b.put_bytes(&c);
    b
}

/// Write a snapshot to `path` (via a temporary file, fsync and rename). Without `overwrite` an
/// existing `path` (anything under that name, even a dangling symbolic link) is never replaced;
/// with it, a symbolic link at `path` is replaced itself, never the file it points to. A directory
/// is never replaced. `ram` must match the header's base and size. Returns the BLAKE3 of the
/// file, to be stored in the log header.
pub fn write_snapshot(
    path: &Path,
    header: &SnapshotHeader,
    cpu: &[u8],
    devices: &[u8],
    console: &[u8],
    ram: &GuestRam,
    overwrite: bool,
) -> Result<[u8; 32]> {
    let (tmp, hash) = write_snapshot_temp(path, header, cpu, devices, console, ram, overwrite)?;
    tmp.publish(overwrite, "")?;
    Ok(hash)
}

/// Write a snapshot for `path` into a synced-on-publish temporary file, not yet published.
pub(crate) fn write_snapshot_temp(
    path: &Path,
    header: &SnapshotHeader,
    cpu: &[u8],
    devices: &[u8],
    console: &[u8],
    ram: &GuestRam,
    overwrite: bool,
) -> Result<(TempFile, [u8; 32])> {
    let invalid = |detail: String| RecordingError::InvalidInput { what: "snapshot", detail };
    if ram.base() != header.ram_base || ram.size() != header.ram_size {
        return Err(invalid(format!(
            "header says RAM {:#x}+{:#x}, the RAM given is {:#x}+{:#x}",
            header.ram_base,
            header.ram_size,
            ram.base(),
            ram.size()
        )));
    }
    if header.machine_config.len() > MAX_CONFIG_LEN || header.creator.len() > MAX_CREATOR_LEN {
        return Err(invalid("machine config or creator string too long".into()));
    }
    for (name, b) in [("CPU", cpu), ("device", devices), ("console", console)] {
        if b.len() as u64 > MAX_BLOB_LEN {
            return Err(invalid(format!("{name} state of {} bytes exceeds {MAX_BLOB_LEN}", b.len())));
        }
    }
    // Checked again atomically at publish time; this early check avoids the work and refuses
    // directories and (without overwrite) symbolic links before anything is written.
    check_target(path, overwrite, "")?;
    let mut tmp = TempFile::new_for(path)?;
    // Errors name the snapshot being written, not the temporary file.
    let io = |e| RecordingError::io("write", path, e);
    let mut w = HashWriter { inner: BufWriter::with_capacity(1 << 20, tmp.file()), hasher: blake3::Hasher::new() };
    w.write_all(&encode_header(header)).map_err(io)?;
    write_section(&mut w, TAG_CPU, &[cpu]).map_err(io)?;
    write_section(&mut w, TAG_DEVS, &[devices]).map_err(io)?;
    write_section(&mut w, TAG_CONS, &[console]).map_err(io)?;
    write_ram(&mut w, ram).map_err(io)?;
    let before_end = *w.hasher.finalize().as_bytes();
    write_section(&mut w, TAG_END, &[&before_end]).map_err(io)?;
    w.flush().map_err(io)?;
    let file_hash = *w.hasher.finalize().as_bytes();
    drop(w);
    Ok((tmp, file_hash))
}

fn write_ram<W: Write>(w: &mut W, ram: &GuestRam) -> std::io::Result<()> {
    let ps = PAGE_SIZE as usize;
    let data = ram.as_slice();
    let pages = data.len() / ps;
    let zero = [0u8; PAGE_SIZE as usize];
    let mut bitmap = vec![0u8; pages.div_ceil(8)];
    for (i, p) in data.chunks_exact(ps).enumerate() {
        if p != zero {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    let parts = pages.div_ceil(PAGES_PER_PART as usize);
    let mut head = Vec::new();
    head.put_u64(pages as u64);
    head.put_u32(PAGES_PER_PART);
    head.put_u32(parts as u32);
    write_section(w, TAG_RAMH, &[&head, &bitmap])?;
    let mut raw = Vec::with_capacity(PAGES_PER_PART as usize * ps);
    for part in 0..parts {
        let first = part * PAGES_PER_PART as usize;
        let last = (first + PAGES_PER_PART as usize).min(pages);
        raw.clear();
        for i in (first..last).filter(|i| bitmap[i / 8] & (1 << (i % 8)) != 0) {
            raw.extend_from_slice(&data[i * ps..(i + 1) * ps]);
        }
        let n = (raw.len() / ps) as u32;
        let comp = if n == 0 { Vec::new() } else { zstd::bulk::compress(&raw, ZSTD_LEVEL)? };
        let mut ph = Vec::new();
        ph.put_u32(part as u32);
        ph.put_u32(n);
        write_section(w, TAG_RAMP, &[&ph, &comp])?;
    }
    Ok(())
}

/// Reader that hashes everything it passes on and tracks the file position.
struct HashReader<R: Read> {
    inner: R,
    hasher: blake3::Hasher,
    pos: u64,
    len: u64,
}

impl<R: Read> HashReader<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

struct SnapReader<'p> {
    path: &'p Path,
    r: HashReader<BufReader<File>>,
}

impl SnapReader<'_> {
    fn open(path: &Path) -> Result<SnapReader<'_>> {
        let f = File::open(path).map_err(|e| RecordingError::open("snapshot", path, e))?;
        let len = f.metadata().map_err(|e| RecordingError::io("stat", path, e))?.len();
        Ok(SnapReader {
            path,
            r: HashReader { inner: BufReader::with_capacity(1 << 20, f), hasher: blake3::Hasher::new(), pos: 0, len },
        })
    }

    /// Read exactly `buf.len()` bytes of structure `what`, which must be in the file.
    fn read(&mut self, what: &str, buf: &mut [u8]) -> Result<()> {
        let at = self.r.pos;
        if (buf.len() as u64) > self.r.remaining() {
            return Err(RecordingError::truncated(
                self.path,
                what,
                at,
                format!("needs {} bytes, the file has {} left", buf.len(), self.r.remaining()),
            ));
        }
        self.r.read_exact(buf).map_err(|e| RecordingError::io("read", self.path, e))
    }

    fn read_header(&mut self) -> Result<(u32, SnapshotHeader)> {
        let path = self.path;
        let mut first = [0u8; 16];
        let n = self.r.remaining().min(16) as usize;
        self.read("snapshot header", &mut first[..n])?;
        let m = n.min(8);
        if first[..m] != SNAPSHOT_MAGIC[..m] {
            return Err(RecordingError::BadMagic {
                path: path.to_path_buf(),
                what: "an Ailuro snapshot",
                expected: "AILUROSN".into(),
                found: show_magic(&first[..m]),
            });
        }
        if n < 16 {
            return Err(RecordingError::truncated(path, "snapshot header", 0, format!("file is only {n} bytes")));
        }
        let version = u32::from_le_bytes(first[8..12].try_into().unwrap_or_default());
        if version == 0 {
            return Err(RecordingError::corrupt(path, "snapshot header", 0, "format version 0"));
        }
        if version > SNAPSHOT_VERSION {
            return Err(RecordingError::NewerVersion {
                path: path.to_path_buf(),
                what: "snapshot",
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let hlen = u32::from_le_bytes(first[12..16].try_into().unwrap_or_default()) as usize;
        if !(HEADER_FIXED + HEADER_CHECK..=MAX_HEADER_LEN).contains(&hlen) {
            return Err(RecordingError::corrupt(
                path,
                "snapshot header",
                0,
                format!("impossible header length {hlen}"),
            ));
        }
        let mut hb = vec![0u8; hlen];
        hb[..16].copy_from_slice(&first);
        self.read("snapshot header", &mut hb[16..])?;
        let c: [u8; HEADER_CHECK] = checksum(&[&hb[..hlen - HEADER_CHECK]]);
        if c != hb[hlen - HEADER_CHECK..] {
            return Err(RecordingError::corrupt(path, "snapshot header", 0, "checksum mismatch"));
        }
        let mut r = Reader::new(&hb[16..hlen - HEADER_CHECK]);
        type Fields = (u8, u32, u64, u64, u64, Vec<u8>, Vec<u8>);
        let parse = |r: &mut Reader<'_>| -> std::result::Result<Fields, DecodeError> {
            let tag = r.u8()?;
            r.bytes(3)?;
            let page = r.u32()?;
            let base = r.u64()?;
            let size = r.u64()?;
            let start = r.u64()?;
            let cl = r.u32()? as usize;
            let config = r.bytes(cl)?.to_vec();
            let sl = r.u32()? as usize;
            let creator = r.bytes(sl)?.to_vec();
            Ok((tag, page, base, size, start, config, creator))
        };
        let (tag, page, ram_base, ram_size, start_icount, machine_config, creator) =
            parse(&mut r).map_err(|e| RecordingError::corrupt(path, "snapshot header", 0, e.to_string()))?;
        let bad = |d: String| RecordingError::corrupt(path, "snapshot header", 0, d);
        if r.remaining() != 0 {
            return Err(bad("length disagrees with its contents".into()));
        }
        let arch = Arch::from_tag(tag).ok_or(RecordingError::UnknownArch { path: path.to_path_buf(), tag })?;
        if u64::from(page) != PAGE_SIZE {
            return Err(bad(format!("page size {page}, this build supports {PAGE_SIZE}")));
        }
        if ram_size == 0
            || !ram_size.is_multiple_of(PAGE_SIZE)
            || ram_size > MAX_RAM_SIZE
            || ram_base.checked_add(ram_size).is_none()
        {
            return Err(bad(format!("impossible RAM {ram_base:#x}+{ram_size:#x}")));
        }
        let creator = String::from_utf8(creator).map_err(|_| bad("creator string is not UTF-8".into()))?;
        Ok((version, SnapshotHeader { arch, ram_base, ram_size, start_icount, machine_config, creator }))
    }

    /// Read the head of a section with tag `tag` and check its tag and payload length (at most
    /// `max`, and within the file). Returns (section name for errors, its offset, the head bytes,
    /// the payload length).
    fn section_head(&mut self, tag: &[u8; 4], max: u64) -> Result<(String, u64, [u8; SECTION_HEAD], u64)> {
        let name = format!("snapshot section {}", show_magic(tag));
        let at = self.r.pos;
        let mut head = [0u8; SECTION_HEAD];
        self.read(&name, &mut head)?;
        if &head[..4] != tag {
            return Err(RecordingError::corrupt(
                self.path,
                name,
                at,
                format!("expected section \"{}\", found \"{}\"", show_magic(tag), show_magic(&head[..4])),
            ));
        }
        let len = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        if len > max {
            return Err(RecordingError::corrupt(self.path, name, at, format!("length {len} exceeds the limit {max}")));
        }
        if len + SECTION_CHECK as u64 > self.r.remaining() {
            return Err(RecordingError::truncated(
                self.path,
                name,
                at,
                format!("section of {len} bytes, the file has {} left", self.r.remaining()),
            ));
        }
        Ok((name, at, head, len))
    }

    /// Read a section with tag `tag` whose payload is at most `max` bytes.
    fn section(&mut self, tag: &[u8; 4], max: u64) -> Result<Vec<u8>> {
        let (name, at, head, len) = self.section_head(tag, max)?;
        let mut payload = vec![0u8; len as usize];
        self.read(&name, &mut payload)?;
        let mut c = [0u8; SECTION_CHECK];
        self.read(&name, &mut c)?;
        let want: [u8; SECTION_CHECK] = checksum(&[&head, &payload]);
        if want != c {
            return Err(RecordingError::corrupt(self.path, name, at, "checksum mismatch"));
        }
        Ok(payload)
    }

    /// Like [`Self::section`], but stream the payload through the checksum instead of returning
    /// it (for blobs of up to 1 GiB that a verification does not need). Returns the length.
    fn skip_section(&mut self, tag: &[u8; 4], max: u64) -> Result<u64> {
        let (name, at, head, len) = self.section_head(tag, max)?;
        let mut h = blake3::Hasher::new();
        h.update(&head);
        let mut buf = vec![0u8; (1 << 20).min(len as usize)];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.read(&name, &mut buf[..n])?;
            h.update(&buf[..n]);
            left -= n as u64;
        }
        let mut c = [0u8; SECTION_CHECK];
        self.read(&name, &mut c)?;
        if h.finalize().as_bytes()[..SECTION_CHECK] != c {
            return Err(RecordingError::corrupt(self.path, name, at, "checksum mismatch"));
        }
        Ok(len)
    }
}

/// Read only the header of a snapshot (cheap; for arch checks and validation).
pub fn read_snapshot_header(path: &Path) -> Result<SnapshotHeader> {
    Ok(SnapReader::open(path)?.read_header()?.1)
}

/// Read a whole snapshot, verifying every checksum. RAM is allocated only after the header and
/// the RAM page map have been validated.
pub fn read_snapshot(path: &Path) -> Result<(Snapshot, GuestRam)> {
    let mut sr = SnapReader::open(path)?;
    let (version, header) = sr.read_header()?;
    let cpu = sr.section(TAG_CPU, MAX_BLOB_LEN)?;
    let devices = sr.section(TAG_DEVS, MAX_BLOB_LEN)?;
    let console = sr.section(TAG_CONS, MAX_BLOB_LEN)?;
    let ram = read_ram(&mut sr, &header, true)?;
    let file_hash = sr.finish()?;
    let ram = ram.ok_or_else(|| RecordingError::corrupt(path, "snapshot RAM", 0, "no RAM read"))?;
    Ok((Snapshot { header, version, cpu, devices, console, file_hash }, ram))
}

/// What [`verify_snapshot`] found: a snapshot's header and whole-file hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The header.
    pub header: SnapshotHeader,
    /// Format version of the file.
    pub version: u32,
    /// BLAKE3 of the whole file (what the log header's `snapshot_hash` must equal).
    pub file_hash: [u8; 32],
}

/// Check a whole snapshot exactly as [`read_snapshot`] does (every section checksum, the RAM
/// parts, the end hash, no trailing bytes) without keeping its contents: guest RAM is not
/// allocated and the state blobs are streamed, so memory use is bounded by one RAM part (16 MiB)
/// whatever the snapshot's size. For packing and unpacking, which must not accept a damaged
/// snapshot but do not need its contents.
pub fn verify_snapshot(path: &Path) -> Result<SnapshotInfo> {
    let mut sr = SnapReader::open(path)?;
    let (version, header) = sr.read_header()?;
    for tag in [TAG_CPU, TAG_DEVS, TAG_CONS] {
        sr.skip_section(tag, MAX_BLOB_LEN)?;
    }
    read_ram(&mut sr, &header, false)?;
    let file_hash = sr.finish()?;
    Ok(SnapshotInfo { header, version, file_hash })
}

impl SnapReader<'_> {
    /// Read the `END_` section, check it against the hash of everything before it and that
    /// nothing follows; returns the hash of the whole file.
    fn finish(&mut self) -> Result<[u8; 32]> {
        let before_end = *self.r.hasher.finalize().as_bytes();
        let end_at = self.r.pos;
        let end = self.section(TAG_END, 32)?;
        if end != before_end {
            return Err(RecordingError::corrupt(self.path, "snapshot", end_at, "whole-file hash mismatch"));
        }
        // Unlike a log (which is appended to and may legitimately be found with bytes after its
        // end, see LogReader::trailing_bytes), a snapshot is written whole and renamed into place:
        // anything after its end means the file is not what was written. That is an error.
        if self.r.remaining() != 0 {
            return Err(RecordingError::corrupt(
                self.path,
                "snapshot",
                self.r.pos,
                format!("{} unexpected bytes after the end", self.r.remaining()),
            ));
        }
        Ok(*self.r.hasher.finalize().as_bytes())
    }
}

/// Read the RAM page map and parts; with `alloc`, into a new [`GuestRam`] (allocated only once
/// the map is validated), otherwise only verifying them.
fn read_ram(sr: &mut SnapReader<'_>, h: &SnapshotHeader, alloc: bool) -> Result<Option<GuestRam>> {
    let path = sr.path;
    let ps = PAGE_SIZE as usize;
    let pages = h.ram_size / PAGE_SIZE;
    let head_at = sr.r.pos;
    let rh = sr.section(TAG_RAMH, 16 + pages.div_ceil(8))?;
    let bad = |at: u64, d: String| RecordingError::corrupt(path, "snapshot RAM", at, d);
    let mut r = Reader::new(&rh);
    let (np, ppp, parts) =
        (|| Ok::<_, DecodeError>((r.u64()?, r.u32()?, r.u32()?)))().map_err(|e| bad(head_at, e.to_string()))?;
    if np != pages || !(1..=MAX_PAGES_PER_PART).contains(&ppp) || u64::from(parts) != pages.div_ceil(u64::from(ppp)) {
        return Err(bad(
            head_at,
            format!("page map for {np} pages in {parts} parts of {ppp}, header says {pages} pages"),
        ));
    }
    let bitmap = &rh[16..];
    if bitmap.len() as u64 != pages.div_ceil(8) {
        return Err(bad(head_at, format!("page bitmap of {} bytes for {pages} pages", bitmap.len())));
    }
    let is_set = |i: usize| bitmap[i / 8] & (1 << (i % 8)) != 0;
    let mut ram =
        if alloc { Some(GuestRam::new(h.ram_base, h.ram_size).map_err(|e| bad(0, e.to_string()))?) } else { None };
    let pages = pages as usize;
    let ppp = ppp as usize;
    for part in 0..parts as usize {
        let at = sr.r.pos;
        let sec = sr.section(TAG_RAMP, 8 + (ppp * ps) as u64 + (1 << 20))?;
        let mut r = Reader::new(&sec);
        let (idx, n) = (|| Ok::<_, DecodeError>((r.u32()?, r.u32()?)))().map_err(|e| bad(at, e.to_string()))?;
        let first = part * ppp;
        let last = (first + ppp).min(pages);
        let want = (first..last).filter(|&i| is_set(i)).count();
        if idx as usize != part || n as usize != want {
            return Err(bad(
                at,
                format!("RAM part {idx} with {n} pages where part {part} with {want} pages was expected"),
            ));
        }
        if want == 0 {
            if r.remaining() != 0 {
                return Err(bad(at, "data in an all-zero RAM part".into()));
            }
            continue;
        }
        let raw = zstd::bulk::decompress(&sec[8..], want * ps)
            .map_err(|e| bad(at, format!("RAM part {part}: zstd decompression failed: {e}")))?;
        if raw.len() != want * ps {
            return Err(bad(
                at,
                format!("RAM part {part} decompressed to {} bytes, expected {}", raw.len(), want * ps),
            ));
        }
        if let Some(ram) = ram.as_mut() {
            let data = ram.as_mut_slice();
            for (src, i) in raw.chunks_exact(ps).zip((first..last).filter(|&i| is_set(i))) {
                data[i * ps..(i + 1) * ps].copy_from_slice(src);
            }
        }
    }
    Ok(ram)
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
