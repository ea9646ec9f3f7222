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
//! files with plain names are extracted, to temporary files; both are verified completely (every
//! checksum, the log's trailer, the pairing of log and snapshot) and only then published, both or
//! neither, never over existing files unless forced.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use md5::{Digest, Md5};

use crate::codec::show_magic;
use crate::error::{RecordingError, Result};
use crate::fsutil::{check_target, TempFile};
use crate::{check_pair_parts, recording_paths, verify_snapshot, LogReader, LOG_SUFFIX, SNAPSHOT_SUFFIX};

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
    /// Things the user should know (e.g. trailing garbage after the log, which is not packed).
    pub warnings: Vec<String>,
}

/// Options of [`unpack`].
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Directory to unpack into.
    pub dest_dir: PathBuf,
    /// Replace existing files.
    pub force: bool,
    /// Verify the members completely before publishing them: the snapshot (every checksum), the
    /// log (every chunk, and its trailer unless `allow_incomplete`) and that the log continues the
    /// snapshot. Turn off for PANDA recordings, whose members are not in Ailuro's formats.
    pub validate: bool,
    /// With `validate`: accept a log without trailer (a recording cut short, packed with
    /// `rrpack --allow-incomplete`).
    pub allow_incomplete: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self { dest_dir: PathBuf::from("."), force: false, validate: true, allow_incomplete: false }
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
    /// Things the user should know (trailing garbage after the log, an instruction count in the
    /// container header that disagrees with the log).
    pub warnings: Vec<String>,
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

/// Pack recording `name` into a `.rr` file. The recording is verified completely first, so that
/// an archive is never written that `unpack` would refuse: both files present, the snapshot's
/// every checksum, every chunk of the log, log and snapshot belonging together, log complete
/// unless `allow_incomplete`. Trailing garbage after a complete log is not packed (see
/// [`PackInfo::warnings`]). Errors while writing name the output file.
pub fn pack(name: &Path, opts: &PackOptions) -> Result<PackInfo> {
    let (snp, logp) = recording_paths(name);
    let base = name.file_name().ok_or_else(|| RecordingError::InvalidInput {
        what: "recording name",
        detail: format!("{} has no file name component", name.display()),
    })?;
    let mut log = LogReader::open(&logp)?;
    if !opts.allow_incomplete {
        log.expect_complete(", use --allow-incomplete to pack it anyway")?;
    }
    let snap = verify_snapshot(&snp)?;
    check_pair_parts(&snp, &snap.header, &snap.file_hash, &log)?;
    log.verify_rest()?;
    let instructions = log.instruction_count();
    let complete = log.is_complete();
    let warnings = log.warnings();
    let log_len = log.data_len();
    drop(log);

    let out = opts.out.clone().unwrap_or_else(|| {
        let mut s = name.as_os_str().to_os_string();
        s.push(".rr");
        PathBuf::from(s)
    });
    check_target(&out, opts.force, ", use --force")?;
    let mut tmp = TempFile::new_for(&out)?;
    let snp_len = std::fs::metadata(&snp).map_err(|e| RecordingError::io("stat", &snp, e))?.len();
    let files = [(snp.as_path(), SNAPSHOT_SUFFIX, snp_len), (logp.as_path(), LOG_SUFFIX, log_len)];
    write_archive(tmp.file(), instructions, base, &files).map_err(|e| match e {
        TarError::Input(p, e) => RecordingError::io("read", &p, e),
        // The user's output file, not our temporary name, and never the input (a full disk is a
        // problem of the output).
        TarError::Output(e) => RecordingError::io("write", &out, e),
    })?;
    tmp.publish(opts.force, ", use --force")?;
    Ok(PackInfo { out, instructions, complete, warnings })
}

/// Where writing an archive failed.
#[derive(Debug)]
enum TarError {
    /// Reading this input file.
    Input(PathBuf, io::Error),
    /// Writing the output.
    Output(io::Error),
}

/// Reader of one input file that flags its own failures, so that an error coming out of the tar
/// builder (which reads the input and writes the output in one call) can be attributed. It also
/// insists on exactly `left` bytes: a file that shrank while being archived would otherwise give
/// a member shorter than its tar header says, i.e. a corrupt archive.
struct InputReader<'a, R: Read> {
    inner: R,
    left: u64,
    failed: &'a Cell<bool>,
}

