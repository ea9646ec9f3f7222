//! Tests of the plog format: round trips, chunking, filtering, crash truncation, corruption,
//! versioning and writer-side validation.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use crate::codec::{checksum, Put};
use crate::format::{encode_chunk_header, encode_header, ChunkHeader, CHUNK_HEADER_LEN, FOOTER_LEN};
use crate::*;

fn header() -> PlogHeader {
    PlogHeader::new("test ✓").with("recording", "demo").with("plugins", "syscalls,strings")
}

fn read_all(path: &Path) -> Result<Vec<OwnedRecord>> {
    PlogReader::open(path)?.collect()
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

/// Equality that compares floats by their bits (so NaN equals itself).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k, p), (l, q))| k == l && same(p, q))
        }
        _ => a == b,
    }
}

fn same_record(a: &OwnedRecord, b: &OwnedRecord) -> bool {
    a.icount == b.icount
        && a.pc == b.pc
        && a.asid == b.asid
        && a.plugin == b.plugin
        && a.kind == b.kind
        && a.fields.len() == b.fields.len()
        && a.fields.iter().zip(&b.fields).all(|((k, p), (l, q))| k == l && same(p, q))
}

fn random_records(n: usize, seed: u64) -> Vec<OwnedRecord> {
    let mut rng = Rng(seed);
    let mut icount = 1000;
    let plugins = ["syscalls", "strings", "taint", "osi"];
    let kinds = ["enter", "return", "hit", "process"];
    (0..n)
        .map(|i| {
            if !rng.next().is_multiple_of(3) {
                icount += rng.next() % 5000;
            }
            let r = rng.next();
            let mut fields = vec![
                ("name".to_owned(), Value::Str(format!("call_{}", r % 50))),
                ("n".to_owned(), Value::U64(r)),
                (format!("k{}", r % 7), Value::I64(-(r as i64 % 1000))),
            ];
            if i % 5 == 0 {
                fields.push(("data".into(), Value::Bytes((0..(r % 300) as usize).map(|x| x as u8).collect())));
            }
            if i % 11 == 0 {
                fields.push((
                    "args".into(),
                    Value::List(vec![Value::U64(r >> 3), Value::Map(vec![("x".into(), Value::F64(r as f64 / 7.0))])]),
                ));
            }
            OwnedRecord {
                icount,
                pc: 0xc100_0000 + (r % 0x10000),
                asid: (i % 3 != 0).then_some(0x1000 * (r % 16)),
                plugin: plugins[(r % 4) as usize].into(),
                kind: kinds[((r >> 8) % 4) as usize].into(),
                fields,
            }
        })
        .collect()
}

fn write_records(path: &Path, recs: &[OwnedRecord], chunk_size: usize) -> PlogTrailer {
    let mut w = PlogWriter::create(path, &header(), true).unwrap();
    w.set_chunk_size(chunk_size);
    for r in recs {
        w.append(r).unwrap();
    }
    w.finish().unwrap()
}

fn assert_same_records(got: &[OwnedRecord], want: &[OwnedRecord]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(same_record(g, w), "record {i}: {g:?} != {w:?}");
    }
}

#[test]
fn every_value_variant_round_trips() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("v.plog");
    let values = vec![
        Value::Null,
        Value::Bool(false),
        Value::Bool(true),
        Value::U64(0),
        Value::U64(u64::MAX),
        Value::I64(0),
        Value::I64(-1),
        Value::I64(i64::MIN),
        Value::I64(i64::MAX),
        Value::F64(0.0),
        Value::F64(-0.0),
        Value::F64(1.5e-310),
        Value::F64(f64::INFINITY),
        Value::F64(f64::from_bits(0x7ff8_dead_beef_0001)),
        Value::Str(String::new()),
        Value::Str("ünïcode \"quoted\"\n\0".into()),
        Value::Bytes(vec![]),
        Value::Bytes((0..=255).collect()),
        Value::List(vec![]),
        Value::Map(vec![]),
        Value::List(vec![Value::Null, Value::U64(7), Value::Str("x".into()), Value::List(vec![Value::Bool(true)])]),
        Value::Map(vec![
            ("a".into(), Value::I64(-5)),
            ("nested".into(), Value::Map(vec![("a".into(), Value::Bytes(vec![1, 2]))])),
            ("name".into(), Value::Null),
        ]),
    ];
    let mut w = PlogWriter::create(&p, &header(), false).unwrap();
    for (i, v) in values.iter().enumerate() {
        w.record(i as u64, 0x1000 + i as u64, "t", "one").field("v", v).emit().unwrap();
    }
    let mut all = w.record(100, u64::MAX, "t", "all").asid(u64::MAX);
    for (i, v) in values.iter().enumerate() {
        all = all.field(&format!("f{i}"), v);
    }
    all.emit().unwrap();
    // Scalars straight from Rust types, and the streaming list.
    w.record(101, 0, "t", "rust")
        .field("u8", 200u8)
        .field("i16", -3i16)
        .field("f32", 0.5f32)
        .field("bool", true)
        .field("str", "s")
        .field("string", &String::from("owned"))
        .field("bytes", b"\x00\xff")
        .field("vec", &vec![1u8, 2])
        .field("none", None::<u64>)
        .field("some", Some(-7i64))
        .list("list", [1u64, 2, 3])
        .list("strs", ["a", "b"].iter().copied())
        .emit()
        .unwrap();
    let t = w.finish().unwrap();
    assert_eq!(t.record_count, values.len() as u64 + 2);

    let got = read_all(&p).unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(got[i].icount, i as u64);
        assert_eq!(got[i].pc, 0x1000 + i as u64);
        assert_eq!(got[i].asid, None);
        assert_eq!((got[i].plugin.as_str(), got[i].kind.as_str()), ("t", "one"));
        assert!(same(got[i].get("v").unwrap(), v), "{:?} != {v:?}", got[i]);
    }
    let all = &got[values.len()];
    assert_eq!((all.pc, all.asid), (u64::MAX, Some(u64::MAX)));
    assert_eq!(all.fields.len(), values.len());
    for (i, v) in values.iter().enumerate() {
        assert_eq!(all.fields[i].0, format!("f{i}"));
        assert!(same(&all.fields[i].1, v));
    }
    let r = &got[values.len() + 1];
    let expect: Vec<(&str, Value)> = vec![
        ("u8", Value::U64(200)),
        ("i16", Value::I64(-3)),
        ("f32", Value::F64(0.5)),
        ("bool", Value::Bool(true)),
        ("str", Value::Str("s".into())),
        ("string", Value::Str("owned".into())),
        ("bytes", Value::Bytes(vec![0, 0xff])),
        ("vec", Value::Bytes(vec![1, 2])),
        ("none", Value::Null),
        ("some", Value::I64(-7)),
        ("list", Value::List(vec![Value::U64(1), Value::U64(2), Value::U64(3)])),
        ("strs", Value::List(vec![Value::Str("a".into()), Value::Str("b".into())])),
    ];
    assert_eq!(r.fields.iter().map(|(k, v)| (k.as_str(), v.clone())).collect::<Vec<_>>(), expect);
}

