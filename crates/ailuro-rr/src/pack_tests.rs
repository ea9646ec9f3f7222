//! Tests of the `.rr` container.

use super::*;
use crate::{
    write_snapshot, Arch, EndReason, Event, LogEnd, LogEntry, LogHeader, LogWriter, RecordingError, SnapshotHeader,
};
use ailuro_bus::GuestRam;
use std::fs;
use tempfile::TempDir;

/// Make a small recording `dir/name` with `n` entries; finished unless `incomplete`.
fn make_recording(dir: &Path, name: &str, n: u64, incomplete: bool) -> PathBuf {
    let base = dir.join(name);
    let (snp, log) = recording_paths(&base);
    let mut ram = GuestRam::new(0, 1 << 20).unwrap();
    ram.write(0x1000, b"hello").unwrap();
    let sh = SnapshotHeader {
        arch: Arch::I386,
        ram_base: 0,
        ram_size: 1 << 20,
        start_icount: 100,
        machine_config: vec![1, 2, 3],
        creator: "pack test".into(),
    };
    let snapshot_hash = write_snapshot(&snp, &sh, b"cpu", b"dev", b"con", &ram, false).unwrap();
    let lh = LogHeader { arch: Arch::I386, start_icount: 100, snapshot_hash, creator: "pack test".into() };
    let mut w = LogWriter::create(&log, &lh, false).unwrap();
    w.set_chunk_size(512);
    for i in 0..n {
        w.append(&LogEntry { icount: 100 + i * 10, event: Event::Timestamp { value: i * i } }).unwrap();
    }
    if !incomplete {
        w.finish(LogEnd { end_icount: 100 + n * 10 + 7, reason: EndReason::EndRecord, final_state_hash: [1; 32] })
            .unwrap();
    }
    base
}

fn unpack_to(rr: &Path, dir: &Path, force: bool) -> Result<UnpackInfo> {
    unpack(rr, &UnpackOptions { dest_dir: dir.to_path_buf(), force, ..Default::default() })
}

#[test]
fn pack_unpack_round_trip() {
    let d = TempDir::new().unwrap();
    let base = make_recording(d.path(), "rec", 500, false);
    let info = pack(&base, &PackOptions::default()).unwrap();
    assert_eq!(info.out, d.path().join("rec.rr"));
    assert_eq!(info.instructions, 500 * 10 + 7);
    assert!(info.complete);
    let bytes = fs::read(&info.out).unwrap();
    assert_eq!(&bytes[..8], b"PANDA_RR");
    assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 5007);
    assert_eq!(Md5::digest(&bytes[0x20..])[..], bytes[0x10..0x20]);

    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    let u = unpack_to(&info.out, &out, false).unwrap();
    assert_eq!(u.name, out.join("rec"));
    assert_eq!(u.instructions, 5007);
    assert_eq!(u.complete, Some(true));
    let (s0, l0) = recording_paths(&base);
    let (s1, l1) = recording_paths(&u.name);
    assert_eq!(fs::read(s0).unwrap(), fs::read(&s1).unwrap());
    assert_eq!(fs::read(l0).unwrap(), fs::read(&l1).unwrap());
    assert_eq!(fs::read_dir(&out).unwrap().count(), 2, "no stray temporary files");
    crate::open_recording(&u.name, Some(Arch::I386)).unwrap();

    // Existing files are not overwritten without force, and are with it.
    let e = unpack_to(&info.out, &out, false).err().unwrap();
    assert!(matches!(e, RecordingError::AlreadyExists { .. }), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    unpack_to(&info.out, &out, true).unwrap();
    // Same for the .rr itself.
    let e = pack(&base, &PackOptions::default()).err().unwrap();
    assert!(matches!(e, RecordingError::AlreadyExists { .. }), "{e}");
    pack(&base, &PackOptions { force: true, ..Default::default() }).unwrap();
}

#[test]
fn incomplete_recordings_need_allow_incomplete() {
    let d = TempDir::new().unwrap();
    let base = make_recording(d.path(), "cut", 300, true);
    let e = pack(&base, &PackOptions::default()).err().unwrap();
    assert!(matches!(e, RecordingError::Incomplete { .. }), "{e}");
    assert!(e.to_string().contains("--allow-incomplete"), "{e}");
    let info = pack(&base, &PackOptions { allow_incomplete: true, ..Default::default() }).unwrap();
    assert!(!info.complete);
    assert_eq!(info.instructions, 299 * 10);
    let out = d.path().join("o");
    fs::create_dir(&out).unwrap();
    // Unpacking an incomplete recording must be asked for too, and nothing is extracted otherwise.
    let e = unpack_to(&info.out, &out, false).err().unwrap();
    assert!(e.to_string().contains("incomplete") && e.to_string().contains("--allow-incomplete"), "{e}");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    let opts = UnpackOptions { dest_dir: out.clone(), allow_incomplete: true, ..Default::default() };
    assert_eq!(unpack(&info.out, &opts).unwrap().complete, Some(false));
}