impl<R: Read> Read for InputReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..max]) {
            Ok(0) => {
                self.failed.set(true);
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was being archived"))
            }
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// Write a whole `.rr` to `out`: header, xz-compressed tar of `files` (each `(path, suffix,
/// length)`: the first `length` bytes of `path`, stored as `base` + suffix), then the MD5 patched
/// into the header.
fn write_archive<W: Write + Seek>(
    out: &mut W,
    instructions: u64,
    base: &std::ffi::OsStr,
    files: &[(&Path, &str, u64)],
) -> std::result::Result<(), TarError> {
    let mut head = Vec::with_capacity(RR_HEADER_LEN);
    head.extend_from_slice(RR_MAGIC);
    head.extend_from_slice(&instructions.to_le_bytes());
    head.extend_from_slice(&[0u8; 16]); // MD5, patched below
    out.write_all(&head).map_err(TarError::Output)?;
    let digest = write_tar(&mut *out, base, files)?;
    out.seek(SeekFrom::Start(0x10)).map_err(TarError::Output)?;
    out.write_all(&digest).map_err(TarError::Output)?;
    out.flush().map_err(TarError::Output)
}

/// Write the xz-compressed tar of `files` to `out`; returns the MD5 of the bytes written.
fn write_tar<W: Write>(
    out: W,
    base: &std::ffi::OsStr,
    files: &[(&Path, &str, u64)],
) -> std::result::Result<[u8; 16], TarError> {
    let md5w = Md5Writer { inner: BufWriter::with_capacity(1 << 20, out), md5: Md5::new() };
    let xz = xz2::write::XzEncoder::new(md5w, XZ_PRESET);
    let mut tar = tar::Builder::new(xz);
    for &(path, suffix, len) in files {
        let mut member = base.to_os_string();
        member.push(suffix);
        let input = |e| TarError::Input(path.to_path_buf(), e);
        let f = File::open(path).map_err(input)?;
        let md = f.metadata().map_err(input)?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(len);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(
            md.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs()),
        );
        let failed = Cell::new(false);
        let data = InputReader { inner: BufReader::new(f), left: len, failed: &failed };
        tar.append_data(&mut h, Path::new(&member), data).map_err(|e| {
            if failed.get() {
                TarError::Input(path.to_path_buf(), e)
            } else {
                TarError::Output(e)
            }
        })?;
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
        // Refuses directories, special files and (without --force) anything at the name, dangling
        // symbolic links included, before anything is extracted.
        check_target(&target, opts.force, ", use --force")?;
        let mut tmp = TempFile::new_for(&target)?;
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
            w.write_all(&buf[..n]).map_err(|e| RecordingError::io("write", &target, e))?;
        }
        w.flush().map_err(|e| RecordingError::io("write", &target, e))?;
        drop(w);
        got.push((kind, base, target, tmp));
    }
    if got.len() != 2 {
        return Err(bad(format!("expected 2 members (NAME{SNAPSHOT_SUFFIX}, NAME{LOG_SUFFIX}), found {}", got.len())));
    }
    got.sort_by_key(|g| g.0 == Member::Log);
    let base = got[0].1.clone();
    let mut complete = None;
    let mut warnings = Vec::new();
    if opts.validate {
        let (snp_tmp, log_tmp) = (&got[0].3, &got[1].3);
        let (snp_member, log_member) = (format!("{base}{SNAPSHOT_SUFFIX}"), format!("{base}{LOG_SUFFIX}"));
        // Messages about the temporary files are about the members: say so by name.
        let member_msg =
            |msg: String, tmp: &TempFile, member: &str| msg.replace(&tmp.path.display().to_string(), member);
        let invalid = |member: &str, tmp: &TempFile, e: RecordingError| {
            bad(format!("member {member} is not valid: {}", member_msg(e.to_string(), tmp, member)))
        };
        let snap = verify_snapshot(&snp_tmp.path).map_err(|e| invalid(&snp_member, snp_tmp, e))?;
        let mut log = LogReader::open(&log_tmp.path).map_err(|e| invalid(&log_member, log_tmp, e))?;
        if !opts.allow_incomplete {
            log.expect_complete(" (use --allow-incomplete to unpack it anyway)")
                .map_err(|e| invalid(&log_member, log_tmp, e))?;
        }
        log.verify_rest().map_err(|e| invalid(&log_member, log_tmp, e))?;
        check_pair_parts(&snp_tmp.path, &snap.header, &snap.file_hash, &log).map_err(|e| {
            let msg = member_msg(member_msg(e.to_string(), snp_tmp, &snp_member), log_tmp, &log_member);
            bad(format!("the members do not belong together: {msg}"))
        })?;
        complete = Some(log.is_complete());
        for w in log.warnings() {
            warnings.push(format!("{}: {}", rr.display(), member_msg(w, log_tmp, &log_member)));
        }
        if instructions != log.instruction_count() {
            // The header count is not covered by the MD5, and PANDA's own rrpack.py writes
            // something else there: worth a note, not a refusal.
            warnings.push(format!(
                "{}: the archive header says {instructions} instructions, the log holds {}",
                rr.display(),
                log.instruction_count()
            ));
        }
    }
    // Publish both or neither: dropping the first publish (on the error return of the second)
    // takes it back, restoring what it replaced under --force.
    let mut it = got.into_iter();
    let (Some((_, _, snp_target, snp_tmp)), Some((_, _, log_target, log_tmp))) = (it.next(), it.next()) else {
        return Err(bad("internal error: members lost".into()));
    };
    let (_, snp_published) = snp_tmp.publish_undoable(opts.force, ", use --force")?;
    let (_, log_published) = log_tmp.publish_undoable(opts.force, ", use --force")?;
    snp_published.commit();
    log_published.commit();
    Ok(UnpackInfo {
        name: opts.dest_dir.join(&base),
        snapshot: snp_target,
        log: log_target,
        instructions,
        complete,
        warnings,
    })
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