#[test]
fn header_and_metadata_round_trip() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("h.plog");
    let h = PlogHeader::new("creator ✓").with("recording", "rec/boot").with("plugins", "").with("k=v", "a\nb");
    PlogWriter::create(&p, &h, false).unwrap().finish().unwrap();
    let r = PlogReader::open(&p).unwrap();
    assert_eq!(r.header(), &h);
    assert_eq!(r.header().get("recording"), Some("rec/boot"));
    assert_eq!(r.version(), PLOG_VERSION);
    assert!(r.is_complete());
    assert_eq!(r.record_count(), 0);
    assert_eq!(r.icount_range(), None);
    assert_eq!(r.trailer().unwrap().record_count, 0);

    for bad in [
        PlogHeader::new("x".repeat(MAX_CREATOR_LEN + 1)),
        PlogHeader::new("c").with("", "v"),
        PlogHeader::new("c").with("a", "1").with("a", "2"),
    ] {
        let e = PlogWriter::create(d.path().join("bad"), &bad, false).err().unwrap();
        assert!(matches!(e, PlogError::InvalidInput { what: "header", .. }), "{e}");
        assert!(!d.path().join("bad").exists());
    }
}

#[test]
fn many_records_across_several_chunks() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("many.plog");
    let recs = random_records(20_000, 1);
    let t = write_records(&p, &recs, 16 << 10);
    assert!(t.chunks.len() >= 8, "{} chunks", t.chunks.len());
    assert_eq!(t.record_count, recs.len() as u64);
    // Per (plugin, kind) statistics, sorted.
    let mut want = std::collections::BTreeMap::new();
    for r in &recs {
        *want.entry((r.plugin.clone(), r.kind.clone())).or_insert(0u64) += 1;
    }
    let got: Vec<_> = t.kinds.iter().map(|k| ((k.plugin.clone(), k.kind.clone()), k.records)).collect();
    assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    assert_eq!(t.kinds.iter().map(|k| k.raw_bytes).sum::<u64>(), t.raw_bytes);

    let r = PlogReader::open(&p).unwrap();
    assert!(r.is_complete());
    assert_eq!(r.trailer(), Some(&t));
    assert_eq!(r.chunks(), &t.chunks[..]);
    assert_eq!(r.record_count(), recs.len() as u64);
    assert_eq!(r.icount_range(), Some((recs[0].icount, recs.last().unwrap().icount)));
    assert!(t.compressed_bytes < t.raw_bytes);
    assert_same_records(&r.collect::<Result<Vec<_>>>().unwrap(), &recs);

    // Same input, same bytes: a replay run twice writes an identical plog.
    let p2 = d.path().join("again.plog");
    write_records(&p2, &recs, 16 << 10);
    assert_eq!(fs::read(&p).unwrap(), fs::read(&p2).unwrap());
}

#[test]
fn repeated_names_cost_one_byte_after_their_first_use() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("small.plog");
    let mut w = PlogWriter::create(&p, &header(), false).unwrap();
    w.record(1, 0x10, "syscalls", "syscall").field("name", "openat").field("fd", 3u64).emit().unwrap();
    w.record(2, 0x10, "syscalls", "syscall").field("name", "openat").field("fd", 3u64).emit().unwrap();
    let t = w.finish().unwrap();
    // First: delta, pc, flags, 2 definitions (2+8, 2+7), count, 2 keys (2+4, 2+2) and values
    // (1+1+6, 1+1). Second: the same with one-byte references.
    let first = 3 + 10 + 9 + 1 + 6 + 8 + 4 + 2;
    let second = 3 + 1 + 1 + 1 + 1 + 8 + 1 + 2;
    assert_eq!(t.raw_bytes, first + second);
}