#[test]
fn pack_checks_the_recording() {
    let d = TempDir::new().unwrap();
    let e = pack(&d.path().join("none"), &PackOptions::default()).err().unwrap();
    assert!(matches!(e, RecordingError::NotFound { .. }), "{e}");
    // A log paired with another recording's snapshot is refused.
    let a = make_recording(d.path(), "a", 10, false);
    let b = make_recording(&d.path().join("."), "b", 11, false);
    let (sa, _) = recording_paths(&a);
    let (sb, _) = recording_paths(&b);
    let mut ram = GuestRam::new(0, 1 << 20).unwrap();
    ram.write(0, b"different").unwrap();
    let sh = crate::read_snapshot_header(&sa).unwrap();
    write_snapshot(&sb, &sh, b"x", b"y", b"z", &ram, true).unwrap();
    let e = pack(&b, &PackOptions::default()).err().unwrap();
    assert!(matches!(e, RecordingError::Mismatch { .. }), "{e}");
}

#[test]
fn corrupted_truncated_and_foreign_archives_are_refused() {
    let d = TempDir::new().unwrap();
    let base = make_recording(d.path(), "r", 200, false);
    let rr = pack(&base, &PackOptions::default()).unwrap().out;
    let full = fs::read(&rr).unwrap();
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    let bad = d.path().join("bad.rr");
    for off in [0x20, 0x21, full.len() / 2, full.len() - 1] {
        let mut b = full.clone();
        b[off] ^= 0x40;
        fs::write(&bad, &b).unwrap();
        let e = unpack_to(&bad, &out, false).err().unwrap();
        assert!(e.to_string().contains("MD5 checksum mismatch"), "{e}");
    }
    for cut in [0, 4, 8, 0x1f, 0x20, 0x40, full.len() / 2, full.len() - 1] {
        fs::write(&bad, &full[..cut]).unwrap();
        let e = unpack_to(&bad, &out, false).err().unwrap();
        let m = e.to_string();
        assert!(m.contains("truncated") || m.contains("MD5") || m.contains("not a PANDA"), "cut {cut}: {m}");
    }
    let mut b = full.clone();
    b[..8].copy_from_slice(b"NOT_AN_R");
    fs::write(&bad, &b).unwrap();
    assert!(matches!(unpack_to(&bad, &out, false), Err(RecordingError::BadMagic { .. })));
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "nothing extracted from bad archives");
    let e = unpack_to(&d.path().join("missing.rr"), &out, false).err().unwrap();
    assert!(matches!(e, RecordingError::NotFound { .. }), "{e}");
}

/// Build a `.rr` by hand from raw tar members (name bytes written directly, bypassing the tar
/// crate's own path checks), with a correct MD5.
fn raw_rr(path: &Path, members: &[(&[u8], tar::EntryType, &[u8])]) {
    let mut tar_bytes = Vec::new();
    for (name, et, data) in members {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(*et);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar_bytes.extend_from_slice(h.as_bytes());
        tar_bytes.extend_from_slice(data);
        tar_bytes.resize(tar_bytes.len().div_ceil(512) * 512, 0);
    }
    tar_bytes.resize(tar_bytes.len() + 1024, 0);
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&tar_bytes).unwrap();
    let body = xz.finish().unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(RR_MAGIC);
    out.extend_from_slice(&42u64.to_le_bytes());
    out.extend_from_slice(&Md5::digest(&body));
    out.extend_from_slice(&body);
    fs::write(path, out).unwrap();
}

