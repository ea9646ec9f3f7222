//! Tests of the nondet log: round trips, crash truncation, corruption, versioning.

use super::*;
use crate::{Arch, Event, LogEntry, RecordingError};
use std::fs;
use tempfile::TempDir;

fn header(start: u64) -> LogHeader {
    LogHeader { arch: Arch::I386, start_icount: start, snapshot_hash: [7; 32], creator: "test ✓".into() }
}

fn end(icount: u64) -> LogEnd {
    LogEnd { end_icount: icount, reason: EndReason::GuestExit(-3), final_state_hash: [9; 32] }
}

fn read_all(path: &Path) -> Result<Vec<LogEntry>> {
    let mut r = LogReader::open(path)?;
    let mut v = Vec::new();
    while let Some(e) = r.next_entry()? {
        v.push(e);
    }
    Ok(v)
}

/// Deterministic pseudo-random stream (xorshift) so tests need no extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_entries(n: usize, seed: u64) -> Vec<LogEntry> {
    let mut rng = Rng(seed);
    let mut icount = 1000;
    (0..n)
        .map(|i| {
            if !rng.next().is_multiple_of(3) {
                icount += rng.next() % 5000;
            }
            let r = rng.next();
            let event = match i % 9 {
                0 => Event::IoRead { port: r as u16, size: 1 << (r % 3), value: (r >> 16) as u32 },
                1 => Event::MmioRead { addr: r, size: 4, value: r.rotate_left(7) },
                2 => Event::Timestamp { value: r },
                3 => Event::InterruptAck { vector: (r % 256) as u32 },
                4 => Event::IrqLine { line: (r % 2) as u8, level: r & 4 != 0 },
                5 => Event::Dma { addr: r & 0xffff_f000, data: (0..(r % 300) as usize).map(|x| x as u8).collect() },
                6 => Event::Checkpoint { pc: r, cpu_hash: [(r % 251) as u8; 16] },
                7 => Event::Reset,
                _ => Event::HostEvent { code: r as u32, data: vec![0xab; (r % 40) as usize] },
            };
            LogEntry { icount, event }
        })
        .collect()
}

fn write_log(path: &Path, entries: &[LogEntry], chunk: usize, finish: bool) -> Option<LogTrailer> {
    let mut w = LogWriter::create(path, &header(1000), false).unwrap();
    w.set_chunk_size(chunk);
    for e in entries {
        w.append(e).unwrap();
    }
    if finish {
        let last = entries.last().map_or(1000, |e| e.icount);
        Some(w.finish(end(last + 5)).unwrap())
    } else {
        None
    }
}

#[test]
fn every_event_kind_round_trips_with_boundary_values() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("a-rr-nondet.log");
    let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
    let entries = vec![
        LogEntry { icount: 0, event: Event::IoRead { port: 0, size: 1, value: 0 } },
        LogEntry { icount: 0, event: Event::IoRead { port: u16::MAX, size: 4, value: u32::MAX } },
        LogEntry { icount: 1, event: Event::MmioRead { addr: u64::MAX, size: 8, value: u64::MAX } },
        LogEntry { icount: 1, event: Event::MmioRead { addr: 0, size: 0, value: 0 } },
        LogEntry { icount: 2, event: Event::Timestamp { value: 0 } },
        LogEntry { icount: 3, event: Event::Timestamp { value: u64::MAX } },
        LogEntry { icount: 3, event: Event::InterruptAck { vector: u32::MAX } },
        LogEntry { icount: 4, event: Event::InterruptAck { vector: 0 } },
        LogEntry { icount: 5, event: Event::IrqLine { line: 0, level: true } },
        LogEntry { icount: 5, event: Event::IrqLine { line: u8::MAX, level: false } },
        LogEntry { icount: 6, event: Event::Dma { addr: 0, data: vec![] } },
        LogEntry { icount: 7, event: Event::Dma { addr: u64::MAX, data: big.clone() } },
        LogEntry { icount: 8, event: Event::Checkpoint { pc: u64::MAX, cpu_hash: [0xff; 16] } },
        LogEntry { icount: 8, event: Event::Checkpoint { pc: 0, cpu_hash: [0; 16] } },
        LogEntry { icount: 1 << 40, event: Event::Reset },
        LogEntry { icount: u64::MAX - 1, event: Event::HostEvent { code: u32::MAX, data: big } },
        LogEntry { icount: u64::MAX, event: Event::HostEvent { code: 0, data: vec![] } },
    ];
    let mut w = LogWriter::create(&p, &header(0), false).unwrap();
    for e in &entries {
        w.append(e).unwrap();
    }
    let t = w.finish(LogEnd { end_icount: u64::MAX, reason: EndReason::PowerOff, final_state_hash: [3; 32] }).unwrap();
    assert_eq!(t.entry_count, entries.len() as u64);
    assert_eq!(read_all(&p).unwrap(), entries);
    let r = LogReader::open(&p).unwrap();
    assert!(r.is_complete());
    assert_eq!(r.header(), &header(0));
    assert_eq!(r.version(), LOG_VERSION);
    assert_eq!(r.trailer(), Some(&t));
    assert_eq!(r.trailer().unwrap().reason, EndReason::PowerOff);
    assert_eq!(r.instruction_count(), u64::MAX);
    let stats: u64 = t.kind_stats.iter().map(|k| k.count).sum();
    assert_eq!(stats, entries.len() as u64);
    assert_eq!(t.kind_stats.len(), 9);
    for reason in
        [EndReason::EndRecord, EndReason::GuestExit(i32::MIN), EndReason::Reset, EndReason::Quit, EndReason::Error]
    {
        let q = d.path().join("r.log");
        let w = LogWriter::create(&q, &header(5), true).unwrap();
        w.finish(LogEnd { end_icount: 5, reason, final_state_hash: [0; 32] }).unwrap();
        let r = LogReader::open(&q).unwrap();
        assert_eq!(r.trailer().unwrap().reason, reason);
        assert_eq!(r.instruction_count(), 0);
    }
}