#[test]
fn seek_and_icount_filter() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("f.plog");
    let mut w = PlogWriter::create(&p, &header(), false).unwrap();
    w.set_chunk_size(256);
    for i in 0..1000u64 {
        // Three records per icount, so that equal icounts straddle chunk boundaries.
        for j in 0..3u64 {
            w.record(i * 10, i, "p", "k").field("j", j).emit().unwrap();
        }
    }
    w.finish().unwrap();
    let mut r = PlogReader::open(&p).unwrap();
    assert!(r.chunks().len() > 20);
    r.seek_icount(5555);
    let got: Vec<_> = r.by_ref().take(4).map(|x| x.unwrap()).collect();
    assert_eq!(
        got.iter().map(|x| (x.icount, x.get("j").cloned())).collect::<Vec<_>>(),
        [
            (5560, Some(Value::U64(0))),
            (5560, Some(Value::U64(1))),
            (5560, Some(Value::U64(2))),
            (5570, Some(Value::U64(0)))
        ]
    );
    // Every icount with a record: all three of them come back, whatever the chunk boundaries.
    for target in [0, 10, 1230, 4440, 9990] {
        r.seek_icount(target);
        let got: Vec<_> = r.by_ref().take(3).map(|x| x.unwrap()).collect();
        assert!(got.iter().all(|x| x.icount == target), "{target}: {got:?}");
        assert_eq!(
            got.iter().map(|x| x.get("j").and_then(Value::as_u64)).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2)]
        );
    }
    // Backwards, and past the end.
    r.seek_icount(0);
    assert_eq!(r.by_ref().count(), 3000);
    r.seek_icount(10_000);
    assert!(r.next_record().unwrap().is_none());
}

/// Two plugins' records interleaved out of icount order, the way `console` (reports after each
/// CPU slice, with the icount where each byte was written) and `trace` (reports during the
/// slice) write them: 3 slices of 100 instructions, a "console" record for every 7th instruction
/// of a slice emitted after the slice.
fn interleaved_records() -> Vec<OwnedRecord> {
    let mut recs = Vec::new();
    let rec = |icount: u64, plugin: &str, kind: &str| OwnedRecord {
        icount,
        pc: 0x1000 + icount,
        asid: None,
        plugin: plugin.into(),
        kind: kind.into(),
        fields: vec![("n".into(), Value::U64(icount * 3))],
    };
    for slice in 0..3u64 {
        let base = slice * 100;
        for i in base..base + 100 {
            recs.push(rec(i, "trace", "insn"));
        }
        for i in (base..base + 100).filter(|i| i % 7 == 0) {
            recs.push(rec(i, "console", "byte"));
        }
    }
    // And extremes: a late record far back, u64::MAX and 0 next to each other.
    recs.push(rec(u64::MAX, "edge", "max"));
    recs.push(rec(0, "edge", "zero"));
    recs.push(rec(150, "console", "line"));
    recs
}

#[test]
fn records_in_any_icount_order_are_kept_in_emission_order() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("o.plog");
    let recs = interleaved_records();
    // Chunks small enough that late records cross chunk boundaries.
    for chunk_size in [256, 1 << 20] {
        let t = write_records(&p, &recs, chunk_size);
        let r = PlogReader::open(&p).unwrap();
        assert!(r.is_complete());
        assert_eq!(r.version(), 2);
        assert!(!r.is_sorted_by_format());
        assert_eq!(r.icount_range(), Some((0, u64::MAX)));
        // Chunk ranges are the true minimum and maximum of their records.
        let mut it = recs.iter();
        for c in &t.chunks {
            let mine: Vec<u64> = it.by_ref().take(c.records as usize).map(|r| r.icount).collect();
            assert_eq!((c.min_icount, c.max_icount), (*mine.iter().min().unwrap(), *mine.iter().max().unwrap()));
        }
        // File order is emission order.
        assert_same_records(&r.collect::<Result<Vec<_>>>().unwrap(), &recs);

        // Sorted: by icount, equal icounts in emission order (trace before console here).
        let mut want = recs.clone();
        want.sort_by_key(|r| r.icount);
        let got = PlogReader::open(&p).unwrap().sorted().collect::<Result<Vec<_>>>().unwrap();
        assert_same_records(&got, &want);
        let at0: Vec<&str> = got[..3].iter().map(|r| r.plugin.as_str()).collect();
        assert_eq!(at0, ["trace", "console", "edge"], "{chunk_size}");

        // A range selects records by icount wherever they are.
        let mut r = PlogReader::open(&p).unwrap();
        r.select_icounts(140, 160);
        let got = r.collect::<Result<Vec<_>>>().unwrap();
        let want: Vec<_> = recs.iter().filter(|x| (140..=160).contains(&x.icount)).cloned().collect();
        assert_same_records(&got, &want);
        let mut r = PlogReader::open(&p).unwrap();
        r.select_icounts(140, 160);
        let got = r.sorted().collect::<Result<Vec<_>>>().unwrap();
        let mut want = want.clone();
        want.sort_by_key(|r| r.icount);
        assert_same_records(&got, &want);
    }
    // The writer takes any order without complaint.
    let mut w = PlogWriter::create(d.path().join("w.plog"), &header(), false).unwrap();
    w.record(100, 0, "p", "k").emit().unwrap();
    w.record(99, 0, "p", "k").emit().unwrap();
    w.flush().unwrap();
    w.record(50, 0, "p", "k").emit().unwrap();
    assert_eq!(w.record_count(), 3);
    assert_eq!(w.last_icount(), 50);
    w.finish().unwrap();
}