#[test]
fn unsafe_or_unexpected_members_are_refused() {
    let d = TempDir::new().unwrap();
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    let rr = d.path().join("evil.rr");
    let reg = tar::EntryType::Regular;
    type Members<'a> = Vec<(&'a [u8], tar::EntryType, &'a [u8])>;
    let cases: Vec<(Members, &str)> = vec![
        (vec![(b"../x-rr-snp", reg, b"a"), (b"x-rr-nondet.log", reg, b"b")], "unsafe name"),
        (vec![(b"/tmp/x-rr-snp", reg, b"a"), (b"x-rr-nondet.log", reg, b"b")], "unsafe name"),
        (vec![(b"x-rr-snp", tar::EntryType::Symlink, b""), (b"x-rr-nondet.log", reg, b"b")], "not a regular file"),
        (vec![(b"x-rr-snp", reg, b"a"), (b"evil.sh", reg, b"b")], "unexpected member"),
        (vec![(b"x-rr-snp", reg, b"a"), (b"x-rr-snp", reg, b"b")], "appears twice"),
        (vec![(b"x-rr-snp", reg, b"a"), (b"y-rr-nondet.log", reg, b"b")], "different recordings"),
        (vec![(b"x-rr-snp", reg, b"a")], "expected 2 members"),
        (vec![(b"x-rr-snp", reg, b"a"), (b"x-rr-nondet.log", reg, b"b")], "is not valid"),
    ];
    for (members, want) in cases {
        raw_rr(&rr, &members);
        let e = unpack_to(&rr, &out, false).err().unwrap();
        assert!(e.to_string().contains(want), "want {want:?}, got: {e}");
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "{want}: nothing may be extracted");
        assert!(!d.path().join("x-rr-snp").exists());
    }
    // Without validation (PANDA recordings), plain members unpack; a "./" prefix is accepted.
    raw_rr(&rr, &[(b"./x-rr-snp", reg, b"a"), (b"x-rr-nondet.log", reg, b"b")]);
    let u = unpack(&rr, &UnpackOptions { dest_dir: out.clone(), validate: false, ..Default::default() }).unwrap();
    assert_eq!(u.instructions, 42);
    assert_eq!(fs::read(out.join("x-rr-snp")).unwrap(), b"a");
    assert_eq!(fs::read(out.join("x-rr-nondet.log")).unwrap(), b"b");
}

/// If the system has `tar` with xz support, check that our archive is an ordinary .tar.xz with
/// PANDA's member names and order, and that an archive made the way rrpack.py makes it unpacks.
#[test]
fn interoperates_with_system_tar_like_pandas_scripts() {
    use std::process::Command;
    let have_tar = Command::new("tar").arg("--version").output().is_ok_and(|o| o.status.success());
    let have_xz = Command::new("xz").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have_tar || !have_xz {
        eprintln!("skipping: no tar/xz on this host");
        return;
    }
    let d = TempDir::new().unwrap();
    let base = make_recording(d.path(), "sys", 50, false);
    let rr = pack(&base, &PackOptions::default()).unwrap().out;
    let body = d.path().join("body.tar.xz");
    fs::write(&body, &fs::read(&rr).unwrap()[0x20..]).unwrap();
    let list = Command::new("tar").arg("tJf").arg(&body).output().unwrap();
    assert!(list.status.success());
    assert_eq!(String::from_utf8_lossy(&list.stdout), "sys-rr-snp\nsys-rr-nondet.log\n");

    // rrpack.py: magic, count, MD5 of `tar cJf - NAME-rr-snp NAME-rr-nondet.log`.
    let tarxz = Command::new("tar")
        .current_dir(d.path())
        .args(["cJf", "-", "sys-rr-snp", "sys-rr-nondet.log"])
        .output()
        .unwrap();
    assert!(tarxz.status.success());
    let mut panda = Vec::new();
    panda.extend_from_slice(b"PANDA_RR");
    panda.extend_from_slice(&57u64.to_le_bytes());
    panda.extend_from_slice(&Md5::digest(&tarxz.stdout));
    panda.extend_from_slice(&tarxz.stdout);
    let prr = d.path().join("panda.rr");
    fs::write(&prr, panda).unwrap();
    let out = d.path().join("o");
    fs::create_dir(&out).unwrap();
    let u = unpack_to(&prr, &out, false).unwrap();
    assert_eq!(u.complete, Some(true));
    assert_eq!(fs::read(u.log).unwrap(), fs::read(recording_paths(&base).1).unwrap());
}

/// The two files of a recording, as bytes.
fn members_of(base: &Path) -> (Vec<u8>, Vec<u8>) {
    let (s, l) = recording_paths(base);
    (fs::read(s).unwrap(), fs::read(l).unwrap())
}