#[test]
fn thousands_of_entries_across_many_chunks_with_peek() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("m.log");
    let entries = random_entries(20_000, 0x1234_5678);
    let t = write_log(&p, &entries, 4096, true).unwrap();
    assert!(t.chunks.len() > 50, "only {} chunks", t.chunks.len());
    let mut r = LogReader::open(&p).unwrap();
    assert_eq!(r.chunks(), &t.chunks[..]);
    let mut n = 0;
    loop {
        let peeked = r.peek().unwrap().cloned();
        assert_eq!(r.peek().unwrap().cloned(), peeked, "peek must not consume");
        let got = r.next_entry().unwrap();
        assert_eq!(got, peeked);
        match got {
            Some(e) => assert_eq!(e, entries[n]),
            None => break,
        }
        n += 1;
    }
    assert_eq!(n, entries.len());
    assert!(r.next_entry().unwrap().is_none());
    assert_eq!(r.end_icount(), entries.last().unwrap().icount + 5);
}

#[test]
fn drop_without_finish_leaves_an_incomplete_but_readable_log() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("c.log");
    let entries = random_entries(3000, 99);
    write_log(&p, &entries, 2048, false);
    let r = LogReader::open(&p).unwrap();
    assert!(!r.is_complete());
    assert!(r.trailer().is_none());
    assert_eq!(r.end_icount(), entries.last().unwrap().icount);
    assert!(matches!(r.expect_complete(""), Err(RecordingError::Incomplete { .. })));
    assert_eq!(read_all(&p).unwrap(), entries);
    // A header-only log (crash right after begin_record) opens too.
    let q = d.path().join("empty.log");
    drop(LogWriter::create(&q, &header(77), false).unwrap());
    let r = LogReader::open(&q).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.end_icount(), 77);
    assert!(read_all(&q).unwrap().is_empty());
}