#[test]
fn sorting_memory_is_bounded() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("wide.plog");
    // Every chunk spans the whole range: sorting would need them all at once.
    let mut w = PlogWriter::create(&p, &header(), false).unwrap();
    w.set_chunk_size(1024);
    for i in 0..2000u64 {
        let icount = if i % 2 == 0 { i } else { 1_000_000 - i };
        w.record(icount, 0, "p", "k").field("pad", "some padding text").emit().unwrap();
    }
    let t = w.finish().unwrap();
    let r = PlogReader::open(&p).unwrap();
    let e = r.sorted().with_buffer_limit(16 << 10).collect::<Result<Vec<_>>>().unwrap_err();
    assert!(matches!(e, PlogError::SortLimit { limit: 16384, .. }), "{e}");
    assert!(e.to_string().contains("too far out of icount order"), "{e}");
    // Within the limit it works.
    let got = PlogReader::open(&p).unwrap().sorted().collect::<Result<Vec<_>>>().unwrap();
    assert_eq!(got.len() as u64, t.record_count);
    assert!(got.windows(2).all(|w| w[0].icount <= w[1].icount));
}

#[test]
fn version_1_files_are_still_read() {
    // Written by the version-1 writer: write_records(random_records(300, 21), chunk size 2048).
    let v1 = include_bytes!("../tests/fixtures/v1.plog");
    let recs = random_records(300, 21);
    let d = TempDir::new().unwrap();
    let p = d.path().join("v1.plog");
    fs::write(&p, v1).unwrap();
    let r = PlogReader::open(&p).unwrap();
    assert_eq!(r.version(), 1);
    assert!(r.is_complete() && r.is_sorted_by_format());
    assert!(r.chunks().len() > 3);
    assert_eq!(r.icount_range(), Some((recs[0].icount, recs.last().unwrap().icount)));
    assert_same_records(&r.collect::<Result<Vec<_>>>().unwrap(), &recs);
    let mut r = PlogReader::open(&p).unwrap();
    let mid = recs[150].icount;
    r.seek_icount(mid);
    let want: Vec<_> = recs.iter().filter(|x| x.icount >= mid).cloned().collect();
    assert_same_records(&r.sorted().collect::<Result<Vec<_>>>().unwrap(), &want);
    // Cut short, it is an incomplete version-1 file.
    let chunks = PlogReader::open(&p).unwrap().chunks().to_vec();
    fs::write(&p, &v1[..chunks[2].offset as usize + 30]).unwrap();
    let r = PlogReader::open(&p).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.truncated_at(), Some(chunks[2].offset));
    let n = (chunks[0].records + chunks[1].records) as usize;
    assert_same_records(&r.collect::<Result<Vec<_>>>().unwrap(), &recs[..n]);
    // Every flipped byte of it is still noticed.
    for i in (0..v1.len()).step_by(7) {
        let mut b = v1.to_vec();
        b[i] ^= 0x04;
        fs::write(&p, &b).unwrap();
        let res = PlogReader::open(&p).and_then(|r| r.collect::<Result<Vec<_>>>());
        assert!(res.is_err(), "flip at byte {i} went unnoticed");
    }
}

#[test]
fn invalid_records_are_refused_and_the_writer_stays_usable() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("inv.plog");
    let mut w = PlogWriter::create(&p, &header(), false).unwrap();
    let deep = (0..MAX_DEPTH).fold(Value::Null, |v, _| Value::List(vec![v]));
    let too_deep = Value::List(vec![deep.clone()]);
    let dup_map = Value::Map(vec![("a".into(), Value::Null), ("a".into(), Value::Null)]);
    let empty_key = Value::Map(vec![(String::new(), Value::Null)]);
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let check = |w: &mut PlogWriter, r: Result<()>, needle: &str| {
        let e = r.unwrap_err();
        assert!(matches!(e, PlogError::InvalidInput { .. }), "{e}");
        assert!(e.to_string().contains(needle), "{e} does not mention {needle}");
        assert!(e.to_string().contains("inv.plog"), "{e}");
        // New names from the failed record were forgotten; a valid record still works.
        w.record(5, 1, "ok", "ok").field("fine", 1u64).emit().unwrap();
    };
    for key in RESERVED_KEYS {
        let r = w.record(5, 0, "p", "k").field(key, 1u64).emit();
        check(&mut w, r, "reserved");
    }
    let r = w.record(5, 0, "p", "k").field("a", 1u64).field("b", 2u64).field("a", 3u64).emit();
    check(&mut w, r, "appears twice");
    let r = w.record(5, 0, "p", "k").field("m", &dup_map).emit();
    check(&mut w, r, "appears twice");
    let r = w.record(5, 0, "p", "k").field("", 1u64).emit();
    check(&mut w, r, "empty");
    let r = w.record(5, 0, "p", "k").field("m", &empty_key).emit();
    check(&mut w, r, "empty");
    let r = w.record(5, 0, "", "k").emit();
    check(&mut w, r, "plugin name");
    let r = w.record(5, 0, "p", &long).emit();
    check(&mut w, r, "record kind");
    let r = w.record(5, 0, "p", "k").field("d", &too_deep).emit();
    check(&mut w, r, "deeper");
    let big = vec![0u8; MAX_RECORD_LEN];
    let r = w.record(5, 0, "p", "k").field("big", &big).emit();
    check(&mut w, r, "exceeds");
    // Abandoned builders (never emitted) write nothing either.
    let _ = w.record(5, 0, "new_plugin", "new_kind").field("new_field", Value::from("x").as_value_ref());
    w.record(5, 0, "p", "k").field("d", &deep).emit().unwrap();
    w.record(6, 0, "new_plugin", "new_kind").field("new_field", 2u64).emit().unwrap();
    w.finish().unwrap();

    let got = read_all(&p).unwrap();
    let oks = got.iter().filter(|r| r.plugin == "ok").count();
    assert_eq!(oks, 13);
    assert_eq!(got.len(), 15);
    assert!(same(got[13].get("d").unwrap(), &deep));
    assert_eq!(got[14].get("new_field"), Some(&Value::U64(2)));
}