fn dir_names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn forged_archives_with_a_correct_md5_but_damaged_members_are_refused() {
    let d = TempDir::new().unwrap();
    let base = make_recording(d.path(), "r", 300, false);
    let (snp, log) = members_of(&base);
    // Another snapshot of the same machine at the same instruction, with other contents.
    let other = d.path().join("other-rr-snp");
    let sh = crate::read_snapshot_header(&recording_paths(&base).0).unwrap();
    write_snapshot(&other, &sh, b"other cpu", b"dev", b"con", &GuestRam::new(0, 1 << 20).unwrap(), false).unwrap();
    let other_snp = fs::read(&other).unwrap();
    let incomplete = make_recording(d.path(), "i", 300, true);
    let (inc_snp, inc_log) = members_of(&incomplete);
    // A flipped byte in a chunk payload: the log's structure is fine, its data is not.
    let c1 = LogReader::open(&recording_paths(&base).1).unwrap().chunks()[1].offset as usize;
    let mut bad_log = log.clone();
    bad_log[c1 + 70] ^= 1;
    // A flipped byte near the end of the snapshot: its header is fine, its data is not.
    let mut bad_snp = snp.clone();
    let n = bad_snp.len();
    bad_snp[n - 20] ^= 1;
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    let rr = d.path().join("forged.rr");
    let reg = tar::EntryType::Regular;
    let cases: Vec<(&[u8], &[u8], &str)> = vec![
        (&snp, &bad_log, "member x-rr-nondet.log is not valid: x-rr-nondet.log: chunk 1"),
        (&bad_snp, &log, "member x-rr-snp is not valid: x-rr-snp: corrupt"),
        (&other_snp, &log, "the members do not belong together"),
        (&inc_snp, &inc_log, "member x-rr-nondet.log is not valid: x-rr-nondet.log is incomplete"),
        (&snp, &log[..log.len() - 1], "member x-rr-nondet.log is not valid"),
    ];
    for (s, l, want) in cases {
        raw_rr(&rr, &[(b"x-rr-snp", reg, s), (b"x-rr-nondet.log", reg, l)]);
        let e = unpack_to(&rr, &out, false).err().unwrap();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}: ", rr.display())), "names the archive: {msg}");
        assert!(msg.contains(want), "want {want:?}, got: {msg}");
        assert!(!msg.contains(".tmp."), "no temporary names in messages: {msg}");
        assert_eq!(dir_names(&out), Vec::<String>::new(), "{want}: nothing extracted, no temporary files");
    }
    // The genuine members unpack, with a note about the archive header's instruction count
    // (raw_rr writes 42).
    raw_rr(&rr, &[(b"x-rr-snp", reg, &snp), (b"x-rr-nondet.log", reg, &log)]);
    let u = unpack_to(&rr, &out, false).unwrap();
    assert!(u.warnings.iter().any(|w| w.contains("says 42 instructions, the log holds 3007")), "{:?}", u.warnings);
}

#[test]
fn unpack_publishes_both_members_or_neither() {
    let d = TempDir::new().unwrap();
    let base = make_recording(d.path(), "r", 100, false);
    let rr = pack(&base, &PackOptions::default()).unwrap().out;
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    // An old recording is there; its log name is taken by a directory. Even with --force the
    // unpack fails, and the old snapshot is left exactly as it was.
    fs::write(out.join("r-rr-snp"), b"old snapshot").unwrap();
    fs::create_dir(out.join("r-rr-nondet.log")).unwrap();
    for force in [false, true] {
        let e = unpack_to(&rr, &out, force).err().unwrap();
        assert!(e.to_string().contains("r-rr-"), "{e}");
        assert_eq!(fs::read(out.join("r-rr-snp")).unwrap(), b"old snapshot");
        assert_eq!(dir_names(&out), ["r-rr-nondet.log", "r-rr-snp"], "no temporary files");
    }
    // With --force and both names free to replace, both are replaced.
    fs::remove_dir(out.join("r-rr-nondet.log")).unwrap();
    fs::write(out.join("r-rr-nondet.log"), b"old log").unwrap();
    unpack_to(&rr, &out, true).unwrap();
    let (s, l) = members_of(&base);
    assert_eq!(fs::read(out.join("r-rr-snp")).unwrap(), s);
    assert_eq!(fs::read(out.join("r-rr-nondet.log")).unwrap(), l);
    assert_eq!(dir_names(&out), ["r-rr-nondet.log", "r-rr-snp"]);
}

#[cfg(unix)]
#[test]
fn unpack_never_writes_through_symlinks_and_clears_stale_temporaries() {
    let d = TempDir::new().unwrap();
    let base = make_recording(d.path(), "r", 100, false);
    let rr = pack(&base, &PackOptions::default()).unwrap().out;
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    let victim = d.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("r-rr-snp")).unwrap();
    std::os::unix::fs::symlink(d.path().join("nowhere"), out.join("r-rr-nondet.log")).unwrap();
    let stale = out.join(".r-rr-snp.tmp.4294967294.5");
    fs::write(&stale, b"left by kill -9").unwrap();
    let e = unpack_to(&rr, &out, false).err().unwrap();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    unpack_to(&rr, &out, true).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(!d.path().join("nowhere").exists());
    crate::open_recording(&out.join("r"), None).unwrap();
    if Path::new("/proc/self").exists() {
        assert_eq!(dir_names(&out), ["r-rr-nondet.log", "r-rr-snp"]);
    }
}

