//! Tests of the snapshot format.

use super::*;
use std::fs;
use tempfile::TempDir;

fn header(size: u64) -> SnapshotHeader {
    SnapshotHeader {
        arch: Arch::X86_64,
        ram_base: 0x4000_0000,
        ram_size: size,
        start_icount: 123_456,
        machine_config: b"config blob".to_vec(),
        creator: "snapshot test".into(),
    }
}

fn sparse_ram(size: u64) -> GuestRam {
    let mut ram = GuestRam::new(0x4000_0000, size).unwrap();
    let base = ram.base();
    ram.write(base, b"first page").unwrap();
    ram.write(base + size - 4, &[1, 2, 3, 4]).unwrap();
    ram.write(base + size / 2 + 100, &[0xff; 4096]).unwrap(); // straddles two pages
    for i in 0..50u64 {
        ram.write_u64(base + (size / 4 + i * 0x3000) % (size - 8), i * 0x0101_0101_0101).unwrap();
    }
    ram
}

#[test]
fn sparse_64_mib_round_trip_gives_a_small_file() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("s-rr-snp");
    let size = 64 << 20;
    let ram = sparse_ram(size);
    let cpu = vec![1u8; 3000];
    let devs: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let hash = write_snapshot(&p, &header(size), &cpu, &devs, b"", &ram, false).unwrap();
    let len = fs::metadata(&p).unwrap().len();
    assert!(len < 64 << 10, "sparse snapshot is {len} bytes");
    assert_eq!(hash, *blake3::hash(&fs::read(&p).unwrap()).as_bytes());
    let (s, r) = read_snapshot(&p).unwrap();
    assert_eq!(s.header, header(size));
    assert_eq!(s.version, SNAPSHOT_VERSION);
    assert_eq!((s.cpu, s.devices, s.console), (cpu, devs, vec![]));
    assert_eq!(s.file_hash, hash);
    assert_eq!(r.base(), ram.base());
    assert_eq!(r.hash(), ram.hash());
    assert_eq!(read_snapshot_header(&p).unwrap(), header(size));
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
}

#[test]
fn dense_ram_spanning_several_parts_round_trips() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("dense");
    let size = (PAGES_PER_PART as u64 * 2 + 3) * PAGE_SIZE;
    let mut ram = GuestRam::new(0x4000_0000, size).unwrap();
    for (i, b) in ram.as_mut_slice().iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] | 1;
    }
    // Leave one whole part's worth of pages zero in the middle.
    let ps = PAGE_SIZE as usize;
    ram.as_mut_slice()[PAGES_PER_PART as usize * ps..PAGES_PER_PART as usize * 2 * ps].fill(0);
    write_snapshot(&p, &header(size), b"c", b"d", b"e", &ram, false).unwrap();
    let (s, r) = read_snapshot(&p).unwrap();
    assert_eq!(s.console, b"e");
    assert_eq!(r.hash(), ram.hash());
}

fn small_snapshot(d: &TempDir) -> (std::path::PathBuf, Vec<u8>) {
    let p = d.path().join("small-rr-snp");
    let size = 256 << 10;
    write_snapshot(&p, &header(size), b"cpu", b"devices", b"console", &sparse_ram(size), false).unwrap();
    let b = fs::read(&p).unwrap();
    (p, b)
}

#[test]
fn truncation_and_corruption_are_errors() {
    let d = TempDir::new().unwrap();
    let (_, full) = small_snapshot(&d);
    let q = d.path().join("bad");
    for cut in 0..full.len() {
        fs::write(&q, &full[..cut]).unwrap();
        let e = read_snapshot(&q).err().unwrap_or_else(|| panic!("truncation at {cut} unnoticed"));
        let msg = e.to_string();
        assert!(msg.contains("truncated") || msg.contains("not an Ailuro snapshot"), "cut {cut}: {msg}");
    }
    for off in 0..full.len() {
        let mut b = full.clone();
        b[off] ^= 0x01;
        fs::write(&q, &b).unwrap();
        assert!(read_snapshot(&q).is_err(), "corruption at {off} unnoticed");
    }
    let mut b = full.clone();
    b.push(0);
    fs::write(&q, &b).unwrap();
    assert!(read_snapshot(&q).err().unwrap().to_string().contains("unexpected bytes after the end"));
}

#[test]
fn wrong_magic_version_arch_and_missing_file() {
    let d = TempDir::new().unwrap();
    let (p, full) = small_snapshot(&d);
    let q = d.path().join("v");
    let mut b = full.clone();
    b[8] = 9;
    fs::write(&q, &b).unwrap();
    let e = read_snapshot(&q).err().unwrap();
    assert!(matches!(e, RecordingError::NewerVersion { found: 9, .. }), "{e}");
    let mut b = full.clone();
    b[..8].copy_from_slice(b"AILUROLG");
    fs::write(&q, &b).unwrap();
    let e = read_snapshot_header(&q).err().unwrap();
    assert!(e.to_string().contains("not an Ailuro snapshot"), "{e}");
    let h = read_snapshot_header(&p).unwrap();
    h.expect_arch(&p, Arch::X86_64).unwrap();
    assert!(matches!(h.expect_arch(&p, Arch::I386), Err(RecordingError::WrongArch { .. })));
    let e = read_snapshot(&d.path().join("missing")).err().unwrap();
    assert!(matches!(e, RecordingError::NotFound { what: "snapshot", .. }), "{e}");
}