#[test]
fn refuses_to_overwrite() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("x.plog");
    fs::write(&p, b"precious").unwrap();
    let e = PlogWriter::create(&p, &header(), false).err().unwrap();
    assert!(matches!(e, PlogError::AlreadyExists { .. }), "{e}");
    assert!(e.to_string().contains("x.plog") && e.to_string().contains("refusing to overwrite"), "{e}");
    assert_eq!(fs::read(&p).unwrap(), b"precious");
    let mut w = PlogWriter::create(&p, &header(), true).unwrap();
    w.record(1, 2, "p", "k").emit().unwrap();
    w.finish().unwrap();
    assert_eq!(read_all(&p).unwrap().len(), 1);
    let e = PlogWriter::create(d.path().join("no/such/dir.plog"), &header(), false).err().unwrap();
    assert!(matches!(e, PlogError::Io { op: "create", .. }), "{e}");
}

#[test]
fn dropped_writer_leaves_an_incomplete_but_readable_file() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("crash.plog");
    let recs = random_records(3000, 7);
    {
        let mut w = PlogWriter::create(&p, &header(), false).unwrap();
        w.set_chunk_size(8 << 10);
        for r in &recs {
            w.append(r).unwrap();
        }
    }
    let r = PlogReader::open(&p).unwrap();
    assert!(!r.is_complete());
    assert!(r.trailer().is_none());
    assert_eq!(r.truncated_at(), None);
    assert_eq!(r.record_count(), recs.len() as u64);
    assert_same_records(&r.collect::<Result<Vec<_>>>().unwrap(), &recs);

    // A writer that never wrote a record leaves a header-only file.
    let p2 = d.path().join("empty.plog");
    drop(PlogWriter::create(&p2, &header(), false).unwrap());
    let r = PlogReader::open(&p2).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.record_count(), 0);
    assert_eq!(r.header(), &header());
}

#[test]
fn truncated_file_reads_up_to_its_last_whole_chunk() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("full.plog");
    let recs = random_records(400, 3);
    let t = write_records(&p, &recs, 2048);
    assert!(t.chunks.len() >= 4);
    let full = fs::read(&p).unwrap();
    let header_len = t.chunks[0].offset as usize;
    // End of each chunk, and the number of records before it.
    let mut ends = Vec::new();
    let mut before = 0usize;
    for (i, c) in t.chunks.iter().enumerate() {
        let end = t.chunks.get(i + 1).map_or(full.len() - FOOTER_LEN - trailer_len(&full), |n| n.offset as usize);
        before += c.records as usize;
        ends.push((end, before));
    }
    let cut_path = d.path().join("cut.plog");
    let mut cut = 0;
    while cut < full.len() {
        fs::write(&cut_path, &full[..cut]).unwrap();
        let r = PlogReader::open(&cut_path);
        if cut < header_len {
            let e = r.err().unwrap();
            assert!(matches!(e, PlogError::Truncated { .. }), "cut {cut}: {e}");
        } else {
            let r = r.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert!(!r.is_complete(), "cut {cut}");
            let whole = ends.iter().filter(|(end, _)| *end <= cut).count();
            let n = ends[..whole].last().map_or(0, |e| e.1);
            assert_eq!(r.chunks().len(), whole, "cut {cut}");
            let at_boundary = cut == header_len || ends.iter().any(|(end, _)| *end == cut);
            assert_eq!(r.truncated_at().is_none(), at_boundary, "cut {cut}");
            let got = r.collect::<Result<Vec<_>>>().unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_same_records(&got, &recs[..n]);
        }
        // Every byte near the structures, a sample elsewhere.
        let near = ends.iter().any(|(end, _)| cut.abs_diff(*end) < 80) || cut < header_len + 80;
        cut += if near { 1 } else { 37 };
    }
    // The whole file is complete.
    assert!(PlogReader::open(&p).unwrap().is_complete());
}

fn trailer_len(full: &[u8]) -> usize {
    let f = &full[full.len() - FOOTER_LEN..];
    u64::from_le_bytes(f[16..24].try_into().unwrap()) as usize
}

#[test]
fn zero_tail_after_a_host_crash_is_a_cut() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("z.plog");
    let recs = random_records(200, 5);
    let t = write_records(&p, &recs, 2048);
    let mut full = fs::read(&p).unwrap();
    // Keep two chunks, zero the rest (size persisted, data not).
    let keep = t.chunks[2].offset as usize;
    full[keep..].iter_mut().for_each(|b| *b = 0);
    fs::write(&p, &full).unwrap();
    let r = PlogReader::open(&p).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.truncated_at(), Some(keep as u64));
    let n = (t.chunks[0].records + t.chunks[1].records) as usize;
    assert_same_records(&r.collect::<Result<Vec<_>>>().unwrap(), &recs[..n]);
}