#[test]
fn pack_verifies_everything_and_leaves_trailing_garbage_out() {
    let d = TempDir::new().unwrap();
    let base = make_recording(d.path(), "r", 300, false);
    let (snp, log) = recording_paths(&base);
    let clean = fs::read(&log).unwrap();
    fs::write(&log, [&clean[..], b"appended junk"].concat()).unwrap();
    let info = pack(&base, &PackOptions::default()).unwrap();
    assert!(info.complete);
    assert_eq!(info.warnings.len(), 1);
    assert!(info.warnings[0].contains("13 bytes of trailing garbage"), "{:?}", info.warnings);
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    let u = unpack_to(&info.out, &out, false).unwrap();
    assert!(u.warnings.is_empty(), "{:?}", u.warnings);
    assert_eq!(fs::read(u.log).unwrap(), clean, "the archive holds the log without the junk");

    // A damaged chunk payload (structure intact) or snapshot is refused, and no archive written.
    let c = LogReader::open(&log).unwrap().chunks()[2].offset as usize;
    let mut b = clean.clone();
    b[c + 65] ^= 4;
    fs::write(&log, &b).unwrap();
    let o = d.path().join("x.rr");
    let e = pack(&base, &PackOptions { out: Some(o.clone()), ..Default::default() }).err().unwrap();
    assert!(matches!(e, RecordingError::ChunkChecksum { chunk: 2, .. }), "{e}");
    fs::write(&log, &clean).unwrap();
    let mut s = fs::read(&snp).unwrap();
    let n = s.len();
    s[n - 30] ^= 4;
    fs::write(&snp, &s).unwrap();
    assert!(pack(&base, &PackOptions { out: Some(o.clone()), ..Default::default() }).is_err());
    assert!(!o.exists());
}

/// A seekable writer that fails with "no space left on device" once `limit` bytes are written.
struct FullDisk {
    inner: io::Cursor<Vec<u8>>,
    limit: u64,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.inner.position() + buf.len() as u64 > self.limit {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for FullDisk {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn archive_write_errors_are_blamed_on_the_output_read_errors_on_the_input() {
    let d = TempDir::new().unwrap();
    let base = make_recording(d.path(), "r", 3000, false);
    let (snp, log) = recording_paths(&base);
    let len = |p: &Path| fs::metadata(p).unwrap().len();
    let files = [(snp.as_path(), SNAPSHOT_SUFFIX, len(&snp)), (log.as_path(), LOG_SUFFIX, len(&log))];
    let name = std::ffi::OsStr::new("r");
    // Enough room: a valid archive.
    let mut w = FullDisk { inner: io::Cursor::new(Vec::new()), limit: u64::MAX };
    write_archive(&mut w, 5, name, &files).unwrap();
    let full = w.inner.into_inner();
    assert_eq!(Md5::digest(&full[0x20..])[..], full[0x10..0x20]);
    // The disk fills up at various points: always an output error.
    for limit in [0, 10, 0x20, 100, full.len() as u64 / 2, full.len() as u64 - 1] {
        let mut w = FullDisk { inner: io::Cursor::new(Vec::new()), limit };
        match write_archive(&mut w, 5, name, &files) {
            Err(TarError::Output(e)) => assert_eq!(e.kind(), io::ErrorKind::StorageFull, "limit {limit}"),
            other => panic!("limit {limit}: {other:?}"),
        }
    }
    // An input that is shorter than announced (it shrank) or unreadable: an input error.
    let short = [(snp.as_path(), SNAPSHOT_SUFFIX, len(&snp) + 1)];
    let mut w = FullDisk { inner: io::Cursor::new(Vec::new()), limit: u64::MAX };
    assert!(matches!(write_archive(&mut w, 5, name, &short), Err(TarError::Input(p, _)) if p == snp));
    let dir = [(d.path(), SNAPSHOT_SUFFIX, 10)];
    assert!(matches!(write_archive(&mut w, 5, name, &dir), Err(TarError::Input(..))));
    // The mapping used by pack names the output .rr, never the input or a temporary file.
    let out = d.path().join("out.rr");
    let e = RecordingError::io("write", &out, io::Error::from(io::ErrorKind::StorageFull));
    assert!(e.to_string().starts_with(&format!("cannot write {}", out.display())), "{e}");
}
