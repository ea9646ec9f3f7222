//! The `ailuro-plog` binary: JSON lines from `dump` (parsed back), filters, `info`, error format
//! and exit status.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ailuro_plog::{PlogHeader, PlogWriter, Value};
use serde_json::{json, Value as Json};

const BIN: &str = env!("CARGO_BIN_EXE_ailuro-plog");

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN).args(args).current_dir(cwd).output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "status {:?}, stderr: {}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json_lines(o: &Output) -> Vec<Json> {
    stdout(o).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// 100 syscall records at icounts 0, 10, ..., 990 interleaved with 10 string hits, in small chunks.
fn make_plog(path: &Path, finish: bool) {
    let h = PlogHeader::new("cli test").with("recording", "demo").with("plugins", "syscalls,strings");
    let mut w = PlogWriter::create(path, &h, false).unwrap();
    w.set_chunk_size(512);
    for i in 0..100u64 {
        w.record(i * 10, 0xc100_0000 + i, "syscalls", "syscall")
            .asid(0x123_4000)
            .field("name", "openat")
            .field("fd", i)
            .field("ret", -2i64)
            .emit()
            .unwrap();
        if i % 10 == 0 {
            w.record(i * 10, 0x0804_8000, "strings", "hit")
                .field("data", b"GET /\x00\xff")
                .field("big", u64::MAX)
                .field("ratio", 0.25)
                .field("text", "tab\there \"quoted\" ✓")
                .field("args", &Value::List(vec![Value::U64(1), Value::Null, Value::Bool(false)]))
                .emit()
                .unwrap();
        }
    }
    if finish {
        w.finish().unwrap();
    }
}