#[test]
fn flipped_payload_byte_names_the_chunk() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("flip.plog");
    let recs = random_records(400, 9);
    let t = write_records(&p, &recs, 2048);
    let mut bytes = fs::read(&p).unwrap();
    let c2 = t.chunks[2];
    bytes[c2.offset as usize + CHUNK_HEADER_LEN + 5] ^= 0x40;
    fs::write(&p, &bytes).unwrap();
    let mut r = PlogReader::open(&p).unwrap();
    let mut n = 0;
    let err = loop {
        match r.next() {
            Some(Ok(_)) => n += 1,
            Some(Err(e)) => break e,
            None => panic!("no error"),
        }
    };
    assert_eq!(n, (t.chunks[0].records + t.chunks[1].records) as usize);
    assert!(matches!(err, PlogError::ChunkChecksum { chunk: 2, offset, .. } if offset == c2.offset), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("chunk 2") && msg.contains(&format!("offset {}", c2.offset)), "{msg}");
    assert!(r.failed());
    assert!(r.next().is_none());
    // Seeking past the damaged chunk reads on.
    r.seek_icount(c2.max_icount + 1);
    let rest = r.collect::<Result<Vec<_>>>().unwrap();
    let want: Vec<_> = recs.iter().filter(|x| x.icount > c2.max_icount).cloned().collect();
    assert!(!want.is_empty());
    assert_same_records(&rest, &want);

    // A flipped chunk header is found at open.
    bytes[c2.offset as usize + CHUNK_HEADER_LEN + 5] ^= 0x40;
    bytes[c2.offset as usize + 10] ^= 1;
    fs::write(&p, &bytes).unwrap();
    let e = PlogReader::open(&p).err().unwrap();
    assert!(matches!(e, PlogError::ChunkChecksum { chunk: 2, .. }), "{e}");
}

#[test]
fn every_flipped_byte_is_an_error_never_a_panic() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("all.plog");
    let recs = random_records(40, 11);
    let t = write_records(&p, &recs, 512);
    assert!(t.chunks.len() >= 3);
    let full = fs::read(&p).unwrap();
    let q = d.path().join("flipped.plog");
    for i in 0..full.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = full.clone();
            b[i] ^= mask;
            fs::write(&q, &b).unwrap();
            let res = PlogReader::open(&q).and_then(|r| {
                let complete = r.is_complete();
                let n = r.collect::<Result<Vec<_>>>()?.len();
                Ok((complete, n))
            });
            assert!(res.is_err(), "flip {mask:#x} at byte {i} of {} went unnoticed: {res:?}", full.len());
        }
    }
}

#[test]
fn wrong_magic_and_versions_are_clear_errors() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("m.plog");
    write_records(&p, &random_records(10, 2), 1 << 20);
    let good = fs::read(&p).unwrap();
    let q = d.path().join("bad.plog");
    let open = |b: &[u8]| {
        fs::write(&q, b).unwrap();
        PlogReader::open(&q).err().unwrap()
    };

    let mut b = good.clone();
    b[..8].copy_from_slice(b"AILUROLG");
    let e = open(&b);
    assert!(matches!(&e, PlogError::BadMagic { found, .. } if found == "AILUROLG"), "{e}");
    assert!(e.to_string().contains("is not an Ailuro plugin log"), "{e}");
    let e = open(b"{\"json\": true}\n");
    assert!(matches!(e, PlogError::BadMagic { .. }), "{e}");

    let mut b = good.clone();
    b[8..12].copy_from_slice(&3u32.to_le_bytes());
    let e = open(&b);
    assert!(matches!(e, PlogError::NewerVersion { found: 3, supported: 2, .. }), "{e}");
    assert!(e.to_string().contains("newer version of Ailuro"), "{e}");

    let mut b = good.clone();
    b[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(open(&b).to_string().contains("format version 0"));

    let e = open(&good[..5]);
    assert!(matches!(e, PlogError::Truncated { .. }), "{e}");
    let e = open(b"");
    assert!(e.to_string().contains("empty"), "{e}");

    let e = PlogReader::open(d.path().join("missing.plog")).err().unwrap();
    assert!(matches!(e, PlogError::NotFound { .. }), "{e}");
    assert!(PlogReader::open(d.path()).is_err());
}

/// A file with a hand-made chunk holding `payload` (`records` records, icounts min..=max).
fn file_with_chunk(path: &Path, payload: &[u8], records: u32, min: u64, max: u64) {
    let mut b = encode_header(&header()).unwrap();
    let comp = zstd::bulk::compress(payload, 3).unwrap();
    let h = ChunkHeader {
        seq: 0,
        min,
        max,
        records,
        raw_len: payload.len() as u32,
        comp_len: comp.len() as u32,
        payload_check: checksum(&[&comp]),
    };
    b.extend_from_slice(&encode_chunk_header(&h));
    b.extend_from_slice(&comp);
    fs::write(path, b).unwrap();
}

/// Record prefix: icount delta 0, pc 0, no asid, plugin "p", kind "k", `n` fields.
fn record_head(n: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_var(0);
    b.put_var(0);
    b.put_u8(0);
    for s in ["p", "k"] {
        b.put_var(0);
        b.put_var(1);
        b.put_bytes(s.as_bytes());
    }
    b.put_var(n);
    b
}

