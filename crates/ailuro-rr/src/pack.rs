//! The `.rr` container, byte-compatible with PANDA's `rrpack.py`/`rrunpack.py`:
//!
//! ```text
//! 0x00  8  magic "PANDA_RR"
//! 0x08  8  u64 LE instruction count
//! 0x10 16  MD5 of every byte from 0x20 to the end
//! 0x20  ..  xz-compressed tar holding NAME-rr-snp, then NAME-rr-nondet.log
//! ```
//!
//! Unlike PANDA we write the real instruction count of the recording (PANDA read the first
//! 8 bytes of its own log). Unpacking is defensive: MD5 first, then only the two expected regular
//! files with plain names are extracted, via temporary files, never over existing files unless
//! forced.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use md5::{Digest, Md5};

use crate::codec::show_magic;
use crate::error::{RecordingError, Result};
use crate::fsutil::TempFile;
use crate::{read_snapshot_header, recording_paths, LogReader, LOG_SUFFIX, SNAPSHOT_SUFFIX};

/// Magic at offset 0 of a `.rr` file.
pub const RR_MAGIC: &[u8; 8] = b"PANDA_RR";
const RR_HEADER_LEN: usize = 0x20;
const XZ_PRESET: u32 = 6;

/// Options of [`pack`].
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Output file; default `NAME.rr`.
    pub out: Option<PathBuf>,
    /// Replace an existing output file.
    pub force: bool,
    /// Pack a recording whose log has no trailer (cut short by a crash).
    pub allow_incomplete: bool,
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// The `.rr` file.
    pub out: PathBuf,
    /// Instruction count written into the container header.
    pub instructions: u64,
    /// Whether the packed log is complete.
    pub complete: bool,
}

/// Options of [`unpack`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Directory to unpack into.
    pub dest_dir: PathBuf,
    /// Replace existing files.
    pub force: bool,
    /// Check that the members are an Ailuro snapshot and log (turn off for PANDA recordings).
    pub validate: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self { dest_dir: PathBuf::from("."), force: false, validate: true }
    }
}

/// What [`unpack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackInfo {
    /// Recording name (destination directory joined with the members' base name).
    pub name: PathBuf,
    /// The snapshot file written.
    pub snapshot: PathBuf,
    /// The log file written.
    pub log: PathBuf,
    /// Instruction count from the container header.
    pub instructions: u64,
    /// Whether the log is complete (`None` if not validated).
    pub complete: Option<bool>,
}

/// Writer that feeds an MD5 of everything it passes on.
struct Md5Writer<W: Write> {
    inner: W,
    md5: Md5,
}

impl<W: Write> Write for Md5Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.md5.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// BLAKE3 of a whole file, streamed.
fn hash_file(path: &Path) -> Result<[u8; 32]> {
    let f = File::open(path).map_err(|e| RecordingError::open("snapshot", path, e))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(BufReader::with_capacity(1 << 20, f)).map_err(|e| RecordingError::io("read", path, e))?;
    Ok(*h.finalize().as_bytes())
}

/// Pack recording `name` into a `.rr` file. The recording is checked first: both files present,
/// log and snapshot belonging together, log complete unless `allow_incomplete`.
pub fn pack(name: &Path, opts: &PackOptions) -> Result<PackInfo> {
    let (snp, logp) = recording_paths(name);
    let base = name.file_name().ok_or_else(|| RecordingError::InvalidInput {
        what: "recording name",
        detail: format!("{} has no file name component", name.display()),
    })?;
    let sh = read_snapshot_header(&snp)?;
    let log = LogReader::open(&logp)?;
    if !opts.allow_incomplete {
        log.expect_complete(", use --allow-incomplete to pack it anyway")?;
    }
    let mismatch = |detail: String| RecordingError::Mismatch { snapshot: snp.clone(), log: logp.clone(), detail };
    if log.header().arch != sh.arch || log.header().start_icount != sh.start_icount {
        return Err(mismatch("architecture or start instruction count differ".into()));
    }
    if hash_file(&snp)? != log.header().snapshot_hash {
        return Err(mismatch("the log was recorded from a different snapshot (hash differs)".into()));
    }
    let instructions = log.instruction_count();
    let complete = log.is_complete();
    drop(log);

    let out = opts.out.clone().unwrap_or_else(|| {
        let mut s = name.as_os_str().to_os_string();
        s.push(".rr");
        PathBuf::from(s)
    });
    if !opts.force && out.exists() {
        return Err(RecordingError::AlreadyExists { path: out, hint: ", use --force" });
    }
    let mut tmp = TempFile::new_for(&out)?;
    let tmp_path = tmp.path.clone();
    let werr = |e: io::Error| RecordingError::io("write", &tmp_path, e);
    let mut head = Vec::with_capacity(RR_HEADER_LEN);
    head.extend_from_slice(RR_MAGIC);
    head.extend_from_slice(&instructions.to_le_bytes());
    head.extend_from_slice(&[0u8; 16]); // MD5, patched below
    tmp.file().write_all(&head).map_err(werr)?;
    let digest = write_tar(tmp.file(), base, &[(&snp, SNAPSHOT_SUFFIX), (&logp, LOG_SUFFIX)]).map_err(|e| match e {
        TarError::Input(p, e) => RecordingError::io("archive", &p, e),
        TarError::Output(e) => werr(e),
    })?;
    let file = tmp.file();
    file.seek(SeekFrom::Start(0x10)).map_err(werr)?;
    file.write_all(&digest).map_err(werr)?;
    tmp.publish(&out, opts.force, ", use --force")?;
    Ok(PackInfo { out, instructions, complete })
}

