//! The `rrpack`/`rrunpack` binaries: success paths, error format and exit status.

use std::path::Path;
use std::process::{Command, Output};

use ailuro_rr::*;

fn run(bin: &str, args: &[&std::ffi::OsStr], cwd: &Path) -> Output {
    Command::new(bin).args(args).current_dir(cwd).output().unwrap()
}

fn make_recording(name: &Path) {
    let (snp, log) = recording_paths(name);
    let ram = ailuro_bus::GuestRam::new(0, 1 << 16).unwrap();
    let sh = SnapshotHeader {
        arch: Arch::I386,
        ram_base: 0,
        ram_size: 1 << 16,
        start_icount: 0,
        machine_config: vec![],
        creator: "cli test".into(),
    };
    let snapshot_hash = write_snapshot(&snp, &sh, b"", b"", b"", &ram, false).unwrap();
    let lh = LogHeader { arch: Arch::I386, start_icount: 0, snapshot_hash, creator: "cli test".into() };
    let mut w = LogWriter::create(&log, &lh, false).unwrap();
    w.append(&LogEntry { icount: 3, event: Event::IrqLine { line: 0, level: true } }).unwrap();
    w.finish(LogEnd { end_icount: 1234, reason: EndReason::EndRecord, final_state_hash: [0; 32] }).unwrap();
}