#[test]
fn truncation_at_every_offset_never_panics_and_keeps_whole_chunks() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("t.log");
    let entries = random_entries(200, 7);
    let t = write_log(&p, &entries, 1024, true).unwrap();
    assert!(t.chunks.len() >= 5, "{} chunks", t.chunks.len());
    let full = fs::read(&p).unwrap();
    let header_len = t.chunks[0].offset as usize;
    let trailer_off =
        u64::from_le_bytes(full[full.len() - FOOTER_LEN + 8..full.len() - FOOTER_LEN + 16].try_into().unwrap());
    let ends: Vec<usize> =
        (0..t.chunks.len()).map(|i| t.chunks.get(i + 1).map_or(trailer_off, |c| c.offset) as usize).collect();
    let q = d.path().join("cut.log");
    for cut in 0..=full.len() {
        fs::write(&q, &full[..cut]).unwrap();
        match LogReader::open(&q) {
            Err(e) => {
                assert!(cut < header_len, "cut at {cut}: unexpected error {e}");
                let msg = e.to_string();
                assert!(msg.contains("truncated") || msg.contains("not an Ailuro"), "{msg}");
            }
            Ok(mut r) => {
                assert!(cut >= header_len);
                assert_eq!(r.is_complete(), cut == full.len(), "cut at {cut}");
                // Exactly the chunks that fit entirely before the cut are readable.
                let fitting = ends.iter().filter(|&&e| e <= cut).count();
                assert_eq!(r.chunks().len(), fitting, "cut at {cut}");
                let mut n = 0;
                while let Some(e) = r.next_entry().unwrap() {
                    assert_eq!(e, entries[n]);
                    n += 1;
                }
                let expect: usize = r.chunks().iter().map(|c| c.entries as usize).sum();
                assert_eq!(n, expect, "cut at {cut}");
                if cut < full.len() {
                    assert_eq!(r.end_icount(), r.chunks().last().map_or(1000, |c| c.last_icount));
                }
            }
        }
    }
}

#[test]
fn any_single_byte_corruption_is_detected() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("x.log");
    let entries = random_entries(150, 11);
    let t = write_log(&p, &entries, 1024, true).unwrap();
    assert!(t.chunks.len() >= 5, "{} chunks", t.chunks.len());
    let full = fs::read(&p).unwrap();
    let trailer_off = {
        let f = &full[full.len() - FOOTER_LEN..];
        u64::from_le_bytes(f[8..16].try_into().unwrap()) as usize
    };
    let q = d.path().join("bad.log");
    for off in 0..full.len() {
        let mut b = full.clone();
        b[off] ^= 0x20;
        fs::write(&q, &b).unwrap();
        // Read through the iterator, which must end after yielding an error (no endless loop).
        let res: Result<Vec<LogEntry>> = LogReader::open(&q).and_then(|r| {
            let v: Vec<_> = r.collect();
            assert!(v.iter().filter(|e| e.is_err()).count() <= 1);
            v.into_iter().collect()
        });
        let err = match res {
            Ok(_) => panic!("corruption at offset {off} went unnoticed"),
            Err(e) => e,
        };
        // A flipped byte inside a chunk is blamed on that chunk.
        if let Some(i) = t.chunks.iter().rposition(|c| c.offset as usize <= off) {
            if off < trailer_off {
                let chunk_off = t.chunks[i].offset;
                match &err {
                    RecordingError::ChunkChecksum { chunk, offset, .. } => {
                        assert_eq!((*chunk, *offset), (i as u64, chunk_off), "offset {off}");
                    }
                    RecordingError::Corrupt { what, offset, .. } => {
                        assert!(what == &format!("chunk {i}") && *offset == chunk_off, "offset {off}: {err}")
                    }
                    e => panic!("offset {off}: unexpected {e}"),
                }
            }
        }
    }
}