enum TarError {
    Input(PathBuf, io::Error),
    Output(io::Error),
}

/// Write the xz-compressed tar of `files` (renamed to `base` + suffix) to `out`; returns the MD5
/// of the bytes written.
fn write_tar(
    out: &mut File,
    base: &std::ffi::OsStr,
    files: &[(&PathBuf, &str)],
) -> std::result::Result<[u8; 16], TarError> {
    let md5w = Md5Writer { inner: BufWriter::with_capacity(1 << 20, out), md5: Md5::new() };
    let xz = xz2::write::XzEncoder::new(md5w, XZ_PRESET);
    let mut tar = tar::Builder::new(xz);
    for (path, suffix) in files {
        let mut member = base.to_os_string();
        member.push(suffix);
        let input = |e| TarError::Input(path.to_path_buf(), e);
        let f = File::open(path).map_err(input)?;
        let md = f.metadata().map_err(input)?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(md.len());
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(
            md.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs()),
        );
        // `take` guards against the file growing while we copy it.
        tar.append_data(&mut h, Path::new(&member), BufReader::new(f).take(md.len())).map_err(input)?;
    }
    let xz = tar.into_inner().map_err(TarError::Output)?;
    let mut md5w = xz.finish().map_err(TarError::Output)?;
    md5w.flush().map_err(TarError::Output)?;
    Ok(md5w.md5.finalize().into())
}

/// Which member of the archive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Member {
    Snapshot,
    Log,
}

/// Check a member path: relative, only plain components, a file name ending in one of the two
/// suffixes. Returns (member kind, base name, file name). Directory components (PANDA packs
/// `dir/NAME-rr-snp` if given a path) are dropped: members always land in the destination.
fn classify(p: &Path) -> std::result::Result<(Member, String, String), String> {
    let shown = p.display();
    let mut last = None;
    for c in p.components() {
        match c {
            Component::Normal(s) => last = Some(s),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "member {shown:?} has an unsafe name (absolute or with \"..\"); refusing to unpack"
                ))
            }
        }
    }
    let file =
        last.and_then(|s| s.to_str()).ok_or_else(|| format!("member {shown:?} has no usable file name"))?.to_string();
    for (suffix, m) in [(SNAPSHOT_SUFFIX, Member::Snapshot), (LOG_SUFFIX, Member::Log)] {
        if let Some(base) = file.strip_suffix(suffix) {
            if !base.is_empty() {
                return Ok((m, base.to_string(), file));
            }
        }
    }
    Err(format!("unexpected member {shown:?} (expected NAME{SNAPSHOT_SUFFIX} and NAME{LOG_SUFFIX})"))
}

