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
    unpack(rr, &UnpackOptions { dest_dir: dir.to_path_buf(), force, validate: true })
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
    assert_eq!(unpack_to(&info.out, &out, false).unwrap().complete, Some(false));
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
    let u = unpack(&rr, &UnpackOptions { dest_dir: out.clone(), force: false, validate: false }).unwrap();
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