#[test]
fn wrong_magic_newer_version_and_arch_are_clear_errors() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("v.log");
    write_log(&p, &random_entries(10, 5), 1024, true);
    let full = fs::read(&p).unwrap();
    let q = d.path().join("w.log");

    let mut b = full.clone();
    b[..8].copy_from_slice(b"PANDA_RR");
    fs::write(&q, &b).unwrap();
    let e = LogReader::open(&q).err().unwrap();
    assert!(matches!(e, RecordingError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not an Ailuro nondet log"), "{e}");

    let mut b = full.clone();
    b[8..12].copy_from_slice(&3u32.to_le_bytes());
    fs::write(&q, &b).unwrap();
    let e = LogReader::open(&q).err().unwrap();
    assert!(matches!(e, RecordingError::NewerVersion { found: 3, supported: 2, .. }), "{e}");
    assert!(e.to_string().contains("newer version"), "{e}");

    let r = LogReader::open(&p).unwrap();
    r.expect_arch(Arch::I386).unwrap();
    let e = r.expect_arch(Arch::Arm).err().unwrap();
    assert!(e.to_string().contains("recording of a i386 guest, but this is the arm emulator"), "{e}");

    fs::write(&q, b"").unwrap();
    assert!(matches!(LogReader::open(&q), Err(RecordingError::Truncated { .. })));
    fs::write(&q, b"hello").unwrap();
    assert!(matches!(LogReader::open(&q), Err(RecordingError::BadMagic { .. })));
    let e = LogReader::open(&d.path().join("nope.log")).err().unwrap();
    assert!(matches!(e, RecordingError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("nope.log does not exist"));
}

#[test]
fn unknown_event_kind_reports_newer_version() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("k.log");
    let mut file = fs::File::create(&p).unwrap();
    let hb = encode_header(&header(0)).unwrap();
    file.write_all(&hb).unwrap();
    // One entry of kind 200 (unknown to this build), built by hand.
    let raw = [0u8, 200, 1, 2, 3];
    let payload = zstd::bulk::compress(&raw, 3).unwrap();
    file.write_all(&encode_chunk_header(0, 0, 0, 1, raw.len() as u32, &payload)).unwrap();
    file.write_all(&payload).unwrap();
    drop(file);
    let e = read_all(&p).err().unwrap();
    assert!(matches!(e, RecordingError::UnsupportedEventKind { kind: 200, chunk: 0, .. }), "{e}");
    assert!(e.to_string().contains("unsupported event kind 200"), "{e}");
    assert!(e.to_string().contains("newer version"), "{e}");
}

#[test]
fn writer_refuses_overwrite_and_bad_input() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("o.log");
    write_log(&p, &random_entries(5, 1), 1024, true);
    let before = fs::read(&p).unwrap();
    let e = LogWriter::create(&p, &header(0), false).err().unwrap();
    assert!(matches!(e, RecordingError::AlreadyExists { .. }), "{e}");
    assert_eq!(fs::read(&p).unwrap(), before, "refused create must not touch the file");
    let mut w = LogWriter::create(&p, &header(10), true).unwrap();
    assert!(matches!(w.append(&LogEntry { icount: 9, event: Event::Reset }), Err(RecordingError::InvalidInput { .. })));
    w.append(&LogEntry { icount: 20, event: Event::Reset }).unwrap();
    assert!(w.append(&LogEntry { icount: 19, event: Event::Reset }).is_err());
    let huge = Event::Dma { addr: 0, data: vec![0; MAX_EVENT_DATA + 1] };
    assert!(matches!(w.append(&LogEntry { icount: 20, event: huge }), Err(RecordingError::InvalidInput { .. })));
    w.sync().unwrap();
    assert!(w.finish(end(5)).is_err(), "end before the last entry");
    // The failed finish dropped the writer with its chunk flushed: the log is incomplete.
    let r = LogReader::open(&p).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.end_icount(), 20);
    let long = LogHeader { creator: "x".repeat(MAX_CREATOR_LEN + 1), ..header(0) };
    assert!(LogWriter::create(&d.path().join("l.log"), &long, false).is_err());
}

#[test]
fn damaged_footer_of_a_complete_log_is_an_error_not_a_silent_cut() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("f.log");
    write_log(&p, &random_entries(50, 3), 1024, true);
    let mut b = fs::read(&p).unwrap();
    let n = b.len();
    b[n - FOOTER_LEN] = b'X';
    fs::write(&p, &b).unwrap();
    let e = LogReader::open(&p).err().unwrap();
    assert!(e.to_string().contains("footer is damaged"), "{e}");
}

#[test]
fn zero_filled_tail_after_a_host_crash_counts_as_a_cut() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("z.log");
    let entries = random_entries(500, 21);
    write_log(&p, &entries, 1024, false);
    let good = LogReader::open(&p).unwrap();
    let n_chunks = good.chunks().len();
    let mut b = fs::read(&p).unwrap();
    b.resize(b.len() + 10_000, 0);
    fs::write(&p, &b).unwrap();
    let r = LogReader::open(&p).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.chunks().len(), n_chunks);
    assert_eq!(read_all(&p).unwrap(), entries);
    // Zeros followed by data are not a crash artefact: an error.
    b.push(1);
    fs::write(&p, &b).unwrap();
    assert!(LogReader::open(&p).is_err());
}