#[test]
fn damaged_records_are_clear_errors() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("r.plog");
    let read_err = |payload: &[u8], records: u32| {
        file_with_chunk(&p, payload, records, 0, 0);
        let r = PlogReader::open(&p).unwrap();
        r.collect::<Result<Vec<_>>>().unwrap_err()
    };

    // The hand-made encoding is what the reader expects.
    let mut ok = record_head(1);
    ok.extend_from_slice(&[0, 1, b'f', 3, 42]);
    file_with_chunk(&p, &ok, 1, 0, 0);
    let got = read_all(&p).unwrap();
    assert_eq!(got[0].get("f"), Some(&Value::U64(42)));

    // A value type from a newer version.
    let mut b = record_head(1);
    b.extend_from_slice(&[0, 1, b'f', 10]);
    let e = read_err(&b, 1);
    assert!(matches!(e, PlogError::UnsupportedValue { tag: 10, chunk: 0, record: 0, .. }), "{e}");
    assert!(e.to_string().contains("newer version"), "{e}");

    let check = |payload: &[u8], records: u32, needle: &str| {
        let e = read_err(payload, records);
        assert!(matches!(e, PlogError::Corrupt { .. }), "{e}");
        let m = e.to_string();
        assert!(m.contains("chunk 0") && m.contains(needle), "{m} does not mention {needle}");
    };
    // Reference to an undefined string.
    let mut b = record_head(1);
    b.extend_from_slice(&[5, 0]);
    check(&b, 1, "not defined");
    // A reserved field name.
    let mut b = record_head(1);
    b.extend_from_slice(&[0, 2, b'p', b'c', 0]);
    check(&b, 1, "reserved");
    // The same field twice.
    let mut b = record_head(2);
    b.extend_from_slice(&[0, 1, b'f', 0, 3, 0]);
    check(&b, 1, "appears twice");
    // The same string defined twice.
    let mut b = record_head(1);
    b.extend_from_slice(&[0, 1, b'p', 0]);
    check(&b, 1, "defined twice");
    // Unknown flag bits.
    let mut b = record_head(0);
    b[2] = 2;
    check(&b, 1, "flags");
    // Fewer records than the header says, and bytes left over.
    check(&record_head(0), 2, "data ends");
    let mut b = record_head(0);
    b.push(0);
    check(&b, 1, "left over");
    // The records' icount range disagrees with the chunk header's.
    file_with_chunk(&p, &record_head(0), 1, 0, 5);
    let e = read_all(&p).unwrap_err();
    assert!(e.to_string().contains("records span icounts 0 ..= 0, chunk header says 0 ..= 5"), "{e}");
    file_with_chunk(&p, &record_head(0), 1, 1, 5);
    let e = read_all(&p).unwrap_err();
    assert!(e.to_string().contains("icount 0 is outside the chunk's range 1 ..= 5"), "{e}");
    // Invalid UTF-8 in a string value; a length beyond the payload.
    let mut b = record_head(1);
    b.extend_from_slice(&[0, 1, b'f', 6, 2, 0xff, 0xfe]);
    check(&b, 1, "UTF-8");
    let mut b = record_head(1);
    b.extend_from_slice(&[0, 1, b'f', 7, 100]);
    check(&b, 1, "exceeds");
    // Nesting beyond the limit is refused without exhausting the stack.
    let mut b = record_head(1);
    b.extend_from_slice(&[0, 1, b'f']);
    for _ in 0..100_000 {
        b.extend_from_slice(&[8, 1]);
    }
    b.push(0);
    check(&b, 1, "deeper");
}

#[test]
fn damaged_trailer_and_footer_are_errors() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("t.plog");
    write_records(&p, &random_records(50, 4), 1024);
    let good = fs::read(&p).unwrap();
    let n = good.len();
    let q = d.path().join("bad.plog");
    // Footer magic damaged: the full trailer before it is noticed.
    let mut b = good.clone();
    b[n - FOOTER_LEN] ^= 0x20;
    fs::write(&q, &b).unwrap();
    let e = PlogReader::open(&q).err().unwrap();
    assert!(e.to_string().contains("footer is damaged"), "{e}");
    // Trailer cut short (crash while finishing): incomplete, all chunks readable.
    let tl = trailer_len(&good);
    fs::write(&q, &good[..n - FOOTER_LEN - tl + 10]).unwrap();
    let r = PlogReader::open(&q).unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.collect::<Result<Vec<_>>>().unwrap().len(), 50);
    // Trailer body damaged.
    let mut b = good.clone();
    b[n - FOOTER_LEN - 5] ^= 1;
    fs::write(&q, &b).unwrap();
    let e = PlogReader::open(&q).err().unwrap();
    assert!(e.to_string().contains("trailer"), "{e}");
}

#[test]
fn writer_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let d = TempDir::new().unwrap();
    let mut w = PlogWriter::create(d.path().join("s.plog"), &header(), false).unwrap();
    assert_send(&w);
    w.record(1, 1, "p", "k").emit().unwrap();
    let h = std::thread::spawn(move || {
        w.record(2, 2, "p", "k").emit().unwrap();
        w.finish().unwrap()
    });
    assert_eq!(h.join().unwrap().record_count, 2);
}

#[test]
fn trailing_bytes_after_a_complete_file_are_reported_not_fatal() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("t.plog");
    let recs = random_records(40, 13);
    let t = write_records(&p, &recs, 512);
    let good = fs::read(&p).unwrap();
    let n = good.len() as u64;
    let mut footer_like = b"AILUROPF".to_vec();
    footer_like.extend_from_slice(&[7u8; 32]);
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("one byte", vec![0x41]),
        ("text", b"appended by mistake\n".to_vec()),
        ("zeros", vec![0; 4096]),
        ("a footer look-alike", footer_like),
        ("the whole file again", good.clone()),
    ];
    for (what, tail) in &garbage {
        let mut b = good.clone();
        b.extend_from_slice(tail);
        fs::write(&p, &b).unwrap();
        let r = PlogReader::open(&p).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(r.is_complete(), "{what}");
        assert_eq!(r.trailer(), Some(&t), "{what}");
        assert_eq!(r.trailing_bytes(), Some((n, tail.len() as u64)), "{what}");
        assert_eq!(r.truncated_at(), None, "{what}");
        assert_same_records(&r.collect::<Result<Vec<_>>>().unwrap(), &recs);
    }
    // Without trailing bytes there are none to report.
    fs::write(&p, &good).unwrap();
    assert_eq!(PlogReader::open(&p).unwrap().trailing_bytes(), None);

    // Damage before the trailing bytes is still noticed, wherever it is.
    let mut base = good.clone();
    base.extend_from_slice(b"trailing garbage, fifty bytes of it .............");
    for i in 0..good.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = base.clone();
            b[i] ^= mask;
            fs::write(&p, &b).unwrap();
            let res = PlogReader::open(&p).and_then(|r| r.collect::<Result<Vec<_>>>());
            assert!(
                res.is_err(),
                "flip {mask:#x} at byte {i} of {} went unnoticed: {:?}",
                good.len(),
                PlogReader::open(&p).map(|r| (r.trailing_bytes(), r.truncated_at(), r.is_complete()))
            );
        }
    }
}