/// Verify and unpack a `.rr` file.
pub fn unpack(rr: &Path, opts: &UnpackOptions) -> Result<UnpackInfo> {
    let bad = |detail: String| RecordingError::BadArchive { path: rr.to_path_buf(), detail };
    if !opts.dest_dir.is_dir() {
        return Err(RecordingError::NotFound { what: "destination directory", path: opts.dest_dir.clone() });
    }
    let mut f = File::open(rr).map_err(|e| RecordingError::open(".rr archive", rr, e))?;
    let len = f.metadata().map_err(|e| RecordingError::io("stat", rr, e))?.len();
    let mut head = [0u8; RR_HEADER_LEN];
    let n = len.min(RR_HEADER_LEN as u64) as usize;
    f.read_exact(&mut head[..n]).map_err(|e| RecordingError::io("read", rr, e))?;
    let m = n.min(8);
    if head[..m] != RR_MAGIC[..m] {
        return Err(RecordingError::BadMagic {
            path: rr.to_path_buf(),
            what: "a PANDA/Ailuro .rr archive",
            expected: "PANDA_RR".into(),
            found: show_magic(&head[..m]),
        });
    }
    if n < RR_HEADER_LEN || len == RR_HEADER_LEN as u64 {
        return Err(bad(format!("truncated: the file is only {len} bytes")));
    }
    let instructions = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
    let mut md5 = Md5::new();
    let mut br = BufReader::with_capacity(1 << 20, &mut f);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = br.read(&mut buf).map_err(|e| RecordingError::io("read", rr, e))?;
        if k == 0 {
            break;
        }
        md5.update(&buf[..k]);
    }
    drop(br);
    if md5.finalize()[..] != head[0x10..0x20] {
        return Err(bad("MD5 checksum mismatch: the archive is corrupt or truncated".into()));
    }
    f.seek(SeekFrom::Start(RR_HEADER_LEN as u64)).map_err(|e| RecordingError::io("seek in", rr, e))?;

    // Multi-stream: parallel xz tools (pixz, `xz -T` in some versions) may concatenate streams.
    let xz = xz2::read::XzDecoder::new_multi_decoder(BufReader::with_capacity(1 << 20, f));
    let mut archive = tar::Archive::new(xz);
    let entries = archive.entries().map_err(|e| bad(format!("corrupt xz/tar data: {e}")))?;
    // (kind, base, final path, temp file)
    let mut got: Vec<(Member, String, PathBuf, TempFile)> = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt xz/tar data: {e}")))?;
        let et = entry.header().entry_type();
        if et == tar::EntryType::XGlobalHeader {
            continue;
        }
        let p = entry.path().map_err(|e| bad(format!("bad member name: {e}")))?.into_owned();
        if !matches!(et, tar::EntryType::Regular | tar::EntryType::Continuous) {
            return Err(bad(format!("member {:?} is not a regular file; refusing to unpack", p.display())));
        }
        let (kind, base, file) = classify(&p).map_err(bad)?;
        if got.iter().any(|g| g.0 == kind) {
            return Err(bad(format!("member {:?} appears twice", p.display())));
        }
        if let Some(g) = got.first() {
            if g.1 != base {
                return Err(bad(format!("members belong to different recordings ({:?} and {:?})", g.1, base)));
            }
        }
        let target = opts.dest_dir.join(&file);
        if !opts.force && target.exists() {
            return Err(RecordingError::AlreadyExists { path: target, hint: ", use --force" });
        }
        let mut tmp = TempFile::new_for(&target)?;
        let tp = tmp.path.clone();
        let mut w = BufWriter::with_capacity(1 << 20, tmp.file());
        // Copy by hand so that read errors (damaged archive) and write errors (our disk) get
        // the right message.
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad(format!("corrupt xz/tar data in member {:?}: {e}", p.display()))),
            };
            w.write_all(&buf[..n]).map_err(|e| RecordingError::io("write", &tp, e))?;
        }
        w.flush().map_err(|e| RecordingError::io("write", &tp, e))?;
        drop(w);
        got.push((kind, base, target, tmp));
    }
    if got.len() != 2 {
        return Err(bad(format!("expected 2 members (NAME{SNAPSHOT_SUFFIX}, NAME{LOG_SUFFIX}), found {}", got.len())));
    }
    got.sort_by_key(|g| g.0 == Member::Log);
    let base = got[0].1.clone();
    let mut complete = None;
    if opts.validate {
        let check = |what: &str, e: RecordingError| bad(format!("member {what} is not valid: {e}"));
        read_snapshot_header(&got[0].3.path).map_err(|e| check(&format!("{base}{SNAPSHOT_SUFFIX}"), e))?;
        let log = LogReader::open(&got[1].3.path).map_err(|e| check(&format!("{base}{LOG_SUFFIX}"), e))?;
        complete = Some(log.is_complete());
    }
    let mut paths = Vec::new();
    for (_, _, target, tmp) in got {
        tmp.publish(&target, opts.force, ", use --force")?;
        paths.push(target);
    }
    Ok(UnpackInfo {
        name: opts.dest_dir.join(&base),
        snapshot: paths[0].clone(),
        log: paths[1].clone(),
        instructions,
        complete,
    })
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