#[test]
fn random_multi_byte_damage_never_panics() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("fz.log");
    let entries = random_entries(600, 77);
    write_log(&p, &entries, 1500, true);
    let full = fs::read(&p).unwrap();
    let q = d.path().join("fz2.log");
    let mut rng = Rng(0xdead_beef);
    for _ in 0..400 {
        let mut b = full.clone();
        for _ in 0..1 + rng.next() % 8 {
            let i = (rng.next() % b.len() as u64) as usize;
            b[i] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(2) {
            b.truncate((rng.next() % b.len() as u64) as usize);
        }
        fs::write(&q, &b).unwrap();
        // Any outcome but a panic is fine; errors must render.
        match read_all(&q) {
            Ok(v) => assert!(v.len() <= entries.len()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// Throughput of append and read (run with `cargo test --release -- --ignored --nocapture`).
#[test]
#[ignore]
fn log_throughput() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("perf.log");
    let n = 5_000_000u64;
    let t = std::time::Instant::now();
    let mut w = LogWriter::create(&p, &header(0), false).unwrap();
    for i in 0..n {
        w.append(&LogEntry { icount: i * 37, event: Event::IoRead { port: 0x3fd, size: 1, value: (i & 0x61) as u32 } })
            .unwrap();
    }
    w.finish(end(n * 37)).unwrap();
    let wt = t.elapsed();
    let t = std::time::Instant::now();
    let mut r = LogReader::open(&p).unwrap();
    assert_eq!(r.verify_rest().unwrap(), n);
    let rt = t.elapsed();
    eprintln!(
        "{n} entries: append {:.0} ns/entry, read {:.0} ns/entry, file {} KiB",
        wt.as_nanos() as f64 / n as f64,
        rt.as_nanos() as f64 / n as f64,
        fs::metadata(&p).unwrap().len() >> 10
    );
}

/// Offset of the trailer of a complete log, from its footer.
fn trailer_offset(full: &[u8]) -> usize {
    let f = &full[full.len() - FOOTER_LEN..];
    u64::from_le_bytes(f[8..16].try_into().unwrap()) as usize
}

#[test]
fn garbage_after_a_complete_log_is_ignored_with_a_warning() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("g-rr-nondet.log");
    let entries = random_entries(400, 31);
    let t = write_log(&p, &entries, 1024, true).unwrap();
    let full = fs::read(&p).unwrap();
    let fresh = LogReader::open(&p).unwrap();
    assert_eq!((fresh.trailing_bytes(), fresh.data_len()), (None, full.len() as u64));
    assert!(fresh.warnings().is_empty());
    let mut rng = Rng(5);
    let random: Vec<u8> = (0..5000).map(|_| rng.next() as u8).collect();
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("one byte", vec![0x42]),
        ("zeros", vec![0; 4096]),
        ("random", random),
        ("chunk magic", b"CHNK and then some".to_vec()),
        ("trailer magic", b"TRLR\x10\0\0\0".to_vec()),
        ("footer magic at the end", [&b"junk"[..], &full[full.len() - FOOTER_LEN..]].concat()),
        ("the whole log again", full.clone()),
    ];
    let q = d.path().join("q-rr-nondet.log");
    for (what, tail) in tails {
        fs::write(&q, [&full[..], &tail[..]].concat()).unwrap();
        let mut r = LogReader::open(&q).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(r.is_complete(), "{what}");
        assert_eq!(r.trailer(), Some(&t), "{what}");
        assert_eq!(r.trailing_bytes(), Some((full.len() as u64, tail.len() as u64)), "{what}");
        assert_eq!(r.data_len(), full.len() as u64, "{what}");
        assert_eq!(r.end_reason(), Some(EndReason::GuestExit(-3)));
        assert_eq!(r.final_state_hash(), Some([9; 32]));
        let w = r.warnings();
        assert_eq!(w.len(), 1);
        let want = format!(
            "q-rr-nondet.log: {} bytes of trailing garbage after the end-of-recording trailer at offset {} ignored",
            tail.len(),
            full.len()
        );
        assert!(w[0].ends_with(&want), "{what}: {}", w[0]);
        let mut n = 0;
        while let Some(e) = r.next_entry().unwrap() {
            assert_eq!(e, entries[n]);
            n += 1;
        }
        assert_eq!(n, entries.len());
    }
}

#[test]
fn damage_inside_a_log_with_trailing_garbage_is_still_detected() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("x.log");
    let t = write_log(&p, &random_entries(60, 12), 512, true).unwrap();
    assert!(t.chunks.len() >= 3);
    let full = fs::read(&p).unwrap();
    let q = d.path().join("bad.log");
    for off in 0..full.len() {
        let mut b = full.clone();
        b[off] ^= 0x08;
        b.extend_from_slice(b"garbage appended later");
        fs::write(&q, &b).unwrap();
        let res: Result<Vec<LogEntry>> = LogReader::open(&q).and_then(|r| r.collect());
        assert!(res.is_err(), "corruption at offset {off} went unnoticed");
    }
    // A log whose footer is damaged and that has garbage after it is an error, not a cut.
    let mut b = full.clone();
    let n = b.len();
    b[n - FOOTER_LEN] = b'X';
    b.extend_from_slice(&[7; 100]);
    fs::write(&q, &b).unwrap();
    let e = LogReader::open(&q).err().unwrap();
    assert!(e.to_string().contains("footer is damaged"), "{e}");
}

