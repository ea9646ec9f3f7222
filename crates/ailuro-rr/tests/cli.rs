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