#[test]
fn overwrite_is_refused_unless_requested_and_ram_must_match() {
    let d = TempDir::new().unwrap();
    let (p, full) = small_snapshot(&d);
    let size = 256 << 10;
    let ram = GuestRam::new(0x4000_0000, size).unwrap();
    let e = write_snapshot(&p, &header(size), b"", b"", b"", &ram, false).err().unwrap();
    assert!(matches!(e, RecordingError::AlreadyExists { .. }), "{e}");
    assert_eq!(fs::read(&p).unwrap(), full);
    write_snapshot(&p, &header(size), b"", b"", b"", &ram, true).unwrap();
    assert_ne!(fs::read(&p).unwrap(), full);
    let e = write_snapshot(&d.path().join("x"), &header(size * 2), b"", b"", b"", &ram, false).err().unwrap();
    assert!(matches!(e, RecordingError::InvalidInput { .. }), "{e}");
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no stray temporary files");
}

#[test]
fn random_multi_byte_damage_never_panics() {
    let d = TempDir::new().unwrap();
    let (_, full) = small_snapshot(&d);
    let q = d.path().join("fz");
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut b = full.clone();
        for _ in 0..1 + next() % 8 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        if next().is_multiple_of(2) {
            b.truncate((next() % b.len() as u64) as usize);
        }
        fs::write(&q, &b).unwrap();
        assert!(read_snapshot(&q).is_err());
    }
}

/// Timing of a large snapshot (run with `cargo test --release -- --ignored --nocapture`).
#[test]
#[ignore]
fn large_snapshot_timing() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("big");
    let size = 1u64 << 30;
    let mut ram = GuestRam::new(0x4000_0000, size).unwrap();
    // 128 MiB of pseudo-random-ish data in the middle, the rest zero.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in ram.as_mut_slice()[256 << 20..384 << 20].chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&(x & 0x0f0f_0f0f_0f0f_0f0f).to_le_bytes());
    }
    let t = std::time::Instant::now();
    write_snapshot(&p, &header(size), b"", b"", b"", &ram, false).unwrap();
    let w = t.elapsed();
    let t = std::time::Instant::now();
    let (_, r) = read_snapshot(&p).unwrap();
    let rd = t.elapsed();
    assert_eq!(r.hash(), ram.hash());
    eprintln!("1 GiB RAM, 128 MiB used: write {w:?}, read {rd:?}, file {} MiB", fs::metadata(&p).unwrap().len() >> 20);
}

#[test]
fn verify_snapshot_checks_everything_read_snapshot_does() {
    let d = TempDir::new().unwrap();
    let (p, full) = small_snapshot(&d);
    let info = verify_snapshot(&p).unwrap();
    let (s, _) = read_snapshot(&p).unwrap();
    assert_eq!((info.header, info.version, info.file_hash), (s.header, s.version, s.file_hash));
    let q = d.path().join("bad");
    for off in (0..full.len()).step_by(7) {
        let mut b = full.clone();
        b[off] ^= 0x10;
        fs::write(&q, &b).unwrap();
        assert!(verify_snapshot(&q).is_err(), "corruption at {off} unnoticed");
    }
    for cut in (0..full.len()).step_by(13) {
        fs::write(&q, &full[..cut]).unwrap();
        assert!(verify_snapshot(&q).is_err(), "truncation at {cut} unnoticed");
    }
    // Bytes after the end of a snapshot are an error (it is written whole and renamed into place,
    // unlike a log, which is appended to).
    fs::write(&q, [&full[..], b"x"].concat()).unwrap();
    assert!(verify_snapshot(&q).err().unwrap().to_string().contains("unexpected bytes after the end"));
}

#[cfg(unix)]
#[test]
fn overwrite_replaces_a_symlink_not_its_target_and_stale_temporaries_go() {
    let d = TempDir::new().unwrap();
    let size = 256 << 10;
    let ram = GuestRam::new(0x4000_0000, size).unwrap();
    let victim = d.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let p = d.path().join("s-rr-snp");
    std::os::unix::fs::symlink(&victim, &p).unwrap();
    // A temporary file left by a writer killed with -9 (its PID is no process).
    let stale = d.path().join(".s-rr-snp.tmp.4294967294.0");
    fs::write(&stale, b"half a snapshot").unwrap();
    let e = write_snapshot(&p, &header(size), b"", b"", b"", &ram, false).err().unwrap();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    write_snapshot(&p, &header(size), b"", b"", b"", &ram, true).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(fs::symlink_metadata(&p).unwrap().file_type().is_file());
    read_snapshot(&p).unwrap();
    if Path::new("/proc/self").exists() {
        assert!(!stale.exists(), "stale temporary file removed");
    }
    let dir = d.path().join("dir-rr-snp");
    fs::create_dir(&dir).unwrap();
    let e = write_snapshot(&dir, &header(size), b"", b"", b"", &ram, true).err().unwrap();
    assert!(e.to_string().contains("is a directory"), "{e}");
    let mut names: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["dir-rr-snp", "s-rr-snp", "victim"]);
}