#[test]
fn a_footer_lost_to_a_host_crash_reads_as_a_cut() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("z.log");
    let entries = random_entries(100, 8);
    write_log(&p, &entries, 1024, true);
    let mut b = fs::read(&p).unwrap();
    let t_off = trailer_offset(&b);
    let n = b.len();
    b[n - FOOTER_LEN..].fill(0);
    fs::write(&p, &b).unwrap();
    let r = LogReader::open(&p).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.truncated_at(), Some(t_off as u64));
    assert_eq!(read_all(&p).unwrap(), entries);
}

/// Rewrite the trailer of the complete log at `p` through `edit`, with a valid footer.
fn rewrite_trailer(p: &Path, edit: impl Fn(&mut LogTrailer)) {
    let b = fs::read(p).unwrap();
    let t_off = trailer_offset(&b);
    let mut t = LogReader::open(p).unwrap().trailer().unwrap().clone();
    edit(&mut t);
    let tb = encode_trailer(&t);
    let out = [&b[..t_off], &tb[..], &encode_footer(t_off as u64, &tb)[..]].concat();
    fs::write(p, out).unwrap();
}

#[test]
fn trailer_totals_reason_and_code_are_checked() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("t.log");
    let entries = random_entries(300, 17);
    write_log(&p, &entries, 1024, true);
    let good = fs::read(&p).unwrap();
    // Sanity: rewriting without change keeps a valid log.
    rewrite_trailer(&p, |_| {});
    assert_eq!(read_all(&p).unwrap(), entries);

    // Wrong total: caught at open.
    rewrite_trailer(&p, |t| t.entry_count += 1);
    let e = LogReader::open(&p).err().unwrap();
    assert!(e.to_string().contains("says 301 entries, the chunks hold 300"), "{e}");

    // Per-kind statistics with the right sums but attributed to the wrong kinds: caught when the
    // reader reaches the end.
    fs::write(&p, &good).unwrap();
    rewrite_trailer(&p, |t| {
        let (a, b) = (t.kind_stats[0].kind, t.kind_stats[1].kind);
        t.kind_stats[0].kind = b;
        t.kind_stats[1].kind = a;
    });
    let mut r = LogReader::open(&p).unwrap();
    let e = loop {
        match r.next_entry() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("wrong per-kind statistics went unnoticed"),
            Err(e) => break e,
        }
    };
    assert!(matches!(&e, RecordingError::Corrupt { what, .. } if what == "log trailer"), "{e}");
    assert!(e.to_string().contains("the log holds"), "{e}");

    // Statistics whose byte total disagrees with the chunks, and duplicated kinds: at open.
    fs::write(&p, &good).unwrap();
    rewrite_trailer(&p, |t| t.kind_stats[0].bytes += 1);
    assert!(LogReader::open(&p).err().unwrap().to_string().contains("per-kind statistics"));
    fs::write(&p, &good).unwrap();
    rewrite_trailer(&p, |t| {
        let k = t.kind_stats[0];
        t.kind_stats[1].kind = k.kind;
    });
    assert!(LogReader::open(&p).err().unwrap().to_string().contains("listed twice"));

    // A non-zero code with a reason other than GuestExit; an unknown (newer) reason may have one.
    fs::write(&p, &good).unwrap();
    rewrite_trailer(&p, |t| t.reason = EndReason::Unknown(4, 7));
    let e = LogReader::open(&p).err().unwrap();
    assert!(e.to_string().contains("exit code of a non-exit end reason"), "{e}");
    fs::write(&p, &good).unwrap();
    rewrite_trailer(&p, |t| t.reason = EndReason::Unknown(77, 7));
    let r = LogReader::open(&p).unwrap();
    assert_eq!(r.end_reason(), Some(EndReason::Unknown(77, 7)));
    assert_eq!(r.end_reason().and_then(EndReason::exit_code), None);
    rewrite_trailer(&p, |t| t.reason = EndReason::GuestExit(42));
    assert_eq!(LogReader::open(&p).unwrap().end_reason().and_then(EndReason::exit_code), Some(42));
}