#[test]
fn rrpack_and_rrunpack_round_trip_and_report_errors() {
    let pack = env!("CARGO_BIN_EXE_rrpack");
    let unpack = env!("CARGO_BIN_EXE_rrunpack");
    let d = tempfile::TempDir::new().unwrap();
    make_recording(&d.path().join("demo"));

    let o = run(pack, &["demo".as_ref()], d.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1234 instructions"));

    let o = run(pack, &["demo".as_ref()], d.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("rrpack: error: ") && err.contains("already exists"), "{err}");
    assert!(run(pack, &["--force".as_ref(), "demo".as_ref()], d.path()).status.success());

    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = run(unpack, &["-C".as_ref(), out.as_os_str(), "demo.rr".as_ref()], d.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("demo-rr-snp").exists() && out.join("demo-rr-nondet.log").exists());
    let o = run(unpack, &["-C".as_ref(), out.as_os_str(), "demo.rr".as_ref()], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("rrunpack: error: "));

    let o = run(unpack, &["missing.rr".as_ref()], d.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("rrunpack: error: ") && err.contains("does not exist"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");

    let o = run(pack, &["--bogus".as_ref()], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("rrpack: error: "));
    assert!(run(unpack, &["--help".as_ref()], d.path()).status.success());
}

/// Run `bin` with standard output sent to `stdout` (standard error captured).
fn run_to(bin: &str, args: &[&std::ffi::OsStr], cwd: &Path, stdout: impl Into<std::process::Stdio>) -> Output {
    Command::new(bin).args(args).current_dir(cwd).stdout(stdout).stderr(std::process::Stdio::piped()).output().unwrap()
}

/// Standard output is a pipe nobody reads from any more (`rrdump NAME | true`).
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

fn dev_full() -> Option<std::fs::File> {
    std::fs::OpenOptions::new().write(true).open("/dev/full").ok()
}

fn assert_no_panic(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{what}: {err}");
}

#[test]
fn a_closed_or_full_standard_output_is_an_error_not_a_panic() {
    let dump = env!("CARGO_BIN_EXE_rrdump");
    let pack = env!("CARGO_BIN_EXE_rrpack");
    let unpack = env!("CARGO_BIN_EXE_rrunpack");
    let d = tempfile::TempDir::new().unwrap();
    make_recording(&d.path().join("demo"));

    // Closed pipe: quiet, status 1.
    for args in [&["demo"][..], &["--entries", "demo"][..]] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let o = run_to(dump, &args, d.path(), closed_pipe());
        assert_no_panic(&o, "rrdump | closed pipe");
        assert!(o.stderr.is_empty(), "a closed pipe is not worth a message: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = run_to(pack, &["demo".as_ref()], d.path(), closed_pipe());
    assert_no_panic(&o, "rrpack | closed pipe");
    assert!(d.path().join("demo.rr").exists(), "the archive is written before the message");
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = run_to(unpack, &["-C".as_ref(), out.as_os_str(), "demo.rr".as_ref()], d.path(), closed_pipe());
    assert_no_panic(&o, "rrunpack | closed pipe");

    // Full device: a message naming standard output, status 1.
    let Some(_) = dev_full() else {
        eprintln!("skipping the /dev/full part: no /dev/full");
        return;
    };
    let full_msg = |o: &Output, prog: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with(&format!("{prog}: cannot write to standard output: ")), "{prog}: {err}");
    };
    let o = run_to(dump, &["demo".as_ref()], d.path(), dev_full().unwrap());
    assert_no_panic(&o, "rrdump > /dev/full");
    full_msg(&o, "rrdump");
    let o = run_to(pack, &["--force".as_ref(), "demo".as_ref()], d.path(), dev_full().unwrap());
    assert_no_panic(&o, "rrpack > /dev/full");
    full_msg(&o, "rrpack");
    let o = run_to(
        unpack,
        &["-f".as_ref(), "-C".as_ref(), out.as_os_str(), "demo.rr".as_ref()],
        d.path(),
        dev_full().unwrap(),
    );
    assert_no_panic(&o, "rrunpack > /dev/full");
    full_msg(&o, "rrunpack");
    let o = run_to(unpack, &["--help".as_ref()], d.path(), dev_full().unwrap());
    assert_no_panic(&o, "rrunpack --help > /dev/full");

    // Standard error full as well: still status 1, no panic (there is no one left to tell).
    let o = Command::new(dump)
        .arg("missing")
        .current_dir(d.path())
        .stdout(dev_full().unwrap())
        .stderr(dev_full().unwrap())
        .status()
        .unwrap();
    assert_eq!(o.code(), Some(1));
}

#[test]
fn rrdump_warns_about_trailing_garbage_and_shows_the_end() {
    let dump = env!("CARGO_BIN_EXE_rrdump");
    let d = tempfile::TempDir::new().unwrap();
    make_recording(&d.path().join("demo"));
    let log = d.path().join("demo-rr-nondet.log");
    let mut b = std::fs::read(&log).unwrap();
    let len = b.len();
    b.extend_from_slice(&[0xee; 77]);
    std::fs::write(&log, b).unwrap();
    let o = run(dump, &["demo".as_ref()], d.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let want = format!(
        "rrdump: warning: demo-rr-nondet.log: 77 bytes of trailing garbage after the end-of-recording trailer at \
         offset {len} ignored"
    );
    assert!(err.contains(&want), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("end icount: 1234 (1234 instructions), reason: EndRecord"), "{out}");
    // A log that is not there: our error format.
    let o = run(dump, &["nothing".as_ref()], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("rrdump: error: "));
}

#[test]
fn rrunpack_refuses_damaged_members_and_incomplete_logs_unless_asked() {
    let pack = env!("CARGO_BIN_EXE_rrpack");
    let unpack = env!("CARGO_BIN_EXE_rrunpack");
    let d = tempfile::TempDir::new().unwrap();
    let name = d.path().join("cut");
    let (snp, log) = recording_paths(&name);
    let ram = ailuro_bus::GuestRam::new(0, 1 << 16).unwrap();
    let sh = SnapshotHeader {
        arch: Arch::I386,
        ram_base: 0,
        ram_size: 1 << 16,
        start_icount: 0,
        machine_config: vec![],
        creator: "cli test".into(),
    };
    let snapshot_hash = write_snapshot(&snp, &sh, b"", b"", b"", &ram, false).unwrap();
    let lh = LogHeader { arch: Arch::I386, start_icount: 0, snapshot_hash, creator: "cli test".into() };
    let mut w = LogWriter::create(&log, &lh, false).unwrap();
    w.append(&LogEntry { icount: 3, event: Event::IrqLine { line: 0, level: true } }).unwrap();
    drop(w); // no trailer: cut short
    assert!(run(pack, &["--allow-incomplete".as_ref(), "cut".as_ref()], d.path()).status.success());
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let o = run(unpack, &["-C".as_ref(), out.as_os_str(), "cut.rr".as_ref()], d.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("member cut-rr-nondet.log is not valid") && err.contains("--allow-incomplete"), "{err}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    let o = run(unpack, &["--allow-incomplete".as_ref(), "-C".as_ref(), out.as_os_str(), "cut.rr".as_ref()], d.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("(incomplete recording)"));
}