#[test]
fn dump_prints_parseable_json_lines_and_filters() {
    let d = tempfile::TempDir::new().unwrap();
    make_plog(&d.path().join("demo.plog"), true);

    let all = json_lines(&run(&["dump", "demo.plog"], d.path()));
    assert_eq!(all.len(), 110);
    assert_eq!(
        all[0],
        json!({"icount": 0, "pc": "0xc1000000", "asid": "0x1234000", "plugin": "syscalls", "kind": "syscall",
               "name": "openat", "fd": 0, "ret": -2})
    );
    assert_eq!(
        all[1],
        json!({"icount": 0, "pc": "0x8048000", "plugin": "strings", "kind": "hit", "data": "474554202f00ff",
               "big": u64::MAX, "ratio": 0.25, "text": "tab\there \"quoted\" ✓", "args": [1, null, false]})
    );
    // Key order is the record's: columns first, then the fields as written.
    let line = stdout(&run(&["dump", "demo.plog"], d.path())).lines().nth(1).unwrap().to_owned();
    assert!(line.starts_with(r#"{"icount":0,"pc":"0x8048000","plugin":"strings","kind":"hit","data":"#), "{line}");
    assert!(line.contains(r#""big":18446744073709551615"#), "{line}");
    let icounts: Vec<u64> = all.iter().map(|j| j["icount"].as_u64().unwrap()).collect();
    assert!(icounts.windows(2).all(|w| w[0] <= w[1]));

    let hits = json_lines(&run(&["dump", "demo.plog", "--plugin", "strings"], d.path()));
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|j| j["kind"] == "hit"));
    let none = json_lines(&run(&["dump", "demo.plog", "--plugin", "strings", "--kind", "syscall"], d.path()));
    assert!(none.is_empty());
    let both = json_lines(&run(
        &["dump", "demo.plog", "--plugin", "strings", "--plugin", "syscalls", "--kind", "syscall"],
        d.path(),
    ));
    assert_eq!(both.len(), 100);

    let range = json_lines(&run(&["dump", "demo.plog", "--from", "95", "--to", "0xa0"], d.path()));
    let got: Vec<(u64, &str)> =
        range.iter().map(|j| (j["icount"].as_u64().unwrap(), j["plugin"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        [
            (100, "syscalls"),
            (100, "strings"),
            (110, "syscalls"),
            (120, "syscalls"),
            (130, "syscalls"),
            (140, "syscalls"),
            (150, "syscalls"),
            (160, "syscalls"),
        ]
    );
    assert!(json_lines(&run(&["dump", "demo.plog", "--from", "991"], d.path())).is_empty());
    assert_eq!(json_lines(&run(&["dump", "demo.plog", "--to", "0"], d.path())).len(), 2);
}

#[test]
fn info_describes_the_file() {
    let d = tempfile::TempDir::new().unwrap();
    make_plog(&d.path().join("demo.plog"), true);
    for args in [&["info", "demo.plog"][..], &["info", "--verify", "demo.plog"][..]] {
        let o = run(args, d.path());
        let text = stdout(&o);
        assert!(text.contains("version 2"), "{text}");
        assert!(text.contains("order:     as emitted"), "{text}");
        assert!(text.contains("cli test"), "{text}");
        assert!(text.contains("recording = demo") && text.contains("plugins = syscalls,strings"), "{text}");
        assert!(text.contains("status:    complete"), "{text}");
        assert!(text.contains("records:   110 in "), "{text}");
        assert!(text.contains("icount:    0 .. 990"), "{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|w| w.len() == 4 && (w[0] == "strings" || w[0] == "syscalls"))
            .collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert_eq!(&rows[0][..3], ["strings", "hit", "10"]);
        assert_eq!(&rows[1][..3], ["syscalls", "syscall", "100"]);
    }
}

#[test]
fn incomplete_file_is_dumped_with_a_warning() {
    let d = tempfile::TempDir::new().unwrap();
    make_plog(&d.path().join("cut.plog"), false);
    let o = run(&["dump", "cut.plog"], d.path());
    assert_eq!(json_lines(&o).len(), 110);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("ailuro-plog: warning: ") && err.contains("incomplete"), "{err}");
    let text = stdout(&run(&["info", "cut.plog"], d.path()));
    assert!(text.contains("INCOMPLETE") && text.contains("records:   110"), "{text}");
}

#[test]
fn bad_files_give_one_line_errors_and_status_1() {
    let d = tempfile::TempDir::new().unwrap();
    let p = d.path().join("demo.plog");
    make_plog(&p, true);
    let mut bytes = std::fs::read(&p).unwrap();
    // Damage the payload of a chunk in the middle: dump prints what comes before, then fails.
    let chunks = ailuro_plog::PlogReader::open(&p).unwrap().chunks().to_vec();
    assert!(chunks.len() > 4);
    bytes[chunks[chunks.len() / 2].offset as usize + 62] ^= 0x10;
    std::fs::write(d.path().join("bad.plog"), &bytes).unwrap();
    std::fs::write(d.path().join("text.plog"), "hello\n").unwrap();

    let check = |args: &[&str], needle: &str| {
        let o = run(args, d.path());
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("ailuro-plog: error: ") && err.contains(needle), "{args:?}: {err}");
        // Usage errors carry clap's usage text; errors about files are one line.
        if args[0] != "frobnicate" && !args.contains(&"--from") {
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        o
    };
    let o = check(&["dump", "bad.plog"], "chunk ");
    let printed = String::from_utf8_lossy(&o.stdout).lines().count();
    assert!(printed > 0 && printed < 110, "{printed}");
    check(&["info", "--verify", "bad.plog"], "chunk ");
    check(&["dump", "text.plog"], "not an Ailuro plugin log");
    check(&["info", "text.plog"], "not an Ailuro plugin log");
    check(&["dump", "missing.plog"], "does not exist");
    check(&["dump", "demo.plog", "--from", "ten"], "not an instruction count");
    check(&["frobnicate"], "");
    assert!(run(&["--help"], d.path()).status.success());
    let o = run(&[], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Usage: ailuro-plog"));
    assert!(run(&["dump", "--help"], d.path()).status.success());
}

fn make_big_plog(path: &Path) {
    let mut w = PlogWriter::create(path, &PlogHeader::new("pipe"), false).unwrap();
    for i in 0..50_000u64 {
        w.record(i, i, "p", "k").field("s", "some text to make the output large").emit().unwrap();
    }
    w.finish().unwrap();
}

/// Run with stdout a pipe whose read end is closed after `read` bytes; returns (status, stderr).
fn run_into_closed_pipe(args: &[&str], cwd: &Path, read: usize) -> (std::process::ExitStatus, String) {
    let mut child =
        Command::new(BIN).args(args).current_dir(cwd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; read];
    out.read_exact(&mut buf).unwrap();
    drop(out);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap(), err)
}

#[test]
fn closed_output_pipe_ends_quietly_with_status_1() {
    let d = tempfile::TempDir::new().unwrap();
    make_big_plog(&d.path().join("big.plog"));
    for args in [&["dump", "big.plog"][..], &["dump", "--sorted", "big.plog"][..]] {
        for read in [0, 100] {
            let (status, err) = run_into_closed_pipe(args, d.path(), read);
            assert_eq!(status.code(), Some(1), "{args:?}: {err}");
            assert!(err.is_empty(), "{args:?}: {err}");
        }
    }
}

#[test]
fn full_output_device_is_a_clear_error() {
    let d = tempfile::TempDir::new().unwrap();
    make_big_plog(&d.path().join("big.plog"));
    for args in [&["dump", "big.plog"][..], &["info", "big.plog"][..], &["--help"][..], &["--version"][..]] {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let o = Command::new(BIN).args(args).current_dir(d.path()).stdout(full).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("ailuro-plog: error: cannot write to standard output: "), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn trailing_bytes_give_a_warning_not_an_incomplete_file() {
    let d = tempfile::TempDir::new().unwrap();
    let p = d.path().join("demo.plog");
    make_plog(&p, true);
    let len = std::fs::metadata(&p).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::io::Write::write_all(&mut f, b"garbage appended later\n").unwrap();
    drop(f);
    let o = run(&["dump", "demo.plog"], d.path());
    assert_eq!(json_lines(&o).len(), 110);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("ailuro-plog: warning: ") && err.contains("23 bytes of trailing data"), "{err}");
    assert!(err.contains(&format!("offset {len}")) && !err.contains("incomplete"), "{err}");
    for args in [&["info", "demo.plog"][..], &["info", "--verify", "demo.plog"][..]] {
        let o = run(args, d.path());
        let text = stdout(&o);
        assert!(text.contains("status:    complete"), "{text}");
        assert!(text.contains(&format!("trailing:  23 bytes after the end of the plog (from offset {len})")), "{text}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("trailing data"));
    }
}

#[test]
fn out_of_order_records_dump_in_file_order_or_sorted() {
    let d = tempfile::TempDir::new().unwrap();
    let p = d.path().join("mixed.plog");
    let mut w = PlogWriter::create(&p, &PlogHeader::new("cli test"), false).unwrap();
    w.set_chunk_size(200);
    // Per slice of 50 instructions: "trace" during it, "console" after it with earlier icounts.
    for slice in 0..4u64 {
        for i in slice * 50..slice * 50 + 50 {
            w.record(i, i, "trace", "insn").emit().unwrap();
        }
        for i in [slice * 50 + 3, slice * 50 + 40] {
            w.record(i, i, "console", "byte").field("b", 65u64).emit().unwrap();
        }
    }
    w.finish().unwrap();
    let key = |j: &Json| (j["icount"].as_u64().unwrap(), j["plugin"].as_str().unwrap().to_owned());
    let file_order: Vec<_> = json_lines(&run(&["dump", "mixed.plog"], d.path())).iter().map(key).collect();
    assert_eq!(file_order.len(), 208);
    assert_eq!(file_order[50], (3, "console".to_owned()));
    let sorted: Vec<_> = json_lines(&run(&["dump", "--sorted", "mixed.plog"], d.path())).iter().map(key).collect();
    let mut want = file_order.clone();
    want.sort_by_key(|k| k.0);
    assert_eq!(sorted, want);
    assert_eq!(sorted[3..5], [(3, "trace".to_owned()), (3, "console".to_owned())]);
    // --from/--to select by icount, not by position.
    let range: Vec<_> =
        json_lines(&run(&["dump", "mixed.plog", "--from", "40", "--to", "53"], d.path())).iter().map(key).collect();
    let want_range: Vec<_> = file_order.iter().filter(|k| (40..=53).contains(&k.0)).cloned().collect();
    assert_eq!(range, want_range);
    assert!(range.contains(&(53, "console".to_owned())) && range.contains(&(40, "console".to_owned())));
    let text = stdout(&run(&["info", "mixed.plog"], d.path()));
    assert!(text.contains("icount:    0 .. 199") && text.contains("records:   208 in "), "{text}");
}