#[test]
fn clock_going_backwards_is_refused_by_the_writer_and_the_reader() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("c.log");
    let mut w = LogWriter::create(&p, &header(0), false).unwrap();
    let clock = |icount, now_ns| LogEntry { icount, event: Event::Clock { now_ns } };
    w.append(&clock(10, 1000)).unwrap();
    w.append(&clock(20, 1000)).unwrap(); // same time: fine
    let e = w.append(&clock(30, 999)).err().unwrap();
    assert!(matches!(e, RecordingError::InvalidInput { .. }), "{e}");
    assert!(e.to_string().contains("goes back in time"), "{e}");
    // A reset starts the machine's clock over.
    w.append(&LogEntry { icount: 40, event: Event::Reset }).unwrap();
    w.append(&clock(50, 5)).unwrap();
    w.finish(end(60)).unwrap();
    assert_eq!(read_all(&p).unwrap().len(), 4);

    // A log with a backwards Clock, built by hand, is corrupt.
    let q = d.path().join("k.log");
    let mut file = fs::File::create(&q).unwrap();
    file.write_all(&encode_header(&header(0)).unwrap()).unwrap();
    let mut raw = Vec::new();
    for (delta, ns) in [(0u64, 500u64), (1, 400)] {
        raw.put_var(delta);
        Event::Clock { now_ns: ns }.encode(&mut raw);
    }
    let payload = zstd::bulk::compress(&raw, 3).unwrap();
    file.write_all(&encode_chunk_header(0, 3, 4, 2, raw.len() as u32, &payload)).unwrap();
    file.write_all(&payload).unwrap();
    drop(file);
    let e = read_all(&q).err().unwrap();
    assert!(matches!(&e, RecordingError::Corrupt { what, .. } if what == "chunk 0"), "{e}");
    assert!(e.to_string().contains("Clock entry at icount 4 goes back in time"), "{e}");
}

#[cfg(unix)]
#[test]
fn create_never_writes_through_a_symlink_and_refuses_directories() {
    let d = TempDir::new().unwrap();
    let victim = d.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let p = d.path().join("l-rr-nondet.log");
    std::os::unix::fs::symlink(&victim, &p).unwrap();
    let e = LogWriter::create(&p, &header(0), false).err().unwrap();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let w = LogWriter::create(&p, &header(0), true).unwrap();
    w.finish(end(5)).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "the link's target is untouched");
    assert!(fs::symlink_metadata(&p).unwrap().file_type().is_file(), "the link itself was replaced");
    assert!(LogReader::open(&p).unwrap().is_complete());
    // Dangling link without overwrite: refused, and its target is not created.
    let q = d.path().join("dangling.log");
    std::os::unix::fs::symlink(d.path().join("nowhere"), &q).unwrap();
    assert!(LogWriter::create(&q, &header(0), false).is_err());
    assert!(!d.path().join("nowhere").exists());
    // A directory is never replaced.
    let dir = d.path().join("dir.log");
    fs::create_dir(&dir).unwrap();
    for ow in [false, true] {
        let e = LogWriter::create(&dir, &header(0), ow).err().unwrap();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }
    let mut names: Vec<_> = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["dangling.log", "dir.log", "l-rr-nondet.log", "victim"], "no temporary files left");
}

#[test]
fn overwrite_replaces_an_existing_log_atomically() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("o.log");
    write_log(&p, &random_entries(50, 2), 1024, true);
    // A reader of the old log keeps reading the old file while the new one replaces it.
    let mut old = LogReader::open(&p).unwrap();
    let w = LogWriter::create(&p, &header(1), true).unwrap();
    assert_eq!(old.verify_rest().unwrap(), 50);
    drop(w);
    let r = LogReader::open(&p).unwrap();
    assert_eq!((r.header().start_icount, r.chunks().len()), (1, 0));
}