/// Temporary files of `create` left in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ailuro-plog-"))
        .collect()
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("full.plog");
    // The disk fills up while the header is written.
    for budget in [0, 10] {
        let e = PlogWriter::create_with_budget(&p, &header(), false, Some(budget)).err().unwrap();
        assert!(matches!(e, PlogError::Io { op: "write the header of", .. }), "{e}");
        assert!(!p.exists(), "a failed create left {}", p.display());
        // With overwrite, an existing file stays as it was.
        fs::write(&p, b"precious").unwrap();
        let e = PlogWriter::create_with_budget(&p, &header(), true, Some(budget)).err().unwrap();
        assert!(matches!(e, PlogError::Io { .. }), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"precious");
        fs::remove_file(&p).unwrap();
    }
    assert!(temp_files(d.path()).is_empty(), "{:?}", temp_files(d.path()));
    // The rerun (with space) works.
    PlogWriter::create(&p, &header(), false).unwrap().finish().unwrap();
    assert!(PlogReader::open(&p).unwrap().is_complete());
    // A directory cannot be replaced.
    let sub = d.path().join("dir.plog");
    fs::create_dir(&sub).unwrap();
    assert!(PlogWriter::create(&sub, &header(), true).is_err());
    assert!(sub.is_dir());
    assert!(temp_files(d.path()).is_empty(), "{:?}", temp_files(d.path()));
}

#[test]
fn a_failed_write_removes_the_file_and_reports_the_error() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("enospc.plog");
    // While records are written (a chunk is closed).
    let mut w = PlogWriter::create(&p, &header(), false).unwrap();
    w.set_chunk_size(256);
    w.inject_write_failure_after(1000);
    let err = (0..10_000u64)
        .find_map(|i| w.record(i, 0, "p", "k").field("text", "x".repeat(40).as_str()).emit().err())
        .expect("the injected failure");
    assert!(matches!(err, PlogError::Io { op: "write", .. }), "{err}");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(!p.exists(), "the unfinishable plog was left behind");
    let e = w.record(1, 0, "p", "k").emit().unwrap_err();
    assert!(e.to_string().contains("removed"), "{e}");
    assert!(w.flush().is_err());
    assert!(w.finish().is_err());
    assert!(!p.exists());

    // While finishing (the trailer does not fit).
    let mut w = PlogWriter::create(&p, &header(), false).unwrap();
    w.record(1, 0, "p", "k").emit().unwrap();
    w.flush().unwrap();
    w.inject_write_failure_after(10);
    let e = w.finish().unwrap_err();
    assert!(matches!(e, PlogError::Io { .. }), "{e}");
    assert!(!p.exists());

    // A rerun is not blocked.
    let mut w = PlogWriter::create(&p, &header(), false).unwrap();
    w.record(1, 0, "p", "k").emit().unwrap();
    w.finish().unwrap();
    assert_eq!(read_all(&p).unwrap().len(), 1);
}

#[cfg(unix)]
#[test]
fn overwrite_replaces_a_symlink_never_its_target() {
    use std::os::unix::fs::symlink;
    let d = TempDir::new().unwrap();
    let target = d.path().join("precious.txt");
    fs::write(&target, b"precious").unwrap();
    let link = d.path().join("link.plog");
    symlink(&target, &link).unwrap();

    // Without overwrite, a symlink is an existing file: untouched.
    let e = PlogWriter::create(&link, &header(), false).err().unwrap();
    assert!(matches!(e, PlogError::AlreadyExists { .. }), "{e}");
    // With overwrite, the link itself is replaced by the plog.
    let mut w = PlogWriter::create(&link, &header(), true).unwrap();
    w.record(1, 2, "p", "k").emit().unwrap();
    w.finish().unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
    assert_eq!(read_all(&link).unwrap().len(), 1);

    // A dangling symlink: nothing is created at its target either way.
    let nowhere = d.path().join("nowhere.plog");
    let dangling = d.path().join("dangling.plog");
    symlink(&nowhere, &dangling).unwrap();
    let e = PlogWriter::create(&dangling, &header(), false).err().unwrap();
    assert!(matches!(e, PlogError::AlreadyExists { .. }), "{e}");
    assert!(!nowhere.exists());
    PlogWriter::create(&dangling, &header(), true).unwrap().finish().unwrap();
    assert!(!nowhere.exists());
    assert!(PlogReader::open(&dangling).unwrap().is_complete());
    assert!(temp_files(d.path()).is_empty());

    // A relative path in the current directory works too (the temporary file goes next to it).
    let e = PlogWriter::create("", &header(), true).err().unwrap();
    assert!(matches!(e, PlogError::Io { op: "create", .. }), "{e}");
}
